//! The finalize lock, ROOT/var/lib/dkms-trigger/finalize.lock: held by whoever changes DKMS builds
//! (a finalize, a removal) and the state. Its guard is the only way to store the state
//! (`State::store`), so "the caller holds the lock" is checked by the compiler, not remembered.

use crate::exit::{Code, Failure};
use crate::paths;
use crate::root::{File, Root};
use crate::ui;
use anyhow::{Context, Result};
use fs2::FileExt;
use std::time::{Duration, Instant};

/// Holds the finalize lock while alive.
pub struct FinalizeLock {
    root: Root,
    _file: File,
}

impl FinalizeLock {
    /// Takes the lock: fails with `Code::Busy` under `no_wait`, otherwise waits and says so every
    /// 30 s. The descriptor is deliberately inherited by the dkms processes it starts: if this
    /// process is killed, the lock stays held until the last orphaned build has ended, so a new
    /// finalizer can never run dkms on the same module at the same time as a leftover one.
    pub fn take(root: &Root, no_wait: bool) -> Result<FinalizeLock> {
        let dir = root.private_dir(paths::STATE_DIR)?;
        let path = dir.join(paths::FINALIZE_LOCK);
        let file = root.open_lock_file(&path)?;
        let started = Instant::now();
        let mut said = None::<Instant>;
        loop {
            match file.try_lock_exclusive() {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                    if no_wait {
                        return Err(Failure::err(
                            Code::Busy,
                            format!("another finalizer holds {} (--no-wait given)", path.display()),
                        ));
                    }
                    if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        ui::info(format!(
                            "waiting for another finalizer to finish ({}s so far)...",
                            started.elapsed().as_secs()
                        ));
                        said = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
            }
        }
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        use std::os::fd::AsRawFd;
        fcntl(file.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())).context("making the finalize lock inheritable")?;
        Ok(FinalizeLock { root: root.clone(), _file: file })
    }

    /// The root this lock protects.
    pub fn root(&self) -> &Root {
        &self.root
    }
}
