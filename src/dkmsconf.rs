//! dkms.conf evaluation the way dkms does it: real bash, per kernel, with dkms's variables set and
//! the /etc/dkms override files sourced in dkms's order; values read back NUL-separated.
//!
//! SKELETON: types are fixed (the planner and inventory use them); the helper fills in `evaluate`.

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
    /// dkms >= 3.1.7 rejects it. The raw value is kept; the planner decides with the dkms version.
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
    /// Absolute paths dkms would see: dkms_tree, source_tree, install_tree.
    pub dkms_tree: PathBuf,
    pub source_tree: PathBuf,
    pub install_tree: PathBuf,
    /// Directory holding the M.conf, M-V.conf, M-V-K.conf, M-V-K-A.conf overrides.
    pub override_dir: PathBuf,
    pub timeout: Duration,
    /// How many bash processes may run at once.
    pub parallel: usize,
}

/// Evaluates every request; results are in request order.
pub fn evaluate(_requests: &[Request], _opts: &Options) -> Vec<Result<Evaluated, String>> {
    todo!("helper: dkms.conf evaluation")
}
