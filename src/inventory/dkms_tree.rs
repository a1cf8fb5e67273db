//! DKMS's own tree (var/lib/dkms): registered module versions, their `source` links, and the
//! built/installed state per kernel and arch, read the same way from dkms 3.0.10's and 3.4's layouts.
//!
//! What differs between the two and how the scan copes:
//! - 3.0.10 builds in place (`M/V/K/A/log`, `.config` copied into it, then `module/`, then the .ko
//!   files): a killed build can leave `module/` empty. 3.0.10's own `is_module_built` then says "not
//!   built" (it wants every BUILT_MODULE_NAME), so an empty `module/` is not counted here either.
//! - 3.4 (since 3.1.7) builds into `M/V/K/.tmp_A_XXXXXX` and renames it to `A`: `module/` appears
//!   complete or not at all, and a killed build leaves the temp directory (removed by `dkms remove`),
//!   which is noted and skipped. 3.4 also copies `Module.symvers` into `module/` and may write
//!   `.dep_*` files (BUILD_DEPENDS_REBUILD) next to it: only .ko files count as modules.
//! - `source` must be a symlink to a directory for 3.4 (`is_module_added`); 3.0.10 also accepts a
//!   plain directory. A plain directory is reported broken (3.4's `is_module_broken` when
//!   usr/src/M-V exists), which is never wrong for either: nothing can be built from it safely.
//! - The make.log of a successful build is `M/V/K/A/log/make.log` in both; a failed build leaves
//!   `M/V/build/make.log` in both.

use super::resolve::{relative, resolve, resolve_host};
use super::Build;
use crate::paths::{DKMS_TREE, SOURCE_TREE};
use crate::root::{FileType, Root};
use crate::validate::{check, shown, What};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// dkms's archive of replaced in-tree modules, kept beside the version directories.
const ORIGINAL_MODULE: &str = "original_module";
/// Compressed module suffixes dkms produces, besides plain `.ko`.
const KO_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// One var/lib/dkms/M/V.
pub(crate) struct Registered {
    pub name: String,
    pub version: String,
    /// The resolved source directory (host path), or why the module is broken.
    pub source: Result<PathBuf, String>,
    pub builds: BTreeMap<(String, String), Build>,
    /// File names of the modules of each build (`foo.ko`, `foo.ko.xz`).
    pub kos: BTreeMap<(String, String), Vec<String>>,
    /// Every (kernel, arch) with a `module` directory, complete or not: what a removal must undo.
    pub present: BTreeSet<(String, String)>,
}

/// The module name of a module file (`foo` for `foo.ko.zst`), None for other files.
pub(crate) fn ko_stem(file_name: &str) -> Option<&str> {
    KO_SUFFIXES.iter().find_map(|s| file_name.strip_suffix(s)).filter(|stem| !stem.is_empty())
}

/// The module files (`foo.ko`, `foo.ko.xz`) of the build directory `base` (`M/V/K/A`, a host path).
pub(crate) fn module_files(root: &Root, base: &Path) -> Vec<String> {
    entries(root, &base.join("module"))
        .unwrap_or_default()
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| ko_stem(f).is_some())
        .collect()
}

/// Every registered module version.
pub(crate) fn scan(root: &Root, notes: &mut Vec<String>) -> anyhow::Result<Vec<Registered>> {
    scan_kernels(root, None, notes)
}

/// Every registered module version, with its builds for `only` (all kernels when None): looking
/// at one kernel reads a few entries per module instead of every build.
pub(crate) fn scan_kernels(
    root: &Root,
    only: Option<&str>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Registered>> {
    let Ok(tree) = resolve(root, Path::new(DKMS_TREE)) else { return Ok(Vec::new()) };
    if !root.is_dir(&tree) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    // mok.key, mok.pub and other files live here too.
    for m in subdirs(&entries(root, &tree).with_context(|| format!("reading {}", tree.display()))?) {
        let mdir = tree.join(&m);
        if let Err(e) = check(What::ModuleName, &m) {
            notes.push(format!("{DKMS_TREE}/{}: skipped: {e}", shown(&m)));
            continue;
        }
        let in_mdir = match entries(root, &mdir) {
            Ok(e) => e,
            Err(e) => {
                notes.push(format!("{DKMS_TREE}/{m}: skipped: {e}"));
                continue;
            }
        };
        let prefix = only.map_or_else(|| "kernel-".to_string(), |k| format!("kernel-{k}-"));
        let links: BTreeMap<String, PathBuf> = in_mdir
            .iter()
            .filter(|(n, t)| t.is_symlink() && n.starts_with(&prefix))
            .filter_map(|(n, _)| root.read_link(mdir.join(n)).ok().map(|t| (n.clone(), t)))
            .collect();
        for v in subdirs(&in_mdir) {
            let vdir = mdir.join(&v);
            if v == ORIGINAL_MODULE {
                continue;
            }
            if let Err(e) = check(What::ModuleVersion, &v) {
                notes.push(format!("{DKMS_TREE}/{m}/{}: skipped: {e}", shown(&v)));
                continue;
            }
            let source = source_of(root, &vdir, &m, &v);
            let mut reg = Registered {
                name: m.clone(),
                version: v.clone(),
                source,
                builds: BTreeMap::new(),
                kos: BTreeMap::new(),
                present: BTreeSet::new(),
            };
            builds(root, &mdir, &links, &vdir, only, &mut reg, notes);
            out.push(reg);
        }
    }
    Ok(out)
}

/// The entries of a directory with their types, sorted by name; the types come from the directory
/// itself (no stat per entry), which matters with thousands of builds.
fn entries(root: &Root, dir: &Path) -> std::io::Result<Vec<(String, FileType)>> {
    Ok(root.list_typed(dir)?.into_iter().map(|(n, t)| (n.to_string_lossy().into_owned(), t)).collect())
}

/// The real (not symlinked) directories among `entries`.
fn subdirs(entries: &[(String, FileType)]) -> impl Iterator<Item = String> + '_ {
    entries.iter().filter(|(_, t)| t.is_dir()).map(|(n, _)| n.clone())
}

