//! Removals that cannot wait for the end of a transaction, because the files go away first: a
//! kernel's (or its headers') DKMS builds, and a module version's builds. Each also drops the
//! pending intents that would otherwise rebuild what is being removed.

use crate::backend::{Deadline, Dkms, Step, Target};
use crate::config::Config;
use crate::finalize;
use crate::intent::Intent;
use crate::paths;
use crate::root::Root;
use crate::runner::Cmd;
use crate::spool;
use crate::state::State;
use crate::ui;
use crate::validate::{check, What};
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// (module, version, arch) triples dkms has a build of for `kernel`, read from dkms's tree.
pub fn builds_on(root: &Root, kernel: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (m, v) in registered(root) {
        let kdir = root.path(format!("{}/{m}/{v}/{kernel}", paths::DKMS_TREE));
        if let Ok(rd) = std::fs::read_dir(&kdir) {
            for a in rd.flatten() {
                let arch = a.file_name().to_string_lossy().into_owned();
                if check(What::ModuleVersion, &arch).is_ok() && a.path().join("module").is_dir() {
                    out.push((m.clone(), v.clone(), arch));
                }
            }
        }
    }
    out
}

/// Every (module, version) directory in dkms's tree, names validated.
fn registered(root: &Root) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(mods) = std::fs::read_dir(root.path(paths::DKMS_TREE)) else { return out };
    for m in mods.flatten() {
        let name = m.file_name().to_string_lossy().into_owned();
        if check(What::ModuleName, &name).is_err() || !m.path().is_dir() {
            continue;
        }
        let Ok(vers) = std::fs::read_dir(m.path()) else { continue };
        for v in vers.flatten() {
            let ver = v.file_name().to_string_lossy().into_owned();
            // kernel-K-A links live beside the version directories.
            if check(What::ModuleVersion, &ver).is_ok() && !ver.starts_with("kernel-") && v.path().is_dir() {
                out.push((name.clone(), ver));
            }
        }
    }
    out
}

struct Ctx<'a> {
    root: &'a Root,
    config: &'a Config,
    dkms: Dkms,
    log: PathBuf,
}

impl<'a> Ctx<'a> {
    fn new(root: &'a Root, config: &'a Config, what: &str) -> Result<Ctx<'a>> {
        let dir = root.private_dir(paths::LOG_DIR)?;
        let log = dir.join(format!("{what}.log"));
        Ok(Ctx { root, config, dkms: Dkms { program: config.dkms.clone(), root: root.clone() }, log })
    }

    fn deadline(&self) -> Deadline {
        Deadline(Instant::now() + Duration::from_secs(self.config.job_timeout))
    }

    fn depmod(&self, kernel: &str) -> Option<String> {
        let moddir = paths::MODULE_DIRS
            .iter()
            .map(|d| self.root.path(format!("{d}/{kernel}")))
            .find(|p| p.join("modules.dep").exists())?;
        let mut c = Cmd::new(&self.config.depmod);
        if !self.root.is_host() {
            c = c.arg("-b").arg(self.root.dir());
        }
        match c.args(["-a", kernel]).timeout(Duration::from_secs(600)).run(&self.log) {
            Ok(r) if r.ok() => None,
            Ok(r) => Some(format!("depmod for {kernel} failed: {}", r.explain())),
            Err(e) => Some(format!("depmod for {kernel} ({}): {e:#}", moddir.display())),
        }
    }
}

