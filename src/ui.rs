//! User-facing output: progress lines on stdout (silenced by `-q`) and `warning:` lines on stderr.
//! Diagnostics go through `log` instead (`-v`).

use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences `info` (set by `-q`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// A progress or result line for people, on stdout.
pub fn info(msg: impl std::fmt::Display) {
    if !QUIET.load(Ordering::Relaxed) {
        println!("{msg}");
    }
}

/// A warning on stderr; never silenced, because warnings are how module failures are reported.
pub fn warn(msg: impl std::fmt::Display) {
    eprintln!("warning: {msg}");
}
