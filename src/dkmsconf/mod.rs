//! dkms.conf evaluation the way dkms does it: real bash, per kernel, with dkms's variables set and
//! the /etc/dkms override files sourced in dkms's order; values read back NUL-separated.

mod batch;
mod eval;
mod recipe;
mod scan;

pub use eval::evaluate;

use crate::root::Root;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The AUTOINSTALL directive, classified (docs/design.md, "AUTOINSTALL").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Autoinstall {
    /// `yes` (any case).
    Yes,
    /// unset, empty or `no`.
    No,
    /// Any other non-empty value: dkms <= 3.1.6 and Debian's common.postinst treat it as yes,
    /// dkms >= 3.1.7 refuses the conf (and so does `evaluate` when it is told that version). The
    /// raw value is kept; the planner decides with the dkms version.
    Other(String),
}

/// What the planner needs from one module's dkms.conf, evaluated for one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfValues {
    pub package_name: String,
    pub package_version: String,
    pub autoinstall: Autoinstall,
    pub build_depends: Vec<String>,
    pub build_exclusive_kernel: Option<String>,
    pub build_exclusive_arch: Option<String>,
    pub build_exclusive_config: Option<String>,
    pub build_exclusive_kernel_min: Option<String>,
    pub build_exclusive_kernel_max: Option<String>,
    pub built_module_name: Vec<String>,
    pub dest_module_location: Vec<String>,
    pub no_weak_modules: bool,
    /// `Some(reason)` when a BUILD_EXCLUSIVE_* directive excludes this kernel/arch/config
    /// ("BUILD_EXCLUSIVE_KERNEL ^5\. does not match 6.1.0-47-amd64"), decided the way dkms decides.
    pub excluded: Option<String>,
}

#[cfg(test)]
impl ConfValues {
    /// Test fixtures: only PACKAGE_NAME and PACKAGE_VERSION set, AUTOINSTALL=yes, nothing excluded.
    pub fn named(name: &str, version: &str) -> ConfValues {
        ConfValues {
            package_name: name.into(),
            package_version: version.into(),
            autoinstall: Autoinstall::Yes,
            build_depends: vec![],
            build_exclusive_kernel: None,
            build_exclusive_arch: None,
            build_exclusive_config: None,
            build_exclusive_kernel_min: None,
            build_exclusive_kernel_max: None,
            built_module_name: vec![],
            dest_module_location: vec![],
            no_weak_modules: false,
            excluded: None,
        }
    }
}

/// The kernel-dependent variables dkms sets before sourcing dkms.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelContext {
    pub kernelver: String,
    pub arch: String,
    /// Absolute path (inside the root) of the kernel's build directory: `kernel_source_dir`.
    pub kernel_source_dir: PathBuf,
    /// Absolute path of its `.config`: `kernel_config`.
    pub kernel_config: PathBuf,
}

/// One module to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub module: String,
    pub version: String,
    /// Absolute path of the dkms.conf to source.
    pub conf: PathBuf,
    /// Kernels to evaluate it for. When empty, it is evaluated once with `kernelver` set to the
    /// running kernel (or empty) so that name, version and AUTOINSTALL are still known.
    pub kernels: Vec<KernelContext>,
}

/// The result for one module: either it could not be evaluated at all (`Err(reason)`), or a
/// generic evaluation plus one per requested kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluated {
    /// Evaluation without a specific kernel (first requested kernel when the file is kernel-independent).
    pub generic: ConfValues,
    /// Per kernel; `Err(reason)` makes the module broken for that kernel only.
    pub per_kernel: BTreeMap<String, Result<ConfValues, String>>,
    /// True when the file (and its overrides) provably do not depend on kernel variables, so one
    /// evaluation served every kernel.
    pub kernel_independent: bool,
}

/// Paths and limits for evaluation.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the files below are read (they are host paths inside it).
    pub root: Root,
    /// Absolute paths dkms would see: dkms_tree, source_tree, install_tree.
    pub dkms_tree: PathBuf,
    pub source_tree: PathBuf,
    pub install_tree: PathBuf,
    /// Directory holding the M.conf, M-V.conf, M-V-K.conf, M-V-K-A.conf overrides.
    pub override_dir: PathBuf,
    /// The longest one evaluation (a module, or a module for one kernel) may take.
    pub timeout: Duration,
    /// How many bash processes may run at once.
    pub parallel: usize,
    /// Version of the dkms that will build ("3.0.10", as `Inventory::dkms_version`); None when
    /// unknown. Selects the version-specific behaviour listed at `Dialect`.
    pub dkms_version: Option<String>,
    /// The os-release file dkms would read for `running_distribution` (`etc/os-release` under
    /// the root); None, or a missing file, gives dkms's fallback "unknown".
    pub os_release: Option<PathBuf>,
}

impl Autoinstall {
    /// Classifies AUTOINSTALL as dkms holds it after reading the files (so with the stray `\r`
    /// of a CRLF file on dkms < 3.1.5).
    ///
    /// dkms 3.0.10 only asks whether the value is non-empty: measured with the real 3.0.10,
    /// `dkms autoinstall` built and installed a module for each of "no", "YES", "y", "1", "true"
    /// and " yes", and skipped it for "". dkms >= 3.1.7 accepts "" (no), `[Yy][Ee][Ss]` (yes) and
    /// `[Nn][Oo]` (no) and fails read_conf ("Unsupported AUTOINSTALL value") on anything else,
    /// "y", "1", "true" and " yes" included. Hence: `Yes` is "yes" in any case (yes for every
    /// dkms); `No` is unset, "" or "no" in any case (no on 3.1.7+; 3.0.10 autoinstalls "no", but
    /// the author's meaning is plain and dkms-trigger runs the builds itself); `Other` keeps any
    /// other value byte for byte, surrounding blanks included.
    pub fn classify(raw: &str) -> Autoinstall {
        if raw.is_empty() || raw.eq_ignore_ascii_case("no") {
            Autoinstall::No
        } else if raw.eq_ignore_ascii_case("yes") {
            Autoinstall::Yes
        } else {
            Autoinstall::Other(raw.to_string())
        }
    }
}

#[cfg(test)]
mod tests;
