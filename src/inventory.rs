//! The system as the planner sees it, read from the filesystem under the root: kernels (headers,
//! image, arch), DKMS modules and their on-disk state, weak-updates links, fingerprints.
//!
//! SKELETON: types are fixed (the planner is written against them); the helper fills in `scan`.

use crate::dkmsconf::{ConfValues, Evaluated};
use crate::fingerprint::Fingerprint;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// (module name, module version).
pub type ModKey = (String, String);

/// Everything the planner reads about the system. Built by `scan`; plain data so that planner
/// tests construct it directly.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub kernels: BTreeMap<String, Kernel>,
    /// `uname -r` of the running system when the root is `/` and that kernel is installed.
    pub running_kernel: Option<String>,
    /// The installed dkms's version ("3.0.10"), read from the dkms script; None if not found.
    pub dkms_version: Option<String>,
    pub modules: BTreeMap<ModKey, Module>,
    /// Things noticed while scanning that do not stop anything (a dangling build link...).
    pub notes: Vec<String>,
}

/// One installed kernel (a directory under lib/modules or usr/lib/modules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    pub version: String,
    /// Root-relative modules directory (`lib/modules/K` or `usr/lib/modules/K`).
    pub modules_dir: String,
    /// Absolute path of the usable headers (the `build` directory, resolved, containing a Makefile).
    pub headers: Option<PathBuf>,
    /// A kernel image exists (boot/vmlinuz-K or the modules directory's vmlinuz).
    pub image: bool,
    /// Architecture as dkms names it (`x86_64`), from the headers' .config or the machine.
    pub arch: String,
    /// Root-relative initramfs image for this kernel, when one exists.
    pub initramfs: Option<String>,
    /// Fingerprint of the kernel-side build inputs (headers, kbuild, compiler); empty without headers.
    pub print: Fingerprint,
}

/// One DKMS module version, known from its source (usr/src/M-V/dkms.conf), from dkms's tree
/// (var/lib/dkms/M/V), or both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Module {
    pub name: String,
    pub version: String,
    /// Root-relative source directory when it holds a dkms.conf.
    pub source: Option<String>,
    /// var/lib/dkms/M/V exists (dkms "added").
    pub registered: bool,
    /// Why this module cannot be used at all: dangling `source` link, untrusted source tree,
    /// dkms.conf that failed to evaluate... (dkms "broken" and our own refusals).
    pub broken: Option<String>,
    /// dkms state per (kernel, arch).
    pub builds: BTreeMap<(String, String), Build>,
    /// Kernels that have this module version through weak-updates links: NEW kernel -> OLD kernel
    /// whose build the links point at.
    pub weak: BTreeMap<String, String>,
    /// The evaluated dkms.conf (None when there is no source or it could not be evaluated).
    pub conf: Option<Evaluated>,
    /// Fingerprint of the module-side inputs per kernel (source tree, /etc/dkms overrides).
    pub prints: BTreeMap<String, Fingerprint>,
}

/// dkms's on-disk state of one (module, version, kernel, arch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Build {
    /// `installed` (built and `kernel-K-A` points at this version) or only `built`.
    pub installed: bool,
    /// mtime of the built module directory (ms since the epoch): when it was built.
    pub built_ms: u64,
}

impl Module {
    /// The evaluated values for kernel `k` (falls back to the generic evaluation).
    pub fn conf_for(&self, k: &str) -> Option<Result<&ConfValues, &str>> {
        let ev = self.conf.as_ref()?;
        Some(match ev.per_kernel.get(k) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(e.as_str()),
            None => Ok(&ev.generic),
        })
    }
}

impl Inventory {
    /// The installed version of module `name` on kernel `k` (any arch), if any.
    pub fn installed_version(&self, name: &str, k: &str) -> Option<&str> {
        self.modules
            .values()
            .filter(|m| m.name == name)
            .find(|m| m.builds.iter().any(|((kk, _), b)| kk == k && b.installed))
            .map(|m| m.version.as_str())
    }

    /// The fingerprint a build of `m` for `k` would have now.
    pub fn pair_print(&self, m: &Module, k: &str) -> Option<Fingerprint> {
        let kp = &self.kernels.get(k)?.print;
        let mp = m.prints.get(k)?;
        Some(kp.combine(mp))
    }
}

/// Reads the whole inventory under `root`: kernels, DKMS modules (evaluating their dkms.conf for
/// every kernel with headers), weak-updates links and fingerprints. Read-only; works as non-root.
pub fn scan(_root: &crate::root::Root, _config: &crate::config::Config) -> anyhow::Result<Inventory> {
    todo!("helper: inventory scan")
}
