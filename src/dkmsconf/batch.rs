//! Runs the evaluator program (eval.sh) once: the runner's clean environment, its own process group, input on
//! stdin, NUL-terminated records read from its fd 3 with a deadline that restarts at each record.
//!
//! Input, NUL-terminated strings: the dkms_conf_variables list, the CR-strip flag ("1" or ""),
//! the honour-build_exclude flag, six flags for read_conf's refusals (records checked, a record
//! required, records counted by highest index, array lengths checked, AUTOINSTALL yes/no,
//! NO_WEAK_MODULES and BUILD_DEPENDS_REBUILD yes/no), a private temporary directory, the os-release path (or ""),
//! current_kernel, parallel_jobs, dkms_tree, source_tree, install_tree, the number of kernels and
//! for each kernelver, arch, kernel_source_dir, kernel_config; then per module: job id, module,
//! module_version, independent flag, the number of base files and the files, then the contexts'
//! ids, kernel indices, numbers of override files and offsets of their first file (four tokens,
//! each a space-separated list), the number of override files and the files.
//!
//! Output records, each a list of tokens ended by the token `e`; the first byte of a token is its
//! tag: `m<job>` module started; `F<reason>` the module failed (dkms would refuse its shared
//! values); `b` the module's shared values follow; `r<ctx>` a context's result follows, made of
//! `s` (the shared values) or the values, then `x<reason>` per exclusion, or `f<reason>` when
//! dkms would refuse that context's values. Values are
//! `k<NAME>`, then `z<element 0>` when that is set, then one `v<value>` per element in index
//! order. Bash strings cannot hold NUL, so nothing a conf prints or assigns can forge a token.

use crate::root::File;
use crate::runner::Cmd;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::process::ChildStdout;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// The environment a conf sees, whatever the caller's.
pub(super) const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) const PROGRAM: &str = include_str!("eval.sh");

/// One record: its tokens without the final `e`.
pub(super) type Record = Vec<Vec<u8>>;

/// How a run ended.
pub(super) enum End {
    /// The program closed its output: it finished, or died (see `Run::status`).
    Eof,
    /// No record for `timeout`: the process group was killed.
    TimedOut,
    /// Bash could not be started.
    Spawn(String),
}

pub(super) struct Run {
    pub end: End,
    /// Exit status and the last line of stderr, for "died unexpectedly" reasons.
    pub status: String,
}

/// Runs the program on `input`, handing each record to `on_record` as it arrives.
pub(super) fn run(input: &[u8], timeout: Duration, on_record: &mut dyn FnMut(Record)) -> Run {
    let spawn_failed =
        |e: std::io::Error| Run { end: End::Spawn(format!("cannot run bash: {e}")), status: String::new() };
    let mut stderr = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => return spawn_failed(e),
    };
    // Its own group (spawn_piped), so that a timeout kills whatever the conf started too.
    let child = stderr.try_clone().and_then(|err| {
        Cmd::new("bash").arg("-c").arg(PROGRAM).arg("dkms").env("PATH", PATH).env("LC_ALL", "C").spawn_piped(err)
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return spawn_failed(e),
    };
    let group = Pid::from_raw(child.id() as i32);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    let end = std::thread::scope(|s| {
        // A write error only means bash is gone; its records (or their absence) tell the rest.
        s.spawn(move || drop(stdin.write_all(input)));
        s.spawn(move || read_records(stdout, tx));
        // Waits in short slices so that a finalize's stop signal ends the evaluation at once (its
        // results are not used then, so it ends as a timeout would).
        let mut since = std::time::Instant::now();
        let end = loop {
            match rx.recv_timeout(timeout.saturating_sub(since.elapsed()).min(Duration::from_millis(100))) {
                Ok(record) => {
                    on_record(record);
                    since = std::time::Instant::now();
                }
                Err(RecvTimeoutError::Timeout) if since.elapsed() >= timeout => break End::TimedOut,
                Err(RecvTimeoutError::Timeout) if crate::runner::stop_signal().is_some() => break End::TimedOut,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break End::Eof,
            }
        };
        // Before reaping bash, whose pid keeps the group id from being reused. Also clears
        // anything a conf left running in the background.
        let _ = killpg(group, Signal::SIGKILL);
        end
    });
    let status = match child.wait() {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    };
    let tail = last_line(&mut stderr);
    if !tail.is_empty() {
        log::debug!("dkms.conf evaluation stderr ends with: {tail}");
    }
    Run { end, status: if tail.is_empty() { status } else { format!("{status}; stderr: {tail}") } }
}

fn read_records(stdout: ChildStdout, tx: Sender<Record>) {
    let mut reader = BufReader::new(stdout);
    let mut record = Record::new();
    loop {
        let mut token = Vec::new();
        match reader.read_until(0, &mut token) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if token.pop() != Some(0) {
            // Cut short by the end of the stream: the record is incomplete.
            return;
        }
        if token == b"e" {
            if tx.send(std::mem::take(&mut record)).is_err() {
                return;
            }
        } else {
            record.push(token);
        }
    }
}

/// The last non-empty line of the (conf-written, so untrusted in size) stderr file.
fn last_line(file: &mut File) -> String {
    const TAIL: u64 = 4096;
    let mut buf = Vec::new();
    let len = file.seek(SeekFrom::End(0)).unwrap_or(0);
    if file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).is_err() || file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").chars().take(300).collect()
}
