//! Stopping cleanly, and what is left to stop: SIGINT, SIGTERM and SIGHUP ask a finalize or a
//! removal to stop (every command's wait loop sees it, kills its process group and reports the
//! command as interrupted), and the process groups of the commands running now, which the
//! finalize lock's holder records so that the next holder can wait for what a killed one left.

use crate::exit::{Code, Failure};
use crate::root::Root;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

/// The first stop signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(sig: nix::libc::c_int) {
    // Only an atomic store: all a signal handler may safely do here.
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP stop the running commands instead of killing this
/// process outright (which would leave them running and the work half recorded). System calls
/// are restarted, so a wait in progress goes on until the next check of `stop_signal`.
pub fn stop_on_signals() -> anyhow::Result<()> {
    let action = SigAction::new(SigHandler::Handler(note_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic.
        unsafe { sigaction(sig, &action) }.map_err(|e| anyhow::anyhow!("installing a {sig} handler: {e}"))?;
    }
    Ok(())
}

/// The stop signal received, if any.
pub fn stop_signal() -> Option<Signal> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// `Err` (exit code `Interrupted`) once a stop signal was received.
pub fn check_stop() -> anyhow::Result<()> {
    match stop_signal() {
        None => Ok(()),
        Some(sig) => Err(Failure::err(Code::Interrupted, format!("interrupted by {sig}"))),
    }
}

/// A running command's process group: its leader's pid and the leader's start time (clock ticks
/// since boot, /proc/PID/stat), which tells a reused pid from the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub pgid: i32,
    pub start: u64,
}

/// Called with every running group whenever one starts or ends.
type Watcher = Box<dyn Fn(&[Group]) + Send>;

static GROUPS: Mutex<Vec<Group>> = Mutex::new(Vec::new());
static WATCHER: Mutex<Option<Watcher>> = Mutex::new(None);

/// Installs (or removes, with None) the function told about the running groups.
pub fn watch_groups(watcher: Option<Watcher>) {
    *WATCHER.lock().unwrap_or_else(|e| e.into_inner()) = watcher;
}

pub(super) fn started(pgid: i32) {
    let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    groups.push(Group { pgid, start: start_time(pgid).unwrap_or(0) });
    tell(&groups);
}

pub(super) fn ended(pgid: i32) {
    let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    groups.retain(|g| g.pgid != pgid);
    tell(&groups);
}

// Called with GROUPS held, so that the watcher sees the changes in order.
fn tell(groups: &[Group]) {
    if let Some(w) = WATCHER.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        w(groups);
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat), if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = Root::host().read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the
    // last ')', which ends it; the state is field 3, so the start time is the 20th after it.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a group recorded by an earlier process still has a live member. Zombies do not count
/// (nothing reaps them where pid 1 does not). A leader pid alive with another start time was
/// reused: the old group is gone (a pid is not reused while it names a group).
pub fn still_running(g: &Group) -> bool {
    if start_time(g.pgid).is_some_and(|start| start != g.start) {
        return false;
    }
    let host = Root::host();
    host.list("/proc").unwrap_or_default().iter().filter_map(|n| n.to_str()?.parse::<i32>().ok()).any(|pid| {
        let Ok(stat) = host.read(format!("/proc/{pid}/stat")) else { return false };
        let Some(close) = stat.iter().rposition(|&b| b == b')') else { return false };
        let rest = String::from_utf8_lossy(&stat[close + 1..]).into_owned();
        let mut fields = rest.split_whitespace();
        // After the command name: state, ppid, pgrp.
        let (state, pgrp) = (fields.next(), fields.nth(1));
        state != Some("Z") && pgrp.and_then(|p| p.parse::<i32>().ok()) == Some(g.pgid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_identify_processes() {
        let me = std::process::id() as i32;
        let start = start_time(me).expect("our own stat");
        assert!(start > 0);
        assert_eq!(start_time(me), Some(start), "stable");
        assert_eq!(start_time(i32::MAX), None);
        // A made-up group is gone; our own group runs (we are in it); a reused pid is not it.
        assert!(!still_running(&Group { pgid: i32::MAX - 1, start: 1 }));
        let pgid = nix::unistd::getpgrp().as_raw();
        assert!(still_running(&Group { pgid, start: start_time(pgid).unwrap_or(0) }));
        if let Some(s) = start_time(pgid) {
            assert!(!still_running(&Group { pgid, start: s + 1 }), "another start time: the pid was reused");
        }
    }
}
