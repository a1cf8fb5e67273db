//! Keeping the last good build (docs/design.md, "Keeping the last good build"): a rebuild is made
//! in a staging dkms tree of its own and swapped in only once it exists; a replacement by another
//! version reinstalls the old version when the new one does not install. Each swap is journalled
//! by its directory, `SWAP_DIR/M/V/K/A/`, and `recover` (run by the next finalize before it plans)
//! finishes or undoes one that was interrupted, so that a kernel always ends with the old or the
//! new build installed, never none.
//!
//! Layout of a swap directory: `tree/` is the staging dkms tree (`tree/M/V/source` links to the
//! same source; the new build lands in `tree/M/V/K/A`; the modules installed for the kernel appear
//! there too, their files as links, for dkms's BUILD_DEPENDS check); `old/` holds the previous build while the
//! new one is moved into dkms's tree; `replaces` names the version a replacement uninstalled.

use crate::backend::{Deadline, Dkms, Step, Target};
use crate::failpoint;
use crate::inventory;
use crate::paths;
use crate::root::Root;
use crate::runner::{Cmd, Log};
use crate::validate::{check, What};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One pair's swap directory.
pub struct Swap<'a> {
    root: &'a Root,
    dir: PathBuf,
}

impl<'a> Swap<'a> {
    /// Starts a swap for `t`: a fresh, empty swap directory (leftovers of an older attempt were
    /// settled by `recover` before this run planned).
    pub fn begin(root: &'a Root, t: &Target) -> Result<Swap<'a>> {
        let dir =
            root.private_dir(&format!("{}/{}/{}/{}/{}", paths::SWAP_DIR, t.module, t.version, t.kernel, t.arch))?;
        for name in root.list(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = dir.join(name);
            let gone =
                if root.lstat(&p).is_ok_and(|m| m.is_dir()) { root.remove_dir_all(&p) } else { root.remove_file(&p) };
            gone.with_context(|| format!("removing {}", p.display()))?;
        }
        root.create_private_dir(dir.join("tree")).with_context(|| format!("creating {}/tree", dir.display()))?;
        Ok(Swap { root, dir })
    }

    /// Shows dkms, in the staging tree, the other modules installed for the pair's kernel: dkms
    /// 3.1 and later refuse to build a module whose BUILD_DEPENDS are not installed *in the tree it
    /// builds in* (exit 13). dkms calls a module installed when `M/kernel-K-A` resolves to exactly
    /// `$dkms_tree/M/V/K/A` and that has a `module/` directory, so those are real directories here
    /// and only `module/` and `source` are links to the real tree's: read, never written (removing
    /// the swap removes the links, never what they point at). Modules not installed for the kernel
    /// are not shown, so dkms's own check still refuses a dependant of a missing dependency.
    pub fn show_installed_others(&self, real_tree: &Path, t: &Target) -> Result<()> {
        let names = match self.root.list(real_tree) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", real_tree.display())),
        };
        let kernel_link = format!("kernel-{}-{}", t.kernel, t.arch);
        for name in names {
            let Some(name) = name.to_str() else { continue };
            if name == t.module || check(What::ModuleName, name).is_err() {
                continue;
            }
            let Ok(target) = self.root.read_link(real_tree.join(name).join(&kernel_link)) else { continue };
            let Some(version) = installed_version(&target, t) else {
                log::debug!("staging tree: {name}: {} is not an installed build link", target.display());
                continue;
            };
            let real = real_tree.join(name).join(&version);
            if !self.root.is_dir(real.join(t.kernel).join(t.arch).join("module")) {
                log::debug!("staging tree: {name}/{version}: no module/ directory for {}", t.kernel);
                continue;
            }
            log::debug!("staging tree: showing {name}/{version} installed for {}", t.kernel);
            let staged = self.tree().join(name);
            let kdir = staged.join(&version).join(t.kernel).join(t.arch);
            let made = (|| -> std::io::Result<()> {
                for d in [&staged, &staged.join(&version), &staged.join(&version).join(t.kernel), &kdir] {
                    self.root.create_private_dir(d)?;
                }
                self.root.symlink(real.join(t.kernel).join(t.arch).join("module"), kdir.join("module"))?;
                self.root.symlink(real.join("source"), staged.join(&version).join("source"))?;
                self.root.symlink(format!("{version}/{}/{}", t.kernel, t.arch), staged.join(&kernel_link))
            })();
            made.with_context(|| format!("showing {name}/{version} in the staging tree"))?;
        }
        Ok(())
    }

