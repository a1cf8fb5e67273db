//! Removals that cannot wait for the end of a transaction, because the files go away first: a
//! kernel's DKMS builds (when the kernel goes: its headers going alone removes nothing), and a
//! module version's builds. Each also drops the pending intents that would otherwise rebuild what
//! is being removed. What dkms has is read by the inventory; every command runs through the
//! backend. Stop signals end a removal cleanly, and its wait for the lock is bounded.

use crate::backend::{Deadline, Depmod, Dkms, Step, Target};
use crate::config::Config;
use crate::executor::swap;
use crate::intent::Intent;
use crate::inventory;
use crate::lock::{FinalizeLock, Waiting};
use crate::paths;
use crate::root::Root;
use crate::runner::{self, Log};
use crate::spool;
use crate::statefile;
use crate::ui;
use anyhow::Result;
use std::collections::BTreeSet;
use std::time::Duration;

/// (module, version, arch) triples dkms has a build (complete or not) of for `kernel`.
pub fn builds_on(root: &Root, kernel: &str) -> Result<Vec<(String, String, String)>> {
    Ok(inventory::registrations(root)?
        .into_iter()
        .flat_map(|r| {
            r.present
                .iter()
                .filter(|(k, _)| k == kernel)
                .map(|(_, a)| (r.name.clone(), r.version.clone(), a.clone()))
                .collect::<Vec<_>>()
        })
        .collect())
}

struct Ctx<'a> {
    root: &'a Root,
    config: &'a Config,
    dkms: Dkms,
    depmod: Depmod,
    log: Log,
}

impl<'a> Ctx<'a> {
    fn new(root: &'a Root, config: &'a Config, what: &str) -> Result<Ctx<'a>> {
        let dir = root.private_dir(paths::LOG_DIR)?;
        // Every removal appends to the same log: rotated, so that it stays bounded.
        let log = Log::open_rotating(root, dir.join(format!("{what}.log")), REMOVAL_LOG_MAX)?;
        Ok(Ctx {
            root,
            config,
            dkms: Dkms::new(&config.dkms, root),
            depmod: Depmod { program: config.depmod.clone(), root: root.clone() },
            log,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.job_timeout)
    }

    /// depmod for a kernel whose modules stay (its modules.dep exists); a warning when it fails.
    fn depmod(&self, kernel: &str) {
        if !paths::MODULE_DIRS.iter().any(|d| self.root.exists(format!("{d}/{kernel}/modules.dep"))) {
            return;
        }
        if let Err(why) = self.depmod.run(kernel, &self.log, self.timeout()) {
            ui::warn(format!("{why} (for {kernel})"));
        }
    }
}

/// remove-kernel.log and remove-module.log become `.1` beyond this size.
pub const REMOVAL_LOG_MAX: u64 = 1 << 20;

/// Takes the finalize lock for a removal: stop signals end it cleanly, and the wait is bounded
/// (`lock_timeout`), since a package manager waits for it.
fn lock(root: &Root, config: &Config, what: &str) -> Result<FinalizeLock> {
    runner::stop_on_signals()?;
    FinalizeLock::take(root, Waiting::from(false, config.lock_timeout), what)
}

/// `remove-kernel KVER`: unbuilds every DKMS module of `kernel` (registrations stay), drops the
/// kernel's pending intents and state, runs depmod if the kernel's modules remain. Problems are
/// warnings: a kernel's removal must not fail because of a module. Returns the number removed.
pub fn remove_kernel(root: &Root, config: &Config, kernel: &str) -> Result<usize> {
    let lock = lock(root, config, "remove-kernel")?;
    let ctx = Ctx::new(root, config, "remove-kernel")?;
    let mut removed = 0;
    for (m, v, a) in builds_on(root, kernel)? {
        runner::check_stop()?;
        let t = Target { module: &m, version: &v, kernel, arch: &a, headers: None };
        match ctx.dkms.unbuild(&t, &ctx.log, Deadline::after(ctx.timeout()))? {
            Step::Ok => removed += 1,
            other => ui::warn(format!(
                "could not remove {m}/{v} for {kernel}: {}, log: {}",
                other.text(),
                ctx.log.path().display()
            )),
        }
    }
    swap::forget(root, None, Some(kernel));
    runner::check_stop()?;
    drop_intents(root, |i| narrow_without_kernel(i, kernel))?;
    let mut state = statefile::load(&lock)?;
    state.pairs.retain(|k, _| k.kernel != kernel);
    statefile::store(&lock, &state)?;
    if removed > 0 {
        ctx.depmod(kernel);
    }
    Ok(removed)
}

/// `remove-module NAME/VERSION`: `dkms remove --all` of that version, its pending intents and
/// state dropped, then one depmod per kernel it was built for.
pub fn remove_module(root: &Root, config: &Config, module: &str, version: &str) -> Result<usize> {
    let lock = lock(root, config, "remove-module")?;
    let ctx = Ctx::new(root, config, "remove-module")?;
    let registration = inventory::registrations(root)?.into_iter().find(|r| r.name == module && r.version == version);
    let kernels: BTreeSet<String> =
        registration.iter().flat_map(|r| r.present.iter().map(|(k, _)| k.clone())).collect();
    if registration.is_some() {
        if let Step::Failed(why) = ctx.dkms.remove_all(module, version, &ctx.log, Deadline::after(ctx.timeout()))? {
            ui::warn(format!("could not remove {module}/{version}: {why}"));
        }
    }
    swap::forget(root, Some((module, version)), None);
    // Its "reported unusable" note, if any (hook/debian.rs), goes with it.
    let _ = root.remove_file(root.path(paths::UNUSABLE_DIR).join(format!("{module}-{version}")));
    runner::check_stop()?;
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
    let mut state = statefile::load(&lock)?;
    state.pairs.retain(|k, _| !(k.module == module && k.version == version));
    statefile::store(&lock, &state)?;
    for k in &kernels {
        ctx.depmod(k);
    }
    Ok(kernels.len())
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
    spool::update(root, |s| {
        let mut replacements = Vec::new();
        s.entries.retain(|e| match e.intent() {
            Err(_) => true,
            Ok(i) => match f(&i) {
                Some(n) if n == i => true,
                Some(n) => {
                    replacements.push((n, e.sources.first().cloned(), e.last_ms));
                    false
                }
                None => false,
            },
        });
        for (i, src, t) in replacements {
            s.add(&i.normalized(), src.as_deref(), t);
        }
    })
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
        assert_eq!(builds_on(&r, "6.1.0-47-amd64").unwrap(), vec![("hello".into(), "1.0".into(), "x86_64".into())]);
    }
}
