//! One build job in a worker thread: the dkms steps for one (module, version, kernel, arch), in
//! order (add if needed, unbuild for a rebuild, build, uninstall a replaced version, install),
//! through the backend, into the job's log.

use super::Context;
use crate::backend::{Deadline, Step, Target};
use crate::plan::{Action, Job};
use crate::runner::Log;
use crate::state::Outcome;
use anyhow::Result;
use std::time::{Duration, Instant};

/// What a job came to.
pub(super) struct JobDone {
    pub outcome: Outcome,
    pub detail: Option<String>,
    pub duration: Duration,
    /// The kernel's installed modules changed (something unbuilt, uninstalled or installed).
    pub changed: bool,
    /// `dkms build` ran.
    pub built: bool,
}

/// Runs job `j` with `make -j make_jobs`.
pub(super) fn run(ctx: &Context, j: &Job, make_jobs: u32) -> JobDone {
    let started = Instant::now();
    let mut done =
        JobDone { outcome: Outcome::Failed, detail: None, duration: Duration::ZERO, changed: false, built: false };
    let result = Log::open(ctx.root(), ctx.run.job_log(j)).and_then(|log| steps(ctx, j, make_jobs, &log, &mut done));
    if let Err(e) = result {
        done.outcome = Outcome::Failed;
        done.detail = Some(format!("{e:#}"));
    }
    // A stop signal ends the job's commands: it did not fail, it was interrupted, and the next
    // finalize rebuilds it (an in-progress pair is rebuilt whatever the intents say).
    if let (Some(sig), false) = (crate::runner::stop_signal(), done.outcome == Outcome::Installed) {
        done.outcome = Outcome::InProgress;
        done.detail = Some(format!("interrupted by {sig}; the next finalize rebuilds it"));
    }
    done.duration = started.elapsed();
    done
}

fn steps(ctx: &Context, j: &Job, make_jobs: u32, log: &Log, done: &mut JobDone) -> Result<()> {
    let deadline = Deadline::after(ctx.timeout());
    let headers = ctx.inventory.kernels.get(&j.kernel).and_then(|k| k.headers.clone());
    let t = Target {
        module: &j.module,
        version: &j.version,
        kernel: &j.kernel,
        arch: &j.arch,
        headers: headers.as_deref(),
    };
    // The plan says whether the module was registered when it was made; an earlier job of the same
    // module (they run one after the other) may have registered it since.
    if j.register && !ctx.dkms.is_registered(&j.module, &j.version) {
        if let Step::Failed(why) = ctx.dkms.add(&j.module, &j.version, log, deadline)? {
            return failed(done, format!("dkms add failed: {why}"));
        }
    }
    if j.action == Action::Rebuild {
        done.changed = true;
        if let Step::Failed(why) = ctx.dkms.unbuild(&t, log, deadline)? {
            return failed(done, format!("dkms unbuild failed: {why}"));
        }
    }
    done.built = true;
    match ctx.dkms.build(&t, make_jobs, log, deadline)? {
        Step::Ok => {}
        Step::Unsupported(why) => {
            done.outcome = Outcome::Unsupported;
            done.detail = Some(why);
            return Ok(());
        }
        Step::NoHeaders(why) => {
            done.outcome = Outcome::Skipped;
            done.detail = Some(format!("no headers: {why}"));
            return Ok(());
        }
        Step::DependencyMissing(why) => return failed(done, format!("BUILD_DEPENDS not installed: {why}")),
        Step::BuildFailed { reason, make_log } => {
            // dkms's make.log is overwritten by the next build of the module: keep a copy (its
            // end, where the error is: a log is bounded, runner::LOG_LIMIT).
            if let Some(ml) = &make_log {
                if let Ok(text) = ctx.root().read_tail(ml, crate::runner::LOG_TAIL as u64) {
                    log.note(&format!("# --- {} ---", ml.display()));
                    log.append(&text);
                }
            }
            return failed(done, reason);
        }
        Step::Failed(why) => return failed(done, format!("dkms build failed: {why}")),
    }
    if let Action::ReplaceOldVersion { old } = &j.action {
        let old_t = Target { version: old, ..t };
        done.changed = true;
        if let Step::Failed(why) = ctx.dkms.uninstall(&old_t, log, deadline)? {
            return failed(done, format!("could not uninstall {}/{old}: {why}", j.module));
        }
    }
    done.changed = true;
    match ctx.dkms.install(&t, log, deadline)? {
        Step::Ok => {
            done.outcome = Outcome::Installed;
            done.detail = None;
        }
        Step::Unsupported(why) => {
            done.outcome = Outcome::Unsupported;
            done.detail = Some(why);
        }
        other => return failed(done, format!("dkms install failed: {}", other.text())),
    }
    Ok(())
}

fn failed(done: &mut JobDone, why: String) -> Result<()> {
    done.outcome = Outcome::Failed;
    done.detail = Some(why);
    Ok(())
}
