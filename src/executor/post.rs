//! A kernel's post-steps after its jobs: depmod once, then the initramfs when it holds a changed
//! module (or the kernel was installed in this transaction, so its image predates its modules).

use super::Context;
use crate::backend::initramfs::{self, Tool};
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
    if initramfs_allowed {
        if let Some(tool) = needs_update(ctx, kernel, jobs, &log) {
            match initramfs::update(tool, kernel).timeout(ctx.timeout()).run(&log) {
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
    if !ctx.root().is_host() {
        log::info!(
            "not updating the initramfs of {kernel}: the root is not / (initramfs tools act on the running system)"
        );
        return None;
    }
    let image = ctx.inventory.kernels.get(kernel).and_then(|k| k.initramfs.clone())?;
    let image = ctx.root().path(&image);
    let tool = initramfs::tool(ctx.root(), ctx.config.initramfs)?;
    if ctx.added_kernels.contains(kernel) {
        return Some(tool);
    }
    let listing_path = ctx.run.dir.join(format!(
        "initramfs-list-{}.txt",
        image.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let listing = Log::open(ctx.root(), listing_path).map_err(|e| format!("{e:#}"));
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
    match listing.and_then(|l| initramfs::list(tool, &image, &l, ctx.timeout())) {
        Ok(text) if initramfs::contains_module(&text, &names) => Some(tool),
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
