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
    /// Every code, in order: the man page's EXIT STATUS is generated from this list.
    pub const ALL: [Code; 8] = [
        Code::Ok,
        Code::Failure,
        Code::Usage,
        Code::Busy,
        Code::NotRoot,
        Code::Storage,
        Code::Unsafe,
        Code::Interrupted,
    ];

    /// The process exit status for this code.
    pub fn status(self) -> i32 {
        self as i32
    }

    /// What the code means, for people (the man page; README.md says the same at more length). A
    /// new code makes this match incomplete: add it to `ALL` as well.
    pub fn meaning(self) -> &'static str {
        match self {
            Code::Ok => "Success (warnings may have been printed).",
            Code::Failure => "Failure: a job whose failure policy is \"error\" failed, or an unexpected error.",
            Code::Usage => {
                "Bad usage, bad input (a refused name, a missing argument) or an invalid configuration file."
            }
            Code::Busy => {
                "Busy: another finalizer holds the lock and --no-wait was given, or lock_timeout passed \
                 while waiting for it."
            }
            Code::NotRoot => "Not permitted: a command that changes the system was run by a non-root user.",
            Code::Storage => {
                "Storage: the spool or state could not be written or read (disk full, read-only, I/O error)."
            }
            Code::Unsafe => {
                "Unsafe filesystem layout: a symlink where the tool writes, or a state directory or \
                 configuration file that root may not trust."
            }
            Code::Interrupted => {
                "Interrupted: SIGINT, SIGTERM or SIGHUP stopped a finalize or a removal; the pending \
                 intents are kept and the next finalize does the rest."
            }
        }
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
    fn all_lists_every_code_once_in_order() {
        // The codes are contiguous from 0, so a code missing from ALL leaves a gap or a short list.
        let statuses: Vec<i32> = Code::ALL.iter().map(|c| c.status()).collect();
        assert_eq!(statuses, (0..=Code::Interrupted.status()).collect::<Vec<_>>());
    }

    #[test]
    fn plain_error_is_failure() {
        assert_eq!(exit_code(&anyhow::anyhow!("x")), Code::Failure);
    }
}
