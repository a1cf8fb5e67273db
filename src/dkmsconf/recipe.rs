//! What each module's evaluation sources, for which kernel: the dkms.conf and the /etc/dkms
//! override files that exist, in dkms's order (a `Recipe` per module, a `Pass` per kernel
//! context), the running kernel's context, and what differs between dkms versions (`Dialect`).

use super::{scan, KernelContext, Request};
use crate::paths;
use crate::root::Root;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What differs between dkms versions. An unknown version is taken as 3.0.10 (Debian 12), except
/// that BUILD_EXCLUSIVE_KERNEL_MIN/MAX are honoured and that nothing is refused but a missing
/// PACKAGE_NAME or PACKAGE_VERSION (refused by every version): a conf that some dkms accepts is
/// not refused on a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dialect {
    /// Known version: read_conf's checks of the module records apply (each record needs a
    /// BUILT_MODULE_NAME, or PACKAGE_NAME when it is the only one, neither it nor
    /// DEST_MODULE_NAME ending in .o or .ko, and a DEST_MODULE_LOCATION under /kernel, /updates
    /// or /extra).
    pub(super) records: bool,
    /// < 3.0.11: a conf without any module record (no DEST_MODULE_LOCATION) is refused; later
    /// versions only warn.
    pub(super) dest_required: bool,
    /// >= 3.2.2: records are counted up to the highest index set, not by number of elements.
    pub(super) sparse_records: bool,
    /// 3.1.7 and later: read_conf's own built_module_name, built_module_location,
    /// dest_module_name and dest_module_location (which a conf can set) must have one element
    /// per record.
    pub(super) length_check: bool,
    /// >= 3.1.7: AUTOINSTALL other than yes, no or "" (any case) is refused.
    pub(super) strict_autoinstall: bool,
    /// >= 3.0.11: safe_source carries BUILD_EXCLUSIVE_KERNEL_MIN/MAX (3.0.10 drops them).
    pub(super) min_max: bool,
    /// >= 3.1.5: safe_source strips one trailing CR from each value.
    pub(super) strip_cr: bool,
    /// >= 3.1.6: /etc/dkms/M--K.conf and M--K-A.conf are sourced last.
    pub(super) unversioned_overrides: bool,
    /// 3.2.0 and later: NO_WEAK_MODULES is yes/no (before, any non-empty value means yes), and
    /// any other value of it or of BUILD_DEPENDS_REBUILD is refused.
    pub(super) strict_no_weak: bool,
    /// < 3.3.0: a `build_exclude` assigned by the conf itself excludes (later dkms resets it).
    pub(super) conf_build_exclude: bool,
    /// < 3.0.11 (Debian's backport): BUILD_EXCLUSIVE_CONFIG entries are grep -E patterns.
    pub(super) config_ere: bool,
}

impl Dialect {
    pub(super) fn new(version: Option<&str>) -> Dialect {
        let Some(v) = version.and_then(parse_version) else {
            return Dialect {
                records: false,
                dest_required: false,
                sparse_records: false,
                length_check: false,
                strict_autoinstall: false,
                min_max: true,
                strip_cr: false,
                unversioned_overrides: false,
                strict_no_weak: false,
                conf_build_exclude: true,
                config_ere: true,
            };
        };
        Dialect {
            records: true,
            dest_required: v < [3, 0, 11],
            sparse_records: v >= [3, 2, 2],
            length_check: v >= [3, 1, 7],
            strict_autoinstall: v >= [3, 1, 7],
            min_max: v >= [3, 0, 11],
            strip_cr: v >= [3, 1, 5],
            unversioned_overrides: v >= [3, 1, 6],
            strict_no_weak: v >= [3, 2, 0],
            conf_build_exclude: v < [3, 3, 0],
            config_ere: v < [3, 0, 11],
        }
    }

    /// dkms's dkms_conf_variables: what safe_source carries from one file to the next.
    pub(super) fn variables(self) -> &'static str {
        if self.min_max {
            "PACKAGE_NAME PACKAGE_VERSION POST_ADD POST_BUILD POST_INSTALL POST_REMOVE PRE_BUILD \
             PRE_INSTALL BUILD_DEPENDS BUILD_EXCLUSIVE_ARCH BUILD_EXCLUSIVE_CONFIG \
             BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_KERNEL_MIN BUILD_EXCLUSIVE_KERNEL_MAX \
             build_exclude MAKE MAKE_MATCH PATCH PATCH_MATCH patch_array BUILT_MODULE_NAME \
             built_module_name BUILT_MODULE_LOCATION built_module_location DEST_MODULE_NAME \
             dest_module_name DEST_MODULE_LOCATION dest_module_location STRIP strip AUTOINSTALL \
             NO_WEAK_MODULES BUILD_DEPENDS_REBUILD OBSOLETE_BY CLEAN REMAKE_INITRD MODULES_CONF \
             MODULES_CONF_OBSOLETES MODULES_CONF_ALIAS_TYPE MODULES_CONF_OBSOLETE_ONLY"
        } else {
            "CLEAN PACKAGE_NAME PACKAGE_VERSION POST_ADD POST_BUILD POST_INSTALL POST_REMOVE \
             PRE_BUILD PRE_INSTALL BUILD_DEPENDS BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_ARCH \
             BUILD_EXCLUSIVE_CONFIG build_exclude OBSOLETE_BY MAKE MAKE_MATCH PATCH PATCH_MATCH \
             patch_array BUILT_MODULE_NAME built_module_name BUILT_MODULE_LOCATION \
             built_module_location DEST_MODULE_NAME dest_module_name DEST_MODULE_LOCATION \
             dest_module_location STRIP strip AUTOINSTALL NO_WEAK_MODULES SIGN_FILE \
             MOK_SIGNING_KEY MOK_CERTIFICATE REMAKE_INITRD MODULES_CONF MODULES_CONF_OBSOLETES \
             MODULES_CONF_ALIAS_TYPE MODULES_CONF_OBSOLETE_ONLY"
        }
    }
}