/// dkms's `is_module_added` / `is_module_broken`, with the reason when broken.
fn source_of(root: &Root, vdir: &Path, m: &str, v: &str) -> Result<PathBuf, String> {
    let link = vdir.join("source");
    let shown_link = relative(root, &link);
    match root.lstat(&link) {
        Ok(md) if md.file_type().is_symlink() => match resolve_host(root, &link) {
            Ok(dir) if root.is_dir(&dir) => Ok(dir),
            Ok(other) => Err(format!("{shown_link} leads to {}, not a directory", relative(root, &other))),
            Err(e) => Err(format!("{shown_link} dangles: {e}")),
        },
        Ok(_) => Err(format!("{shown_link} is not a symlink (dkms 3.0.10 accepts that, 3.4 does not)")),
        Err(_) => {
            let src = format!("{SOURCE_TREE}/{m}-{v}");
            if resolve(root, Path::new(&src)).is_ok() {
                Err(format!("{shown_link} is missing although {src} exists"))
            } else {
                Err(format!("{shown_link} is missing and there is no {src}"))
            }
        }
    }
}

/// dkms's `_is_module_installed`: `M/kernel-K-A` resolves to `M/V/K/A` (`base`, whose components
/// are real directories). dkms writes the link as `V/K/A`, which is compared as written; anything
/// else is resolved.
fn is_installed(root: &Root, links: &BTreeMap<String, PathBuf>, mdir: &Path, base: &Path, vka: [&str; 3]) -> bool {
    let [v, k, a] = vka;
    let name = format!("kernel-{k}-{a}");
    match links.get(&name) {
        Some(target) if target.components().map(|c| c.as_os_str()).eq([v, k, a].map(std::ffi::OsStr::new)) => true,
        Some(_) => resolve_host(root, &mdir.join(&name)).is_ok_and(|p| p == base),
        None => false,
    }
}

/// Fills the builds of one module version: `M/V/K/A/module` holding module files is built,
/// and installed when `M/kernel-K-A` resolves to `M/V/K/A`.
fn builds(
    root: &Root,
    mdir: &Path,
    links: &BTreeMap<String, PathBuf>,
    vdir: &Path,
    only: Option<&str>,
    reg: &mut Registered,
    notes: &mut Vec<String>,
) {
    let (m, v) = (&reg.name, &reg.version);
    let kernels: Vec<String> = match only {
        Some(k) => root.lstat(vdir.join(k)).is_ok_and(|md| md.is_dir()).then(|| k.to_string()).into_iter().collect(),
        None => subdirs(&entries(root, vdir).unwrap_or_default()).collect(),
    };
    for k in kernels {
        let kdir = vdir.join(&k);
        // `build` is the shared scratch directory; `source` may be a plain directory (3.0.10).
        if k == "build" || k == "source" {
            continue;
        }
        if let Err(e) = check(What::KernelVersion, &k) {
            notes.push(format!("{DKMS_TREE}/{m}/{v}/{}: skipped: {e}", shown(&k)));
            continue;
        }
        for a in subdirs(&entries(root, &kdir).unwrap_or_default()) {
            let base = kdir.join(&a);
            if a.starts_with(".tmp_") {
                notes.push(format!(
                    "{}: left by an interrupted dkms >= 3.1.7 build (`dkms remove` deletes it); ignored",
                    relative(root, &base)
                ));
                continue;
            }
            if a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                notes.push(format!("{DKMS_TREE}/{m}/{v}/{k}/{}: skipped: not an architecture name", shown(&a)));
                continue;
            }
            let module = base.join("module");
            let Ok(md) = root.lstat(&module) else { continue };
            if !md.is_dir() {
                continue;
            }
            reg.present.insert((k.clone(), a.clone()));
            let kos = module_files(root, &base);
            if kos.is_empty() {
                notes.push(format!(
                    "{}: no module files (interrupted dkms 3.0.10 build?); not counted as built",
                    relative(root, &module)
                ));
                continue;
            }
            let built_ms =
                md.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as u64);
            let installed = is_installed(root, links, mdir, &base, [v, &k, &a]);
            reg.builds.insert((k.clone(), a.clone()), Build { installed, built_ms });
            reg.kos.insert((k.clone(), a), kos);
        }
    }
}
