//! A kernel's post-steps after its jobs: depmod once, then the initramfs when it holds a changed
//! module (or the kernel was installed in this transaction, so its image predates its modules).

use super::Context;
use crate::backend::initrd::{self, Tool};
use crate::plan::Job;
use crate::runner::Log;

/// What a kernel's post-steps did.
pub(super) struct PostDone {
    pub depmod: bool,
    pub initramfs: bool,
    /// The last thing that went wrong, for a warning.
    pub problem: Option<String>,
}

/// depmod for `kernel`, then its initramfs when `initramfs_allowed` and needed; `jobs` are the
/// kernel's build jobs.
pub(super) fn run(ctx: &Context, kernel: &str, initramfs_allowed: bool, jobs: &[&Job]) -> PostDone {
    let mut done = PostDone { depmod: false, initramfs: false, problem: None };
    let log = match Log::open(ctx.root(), ctx.run.post_log(kernel)) {
        Ok(l) => l,
        Err(e) => {
            done.problem = Some(format!("{e:#}"));
            return done;
        }
    };
    match ctx.depmod.run(kernel, &log, ctx.timeout()) {
        Ok(()) => done.depmod = true,
        Err(why) => done.problem = Some(why),
    }
    if !ctx.root().is_host() {
        log::info!(
            "not updating the initramfs of {kernel}: the root is not / (initramfs tools act on the running system)"
        );
    } else if initramfs_allowed {
        if let Some(tool) = needs_update(ctx, kernel, jobs, &log) {
            match initrd::update(tool, kernel).timeout(ctx.timeout()).run(&log) {
                Ok(r) if r.ok() => done.initramfs = true,
                Ok(r) => done.problem = Some(format!("initramfs update failed: {}", r.explain())),
                Err(e) => done.problem = Some(format!("{e:#}")),
            }
        }
    }
    done
}

/// The tool to update `kernel`'s initramfs with, when it must be updated.
fn needs_update(ctx: &Context, kernel: &str, jobs: &[&Job], log: &Log) -> Option<Tool> {
    let image = ctx.inventory.kernels.get(kernel).and_then(|k| k.initramfs.clone())?;
    let image = ctx.root().path(&image);
    let tool = initrd::tool(ctx.root(), ctx.config.initramfs)?;
    if ctx.added_kernels.contains(kernel) {
        return Some(tool);
    }
    let names: Vec<String> = jobs
        .iter()
        .flat_map(|j| {
            ctx.inventory
                .modules
                .get(&(j.module.clone(), j.version.clone()))
                .and_then(|m| m.conf_for(&j.kernel))
                .and_then(|c| c.ok())
                .map(|c| c.built_module_name.clone())
                .unwrap_or_else(|| vec![j.module.clone()])
        })
        .collect();
    let wanted = initrd::wanted(ctx.root(), tool);
    if names.iter().any(|n| wanted.contains(&n.replace('-', "_"))) {
        log.note(&format!("# a changed module is one the {tool:?} configuration asks for: updating the initramfs"));
        return Some(tool);
    }
    let listing_path = ctx.run.dir.join(format!(
        "initramfs-list-{}.txt",
        image.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let listing = Log::open(ctx.root(), listing_path).map_err(|e| format!("{e:#}"));
    match listing.and_then(|l| initrd::list(tool, &image, &l, ctx.timeout())) {
        Ok(text) if initrd::contains_module(&text, &names) => Some(tool),
        Ok(_) => {
            log::info!("initramfs of {kernel} contains none of the changed modules; not updated");
            None
        }
        // Listing failures count as "contains": updating once too often is the safe side.
        Err(why) => {
            log.note(&format!("# listing {} failed ({why}); updating the initramfs to be safe", image.display()));
            Some(tool)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Depmod, Dkms};
    use crate::config::{Config, InitramfsSetting};
    use crate::executor::RunLog;
    use crate::inventory::{Inventory, Kernel};
    use crate::lock::FinalizeLock;
    use crate::root::Root;

    #[test]
    fn a_failed_initramfs_listing_keeps_the_depmod_output_in_the_post_log() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let lock = FinalizeLock::take(&root, crate::lock::Waiting::NoWait, "test").unwrap();
        let run = RunLog { id: "r".into(), dir: root.private_dir("var/log/dkms-trigger").unwrap() };
        let k = "6.1.0-1-amd64";
        let mut inventory = Inventory::default();
        inventory.kernels.insert(
            k.into(),
            Kernel {
                version: k.into(),
                modules_dir: format!("lib/modules/{k}"),
                headers: None,
                image: true,
                arch: "x86_64".into(),
                // Not a readable image: the lister fails.
                initramfs: Some(format!("boot/initrd.img-{k}")),
                print: Default::default(),
            },
        );
        let config = Config { initramfs: InitramfsSetting::UpdateInitramfs, ..Config::default() };
        let ctx = Context {
            lock: &lock,
            config: &config,
            dkms: Dkms::new("true", &root),
            depmod: Depmod { program: "echo".into(), root: root.clone() },
            inventory: &inventory,
            run: &run,
            jobs: 1,
            cpus: 1,
            added_kernels: Default::default(),
            early: false,
        };
        let log = Log::open(&root, run.post_log(k)).unwrap();
        ctx.depmod.run(k, &log, ctx.timeout()).unwrap();
        assert_eq!(
            needs_update(&ctx, k, &[], &log),
            Some(Tool::UpdateInitramfs),
            "a failed listing updates to be safe"
        );
        let text = std::fs::read_to_string(run.post_log(k)).unwrap();
        assert!(text.contains(&format!("-b {} -a {k}\n", root.dir().display())), "depmod's output survives: {text}");
        assert!(text.contains("updating the initramfs to be safe"), "{text}");
    }
}
