//! The external programs, one file per command family: those that change the system, `dkms`
//! (build, install, unbuild, remove), `depmod`, and the initramfs tools (update-initramfs/dracut
//! and their listers lsinitramfs/lsinitrd; mkinitcpio is left to its own pacman hook); and those
//! only asked questions, `modinfo` (module signatures) and `mokutil` (Secure Boot). Each runs
//! through `runner::Cmd` and maps the program's answer to a result; parsers take text and are
//! tested on captured output.

pub mod depmod;
pub mod dkms;
pub mod initrd;
pub mod modinfo;
pub mod mokutil;

pub use depmod::Depmod;
pub use dkms::{classify_build, Dkms, Step, Target};

use std::time::{Duration, Instant};

/// A job's time budget, shared by its steps.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Deadline {
        Deadline(Instant::now() + budget)
    }

    /// What is left of the budget (at least a millisecond, so that a late step still runs and
    /// times out rather than never starting).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
    }
}
