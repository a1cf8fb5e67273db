//! A command's output, copied from its pipe into the log with a bound: a build that prints without
//! end must not fill the disk. A log file takes output until it holds `LOG_LIMIT` bytes; past
//! that, only the last `TAIL` bytes of each command are kept (what explains a failure is at the
//! end), after a line saying how much was left out.

use crate::root::File;
use std::io::{ErrorKind, Read, Write};
use std::sync::mpsc::{self, Receiver};

/// Bytes of output a log file takes whole.
pub const LOG_LIMIT: u64 = 4 << 20;
/// Bytes kept from the end of a command's output once the log is full.
pub const TAIL: usize = 256 << 10;

/// Copies `pipe` into `log` on a thread until every writer has closed it. The receiver gets the
/// number of bytes left out.
pub(super) fn start(mut pipe: File, mut log: File) -> Receiver<u64> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut room = LOG_LIMIT.saturating_sub(log.metadata().map(|m| m.len()).unwrap_or(0));
        let mut tail: Vec<u8> = Vec::new();
        let mut dropped = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let direct = (room.min(n as u64)) as usize;
            if direct > 0 {
                let _ = log.write_all(&buf[..direct]);
                room -= direct as u64;
            }
            tail.extend_from_slice(&buf[direct..n]);
            if tail.len() > 2 * TAIL {
                let cut = tail.len() - TAIL;
                dropped += cut as u64;
                tail.drain(..cut);
            }
        }
        if tail.len() > TAIL {
            let cut = tail.len() - TAIL;
            dropped += cut as u64;
            tail.drain(..cut);
        }
        if dropped > 0 {
            let _ = writeln!(
                log,
                "\n# ... {dropped} bytes of output left out here: a log keeps {LOG_LIMIT} bytes, then the last {TAIL} of each command ..."
            );
        }
        let _ = log.write_all(&tail);
        let _ = tx.send(dropped);
    });
    rx
}