/// `remove-kernel KVER`: unbuilds every DKMS module of `kernel` (registrations stay), drops the
/// kernel's pending intents and state, runs depmod if the kernel's modules remain. Problems are
/// warnings: a kernel's removal must not fail because of a module. Returns the number removed.
pub fn remove_kernel(root: &Root, config: &Config, kernel: &str) -> Result<usize> {
    let _lock = finalize::lock(root, false)?;
    let ctx = Ctx::new(root, config, "remove-kernel")?;
    let mut removed = 0;
    for (m, v, a) in builds_on(root, kernel) {
        let t = Target { module: &m, version: &v, kernel, arch: &a, headers: None };
        match ctx.dkms.unbuild(&t, &ctx.log, ctx.deadline())? {
            Step::Ok => removed += 1,
            other => ui::warn(format!("could not remove {m}/{v} for {kernel}: {other:?}, log: {}", ctx.log.display())),
        }
    }
    drop_intents(root, |i| narrow_without_kernel(i, kernel))?;
    let mut state = State::load(root, true)?;
    state.pairs.retain(|k, _| k.kernel != kernel);
    state.store(root)?;
    if removed > 0 {
        if let Some(w) = ctx.depmod(kernel) {
            ui::warn(w);
        }
    }
    Ok(removed)
}