/// "3.0.10", "3.0.10-8+deb12u1", "3.4" -> [major, minor, patch].
pub(super) fn parse_version(v: &str) -> Option<[u32; 3]> {
    let numeric = v.split(|c: char| !c.is_ascii_digit() && c != '.').next()?;
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>());
    let mut out = [0; 3];
    out[0] = parts.next()?.ok()?;
    for slot in &mut out[1..] {
        *slot = parts.next().and_then(Result::ok).unwrap_or(0);
    }
    Some(out)
}

/// The generic context of a module that is kernel-dependent or has no kernels requested: what
/// dkms uses without -k, `uname -r` and `uname -m` (read from /proc: the running kernel is the
/// host's whatever the root), with headers under install_tree.
pub(super) fn running_kernel(install_tree: &Path) -> KernelContext {
    let proc = Root::host();
    let read = |p: &str| proc.read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let kernelver = read(paths::PROC_OSRELEASE);
    let mut arch = read(paths::PROC_ARCH);
    if arch.is_empty() {
        arch = std::env::consts::ARCH.to_string();
    }
    let kernel_source_dir =
        if kernelver.is_empty() { PathBuf::new() } else { install_tree.join(&kernelver).join("build") };
    KernelContext { kernel_config: kernel_source_dir.join(".config"), kernelver, arch, kernel_source_dir }
}

/// The names in the override directory, listed once instead of probed per kernel.
pub(super) struct OverrideDir {
    root: Root,
    dir: PathBuf,
    names: HashSet<OsString>,
}

impl OverrideDir {
    pub(super) fn read(root: &Root, dir: &Path) -> OverrideDir {
        let names = root.list(dir).map(|names| names.into_iter().collect()).unwrap_or_default();
        OverrideDir { root: root.clone(), dir: dir.to_path_buf(), names }
    }

    /// dkms's `[ -e /etc/dkms/NAME ]`: a dangling symlink does not count.
    fn existing(&self, name: &str) -> Option<PathBuf> {
        self.names.contains(OsStr::new(name)).then(|| self.dir.join(name)).filter(|p| self.root.exists(p))
    }
}

/// How one module is evaluated.
pub(super) struct Recipe {
    /// dkms.conf, then M.conf and M-V.conf when they exist.
    pub(super) base: Vec<PathBuf>,
    /// The base files provably do not read the kernel.
    pub(super) independent: bool,
    /// Context 0 is the generic evaluation, 1.. the requested kernels in order.
    pub(super) ctxs: Vec<Pass>,
}

pub(super) struct Pass {
    /// Index into the kernel table.
    pub(super) kernel: usize,
    /// The M-V-K.conf family of override files that exist for this kernel, in dkms's order.
    pub(super) files: Vec<PathBuf>,
}

pub(super) fn recipe(
    req: &Request,
    running: &KernelContext,
    dir: &OverrideDir,
    dialect: Dialect,
    kernels: &mut Vec<KernelContext>,
) -> Result<Recipe, String> {
    let nul = |s: &[u8]| s.contains(&0);
    if nul(req.module.as_bytes())
        || nul(req.version.as_bytes())
        || nul(req.conf.as_os_str().as_bytes())
        || req.kernels.iter().any(|k| {
            nul(k.kernelver.as_bytes())
                || nul(k.arch.as_bytes())
                || nul(k.kernel_source_dir.as_os_str().as_bytes())
                || nul(k.kernel_config.as_os_str().as_bytes())
        })
    {
        return Err(format!(
            "{}/{}: a name or path contains a NUL byte",
            req.module.escape_debug(),
            req.version.escape_debug()
        ));
    }
    let (m, v) = (&req.module, &req.version);
    let mut base = vec![req.conf.clone()];
    base.extend(dir.existing(&format!("{m}.conf")));
    base.extend(dir.existing(&format!("{m}-{v}.conf")));
    let mut independent = true;
    for file in &base {
        let text = dir.root.read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        independent &= scan::kernel_independent(&String::from_utf8_lossy(&text));
    }
    let generic = match req.kernels.first() {
        Some(first) if independent => first,
        _ => running,
    };
    let mut ctxs = vec![Pass { kernel: intern(kernels, generic), files: Vec::new() }];
    for k in &req.kernels {
        let (kv, a) = (&k.kernelver, &k.arch);
        let mut names = vec![format!("{m}-{v}-{kv}.conf"), format!("{m}-{v}-{kv}-{a}.conf")];
        if dialect.unversioned_overrides {
            names.extend([format!("{m}--{kv}.conf"), format!("{m}--{kv}-{a}.conf")]);
        }
        let files = names.iter().filter_map(|n| dir.existing(n)).collect();
        ctxs.push(Pass { kernel: intern(kernels, k), files });
    }
    Ok(Recipe { base, independent, ctxs })
}

fn intern(kernels: &mut Vec<KernelContext>, k: &KernelContext) -> usize {
    kernels.iter().position(|x| x == k).unwrap_or_else(|| {
        kernels.push(k.clone());
        kernels.len() - 1
    })
}
