//! Exit codes and the error kind that selects them: the one place where a failure becomes a number.

use std::fmt;

/// The documented exit codes of `dkms-trigger` (README.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 0: everything asked for was done (warnings may have been printed).
    Ok = 0,
    /// 1: a failure: a job whose failure policy is "error" failed, or an unexpected error.
    Failure = 1,
    /// 2: bad usage, bad input (a hostile kernel version, module name...) or an invalid configuration.
    Usage = 2,
    /// 3: another finalizer holds the lock and `--no-wait` was given.
    Busy = 3,
    /// 4: a command that changes the system was run by a non-root user.
    NotRoot = 4,
    /// 5: the spool or state could not be read or written (disk full, I/O error, newer format).
    Storage = 5,
    /// 6: an unsafe filesystem layout: a symlink or foreign owner where the tool must write.
    Unsafe = 6,
    /// 7: stopped by SIGINT, SIGTERM or SIGHUP: the running jobs were stopped and recorded as
    /// interrupted, the pending intents kept; the next finalize does the rest.
    Interrupted = 7,
}

impl Code {
    /// The process exit status for this code.
    pub fn status(self) -> i32 {
        self as i32
    }
}

/// An error that carries the exit code it must produce. Lower layers attach it as the root cause
/// (`Err(Failure::err(Code::Usage, ...))?`); `exit_code` finds it anywhere in an anyhow chain.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn err(code: Code, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Failure { code, message: message.into() })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code an error maps to: the innermost `Failure` in the chain, else a storage error for
/// an I/O error that says the disk is full or read-only, else 1.
pub fn exit_code(err: &anyhow::Error) -> Code {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
    }
    for cause in err.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use nix::errno::Errno;
            use std::io::ErrorKind;
            // Wrapped errors (tempfile's) keep the kind but lose the errno, so look at both.
            let errno_says = io
                .raw_os_error()
                .is_some_and(|n| matches!(Errno::from_raw(n), Errno::ENOSPC | Errno::EROFS | Errno::EDQUOT));
            if errno_says
                || matches!(
                    io.kind(),
                    ErrorKind::StorageFull | ErrorKind::ReadOnlyFilesystem | ErrorKind::QuotaExceeded
                )
            {
                return Code::Storage;
            }
        }
    }
    Code::Failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_code_survives_context() {
        let e = Failure::err(Code::Busy, "busy").context("while finalizing");
        assert_eq!(format!("{e:#}"), "while finalizing: busy");
        assert_eq!(exit_code(&e), Code::Busy);
    }

    #[test]
    fn enospc_is_storage() {
        let io = std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32);
        let e = anyhow::Error::new(io).context("writing spool");
        assert_eq!(exit_code(&e), Code::Storage);
    }

    #[test]
    fn wrapped_enospc_is_storage() {
        let inner = std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32);
        let wrapped = std::io::Error::new(inner.kind(), "at path x");
        assert_eq!(exit_code(&anyhow::Error::new(wrapped)), Code::Storage);
    }

    #[test]
    fn plain_error_is_failure() {
        assert_eq!(exit_code(&anyhow::anyhow!("x")), Code::Failure);
    }
}