    /// The staging dkms tree.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    fn old(&self) -> PathBuf {
        self.dir.join("old")
    }

    /// Notes that a replacement uninstalled `old_version` (so `recover` can reinstall it).
    pub fn replaces(&self, old_version: &str) -> Result<()> {
        self.root.write_atomic(&self.dir, "replaces", old_version.as_bytes())
    }

    /// The swap is over, one way or the other: its directory goes (and empty parents with it).
    pub fn finish(self) {
        if let Err(e) = self.root.remove_dir_all(&self.dir) {
            log::warn!("could not remove {}: {e}", self.dir.display());
        }
        prune_empty_parents(self.root, &self.dir);
    }
}

/// Rebuilds the installed (or built) pair `t`: the new build is made in the swap's staging tree
/// with `dkms build`; only when it exists is the old one uninstalled, moved aside, replaced by the
/// new one and the new one installed; should that install fail, the old build is put back and
/// installed again. `Ok(Step::Ok)` when the new build is installed; any other step says why the
/// previous build is still (or again) the installed one.
pub fn rebuild(dkms: &Dkms, t: &Target, make_jobs: u32, log: &Log, d: Deadline, changed: &mut bool) -> Result<Step> {
    let root = &dkms.root;
    let swap = Swap::begin(root, t)?;
    swap.show_installed_others(&dkms.tree(), t)?;
    let staged = dkms.staged(&swap.tree());
    let step = staged.add(t.module, t.version, log, d)?;
    if !step.is_ok() {
        swap.finish();
        return Ok(step);
    }
    let step = staged.build(t, make_jobs, log, d)?;
    if !step.is_ok() {
        swap.finish();
        return Ok(step);
    }
    // From here on the installed build changes: every point below is recoverable.
    *changed = true;
    failpoint::hit("swap-before-uninstall");
    let step = dkms.uninstall(t, log, d)?;
    if !step.is_ok() {
        // Whatever uninstall left, the old build is still in place: make sure it is installed.
        let _ = dkms.install(t, log, d);
        swap.finish();
        return Ok(step);
    }
    failpoint::hit("swap-after-uninstall");
    let real = dkms.build_dir(t);
    if root.lstat(&real).is_ok() {
        move_dir(root, &real, &swap.old(), log)?;
    }
    failpoint::hit("swap-after-old-moved");
    move_dir(root, &staged.build_dir(t), &real, log)?;
    failpoint::hit("swap-after-new-moved");
    let step = dkms.install(t, log, d)?;
    if step.is_ok() {
        swap.finish();
        return Ok(step);
    }
    // The new build does not install: the old one goes back.
    let _ = dkms.uninstall(t, log, d);
    root.remove_dir_all(&real).with_context(|| format!("removing {}", real.display()))?;
    if root.lstat(swap.old()).is_ok() {
        move_dir(root, &swap.old(), &real, log)?;
        let back = dkms.install(t, log, d)?;
        if !back.is_ok() {
            log.note(&format!("# reinstalling the previous build failed too: {}", back.text()));
        }
    }
    swap.finish();
    Ok(match step {
        Step::Transient(w) => Step::Transient(format!("{w}; the previous build was put back")),
        other => {
            Step::Failed(format!("the new build did not install ({}); the previous build was put back", other.text()))
        }
    })
}

/// The version a `kernel-K-A` link of dkms's tree names (`V/K/A`, relative as dkms writes it, or
/// absolute ending so), when it is a valid version and is for `t`'s kernel and architecture.
fn installed_version(link_target: &Path, t: &Target) -> Option<String> {
    let parts: Vec<&str> = link_target.iter().filter_map(|c| c.to_str()).collect();
    match parts.as_slice() {
        [.., v, k, a] if *k == t.kernel && *a == t.arch && check(What::ModuleVersion, v).is_ok() => Some(v.to_string()),
        _ => None,
    }
}

/// Moves a directory within the root: a rename, or a copy and a removal when `from` and `to` are
/// on different filesystems (var/lib/dkms-trigger and var/lib/dkms usually are not).
fn move_dir(root: &Root, from: &Path, to: &Path, log: &Log) -> Result<()> {
    match root.rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            let ran = Cmd::new("cp").arg("-a").arg(from).arg(to).run(log)?;
            anyhow::ensure!(ran.ok(), "copying {} to {}: {}", from.display(), to.display(), ran.explain());
            root.remove_dir_all(from).with_context(|| format!("removing {}", from.display()))
        }
        Err(e) => Err(e).with_context(|| format!("moving {} to {}", from.display(), to.display())),
    }
}