/// `remove-module NAME/VERSION`: `dkms remove --all` of that version, its pending intents and
/// state dropped, then one depmod per kernel it was installed on.
pub fn remove_module(root: &Root, config: &Config, module: &str, version: &str) -> Result<usize> {
    let _lock = finalize::lock(root, false)?;
    let ctx = Ctx::new(root, config, "remove-module")?;
    let kernels: BTreeSet<String> = {
        let dir = root.path(format!("{}/{module}/{version}", paths::DKMS_TREE));
        std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|k| !matches!(k.as_str(), "build" | "source" | "tarball" | "driver_disk" | "rpm" | "deb"))
                    .filter(|k| check(What::KernelVersion, k).is_ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let registered = root.path(format!("{}/{module}/{version}", paths::DKMS_TREE)).exists();
    if registered {
        let c = ctx_remove_all(&ctx, module, version)?;
        if let Some(w) = c {
            ui::warn(w);
        }
    }
    drop_intents(root, |i| match i {
        Intent::ModuleChanged { module: m, version: v } | Intent::Deferred { module: m, version: v, .. }
            if m == module && v == version =>
        {
            None
        }
        Intent::Rebuild { kernels, modules } => {
            let left: Vec<_> = modules
                .iter()
                .filter(|s| !(s.name == module && s.version.as_deref() == Some(version)))
                .cloned()
                .collect();
            if left.is_empty() && !modules.is_empty() {
                None
            } else {
                Some(Intent::Rebuild { kernels: kernels.clone(), modules: left })
            }
        }
        other => Some(other.clone()),
    })?;
    let mut state = State::load(root, true)?;
    state.pairs.retain(|k, _| !(k.module == module && k.version == version));
    state.store(root)?;
    for k in &kernels {
        if let Some(w) = ctx.depmod(k) {
            ui::warn(w);
        }
    }
    Ok(kernels.len())
}

fn ctx_remove_all(ctx: &Ctx, module: &str, version: &str) -> Result<Option<String>> {
    let mut c = Cmd::new(&ctx.dkms.program).arg("remove");
    if !ctx.root.is_host() {
        c = c
            .arg(format!("--dkmstree={}", ctx.root.path(paths::DKMS_TREE).display()))
            .arg(format!("--sourcetree={}", ctx.root.path(paths::SOURCE_TREE).display()))
            .arg(format!("--installtree={}", ctx.root.path(paths::MODULE_DIRS[0]).display()));
    }
    let r = c
        .args(["-m", module, "-v", version, "--all", "--no-depmod"])
        .timeout(Duration::from_secs(ctx.config.job_timeout))
        .run(&ctx.log)?;
    Ok((!r.ok() && r.code != Some(3)).then(|| format!("could not remove {module}/{version}: {}", r.explain())))
}

/// The intent without `kernel`, or None when nothing of it remains.
fn narrow_without_kernel(i: &Intent, kernel: &str) -> Option<Intent> {
    match i {
        Intent::KernelAdded { kernel: k }
        | Intent::HeadersChanged { kernel: k, .. }
        | Intent::Deferred { kernel: k, .. }
            if k == kernel =>
        {
            None
        }
        // An empty kernel list means "all kernels": dropping the last named one drops the intent.
        Intent::ToolchainChanged { kernels } if kernels.iter().any(|k| k == kernel) => {
            let left: Vec<String> = kernels.iter().filter(|k| *k != kernel).cloned().collect();
            (!left.is_empty()).then_some(Intent::ToolchainChanged { kernels: left })
        }
        Intent::Rebuild { kernels, modules } if kernels.iter().any(|k| k == kernel) => {
            let left: Vec<String> = kernels.iter().filter(|k| *k != kernel).cloned().collect();
            (!left.is_empty()).then_some(Intent::Rebuild { kernels: left, modules: modules.clone() })
        }
        other => Some(other.clone()),
    }
}

/// Rewrites the pending intents through `f` (None drops one); unknown kinds are kept as they are.
fn drop_intents(root: &Root, f: impl Fn(&Intent) -> Option<Intent>) -> Result<()> {
    let mut locked = spool::lock(root)?;
    let mut s = locked.load()?;
    for w in std::mem::take(&mut locked.warnings) {
        ui::warn(w);
    }
    let mut changed = false;
    let mut replacements = Vec::new();
    s.entries.retain(|e| match e.intent() {
        Err(_) => true,
        Ok(i) => match f(&i) {
            Some(n) if n == i => true,
            Some(n) => {
                changed = true;
                replacements.push((n, e.sources.first().cloned(), e.last_ms));
                false
            }
            None => {
                changed = true;
                false
            }
        },
    });
    for (i, src, t) in replacements {
        s.add(&i.normalized(), src.as_deref(), t);
    }
    if changed {
        locked.store(&s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_drops_or_shrinks_kernel_lists() {
        let k = "6.1.0-47-amd64";
        assert_eq!(narrow_without_kernel(&Intent::KernelAdded { kernel: k.into() }, k), None);
        assert_eq!(narrow_without_kernel(&Intent::HeadersChanged { kernel: k.into(), force: true }, k), None);
        let other = Intent::KernelAdded { kernel: "x".into() };
        assert_eq!(narrow_without_kernel(&other, k), Some(other.clone()));
        assert_eq!(
            narrow_without_kernel(&Intent::ToolchainChanged { kernels: vec![k.into(), "b".into()] }, k),
            Some(Intent::ToolchainChanged { kernels: vec!["b".into()] })
        );
        assert_eq!(narrow_without_kernel(&Intent::ToolchainChanged { kernels: vec![k.into()] }, k), None);
        let all = Intent::ToolchainChanged { kernels: vec![] };
        assert_eq!(narrow_without_kernel(&all, k), Some(all.clone()), "all kernels stays all kernels");
        assert_eq!(narrow_without_kernel(&Intent::Rebuild { kernels: vec![k.into()], modules: vec![] }, k), None);
    }

    #[test]
    fn builds_on_reads_both_layouts_and_skips_hostile_names() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        let base = t.path().join("var/lib/dkms");
        std::fs::create_dir_all(base.join("hello/1.0/6.1.0-47-amd64/x86_64/module")).unwrap();
        std::fs::create_dir_all(base.join("hello/1.0/6.1.0-48-amd64/x86_64/module")).unwrap();
        std::fs::create_dir_all(base.join("other/2/6.1.0-47-amd64/x86_64")).unwrap(); // no module dir: not built
        std::fs::create_dir_all(base.join("bad name/1/6.1.0-47-amd64/x86_64/module")).unwrap();
        std::os::unix::fs::symlink("1.0/6.1.0-47-amd64/x86_64", base.join("hello/kernel-6.1.0-47-amd64-x86_64"))
            .unwrap();
        assert_eq!(builds_on(&r, "6.1.0-47-amd64"), vec![("hello".into(), "1.0".into(), "x86_64".into())]);
    }
}
