//! User-facing output: progress lines on stdout (silenced by `-q`) and `warning:` lines on stderr.
//! Every warning of the tool goes through `warn`, wherever it is noticed; diagnostics go through
//! `log` instead (`-v`).

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
    let text = msg.to_string();
    #[cfg(test)]
    CAPTURED.with(|c| c.borrow_mut().push(text.clone()));
    eprintln!("warning: {text}");
}

#[cfg(test)]
thread_local! {
    static CAPTURED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The warnings this test thread printed since the last call.
#[cfg(test)]
pub fn take_warnings() -> Vec<String> {
    CAPTURED.with(|c| std::mem::take(&mut *c.borrow_mut()))
}