/// Removes the empty directories between `dir` and the swap directory itself.
fn prune_empty_parents(root: &Root, dir: &Path) {
    let top = root.path(paths::SWAP_DIR);
    for p in dir.ancestors().skip(1).take_while(|p| p.starts_with(&top) && *p != top) {
        if root.list(p).is_ok_and(|n| n.is_empty()) {
            let _ = root.remove_dir_all(p);
        } else {
            break;
        }
    }
}

/// A swap directory found by `pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
    dir: PathBuf,
}

/// The swaps an interrupted run left (names validated; anything else under SWAP_DIR is ignored).
pub fn pending(root: &Root) -> Vec<Pending> {
    let top = root.path(paths::SWAP_DIR);
    let names = |p: &Path, what: What| -> Vec<String> {
        root.list(p)
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| check(what, n).is_ok() && root.lstat(p.join(n)).is_ok_and(|m| m.is_dir()))
            .collect()
    };
    let mut out = Vec::new();
    for m in names(&top, What::ModuleName) {
        for v in names(&top.join(&m), What::ModuleVersion) {
            for k in names(&top.join(&m).join(&v), What::KernelVersion) {
                for a in names(&top.join(&m).join(&v).join(&k), What::ModuleVersion) {
                    let dir = top.join(&m).join(&v).join(&k).join(&a);
                    out.push(Pending { module: m.clone(), version: v.clone(), kernel: k.clone(), arch: a, dir });
                }
            }
        }
    }
    out
}

/// Finishes or undoes every swap an interrupted run left: when the module is not installed on the
/// kernel, the new build is installed if it made it into dkms's tree, else the previous one (put
/// back from the swap directory, or the version a replacement uninstalled). Returns the kernels
/// whose installed modules changed (they need depmod). Problems are warnings: the planner rebuilds
/// interrupted pairs anyway.
pub fn recover(dkms: &Dkms, log: &Log, timeout: std::time::Duration) -> Result<BTreeSet<String>> {
    let root = &dkms.root;
    let mut kernels = BTreeSet::new();
    let left = pending(root);
    if left.is_empty() {
        return Ok(kernels);
    }
    let registered = inventory::registrations(root)?;
    for p in left {
        let installed = registered
            .iter()
            .filter(|r| r.name == p.module)
            .any(|r| r.builds.get(&(p.kernel.clone(), p.arch.clone())).is_some_and(|b| b.installed));
        let swap = Swap { root, dir: p.dir.clone() };
        if installed {
            swap.finish();
            continue;
        }
        let t = Target { module: &p.module, version: &p.version, kernel: &p.kernel, arch: &p.arch, headers: None };
        let d = Deadline::after(timeout);
        let real = dkms.build_dir(&t);
        let staged = dkms.staged(&swap.tree()).build_dir(&t);
        let replaces =
            root.read_to_string(p.dir.join("replaces")).ok().filter(|v| check(What::ModuleVersion, v).is_ok());
        // Which version ends up installed, if any.
        let mut done: Option<&str> = None;
        if inventory::is_complete_build(root, &real) && dkms.install(&t, log, d)?.is_ok() {
            done = Some(&p.version);
        }
        if done.is_none() {
            if let Some(old) = &replaces {
                if dkms.install(&Target { version: old, ..t }, log, d)?.is_ok() {
                    done = Some(old);
                }
            } else {
                for from in [swap.old(), staged] {
                    if inventory::is_complete_build(root, &from) {
                        if root.lstat(&real).is_ok() {
                            root.remove_dir_all(&real).with_context(|| format!("removing {}", real.display()))?;
                        }
                        move_dir(root, &from, &real, log)?;
                        if dkms.install(&t, log, d)?.is_ok() {
                            done = Some(&p.version);
                        }
                        break;
                    }
                }
            }
        }
        if let Some(v) = done {
            crate::ui::info(format!(
                "finished an interrupted rebuild: {}/{v} is installed for {} again",
                p.module, p.kernel
            ));
            kernels.insert(p.kernel.clone());
        } else {
            crate::ui::warn(format!(
                "could not finish the interrupted rebuild of {}/{} for {}; log: {}",
                p.module,
                p.version,
                p.kernel,
                log.path().display()
            ));
        }
        swap.finish();
    }
    Ok(kernels)
}

/// Drops the swaps of `module`/`version` (when given) on `kernel` (when given): what a removal
/// takes away must not be reinstalled by `recover`.
pub fn forget(root: &Root, module: Option<(&str, &str)>, kernel: Option<&str>) {
    for p in pending(root) {
        let m_ok = module.is_none_or(|(m, v)| p.module == m && p.version == v);
        let k_ok = kernel.is_none_or(|k| p.kernel == k);
        if m_ok && k_ok {
            Swap { root, dir: p.dir }.finish();
        }
    }
}
