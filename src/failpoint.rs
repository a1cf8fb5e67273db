//! Failpoints for crash tests: `DKMS_TRIGGER_FAILPOINTS=name,name` makes the process kill itself
//! with SIGKILL when it reaches one of those points, so that tests can stop a finalize exactly
//! between two steps of a swap. Without the variable (every real run) a failpoint does nothing.

/// Dies here if the environment names this point.
pub fn hit(name: &str) {
    let Some(list) = std::env::var_os("DKMS_TRIGGER_FAILPOINTS") else { return };
    if list.to_string_lossy().split(',').any(|p| p.trim() == name) {
        log::warn!("failpoint {name}: killing this process");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
