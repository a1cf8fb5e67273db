//! One build job in a worker thread: the dkms steps for one (module, version, kernel, arch), in
//! order (add if needed, build, install; a rebuild staged and swapped in, a replaced version
//! uninstalled only for the new one), through the backend, into the job's log. No step removes
//! an installed build before its successor exists (swap.rs).

use super::swap::{self, Swap};
use super::Context;
use crate::backend::dkms::DISK_FULL;
use crate::backend::{Deadline, Step, Target};
use crate::failpoint;
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
    /// The failure was not the module's (a timeout, a signal, a full disk, a log that could not
    /// be written): retried at the next finalize without waiting for a change.
    pub transient: bool,
}

/// Runs job `j` with `make -j make_jobs`.
pub(super) fn run(ctx: &Context, j: &Job, make_jobs: u32) -> JobDone {
    let started = Instant::now();
    let mut done = JobDone {
        outcome: Outcome::Failed,
        detail: None,
        duration: Duration::ZERO,
        changed: false,
        built: false,
        transient: false,
    };
    let result = Log::open(ctx.root(), ctx.run.job_log(j)).and_then(|log| steps(ctx, j, make_jobs, &log, &mut done));
    if let Err(e) = result {
        // The job could not run its steps (no log, no program, a move that failed): not the
        // module's fault.
        done.outcome = Outcome::Failed;
        done.detail = Some(format!("{e:#}"));
        done.transient = true;
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
        let step = ctx.dkms.add(&j.module, &j.version, log, deadline)?;
        if !step.is_ok() {
            return settle(ctx, done, log, step, "dkms add failed: ");
        }
    }
    done.built = true;
    if j.action == Action::Rebuild {
        // Never unbuild first: the installed build stays until the new one exists (swap.rs).
        let step = swap::rebuild(&ctx.dkms, &t, make_jobs, log, deadline, &mut done.changed)?;
        settle(ctx, done, log, step, "")?;
        if done.outcome == Outcome::Failed {
            if let Some(d) = done.detail.as_mut().filter(|d| !d.contains("put back")) {
                d.push_str("; the previous build is kept");
            }
        }
        return Ok(());
    }
    let step = ctx.dkms.build(&t, make_jobs, log, deadline)?;
    if !step.is_ok() {
        return settle(ctx, done, log, step, "");
    }
    let Action::ReplaceOldVersion { old } = &j.action else {
        done.changed = true;
        let step = ctx.dkms.install(&t, log, deadline)?;
        return settle(ctx, done, log, step, "dkms install failed: ");
    };
    // Another version is installed: it goes only for the new one, and comes back if the new one
    // does not install. The swap directory records the replacement until it is over.
    let old_t = Target { version: old, ..t };
    let swap = Swap::begin(ctx.root(), &t)?;
    swap.replaces(old)?;
    done.changed = true;
    let step = ctx.dkms.uninstall(&old_t, log, deadline)?;
    if !step.is_ok() {
        let _ = ctx.dkms.install(&old_t, log, deadline);
        swap.finish();
        return settle(ctx, done, log, step, &format!("could not uninstall {}/{old}: ", j.module));
    }
    failpoint::hit("replace-after-uninstall");
    let step = ctx.dkms.install(&t, log, deadline)?;
    if !step.is_ok() && !matches!(step, Step::Unsupported(_)) {
        let back = ctx.dkms.install(&old_t, log, deadline)?;
        swap.finish();
        let kept = if back.is_ok() { format!("; {}/{old} was reinstalled", j.module) } else { String::new() };
        let step = match step {
            Step::Transient(w) => Step::Transient(format!("{w}{kept}")),
            other => Step::Failed(format!("{}{kept}", other.text())),
        };
        return settle(ctx, done, log, step, "dkms install failed: ");
    }
    swap.finish();
    settle(ctx, done, log, step, "dkms install failed: ")
}

/// Turns the last step of a job into its outcome. `what` prefixes a failure's reason.
fn settle(ctx: &Context, done: &mut JobDone, log: &Log, step: Step, what: &str) -> Result<()> {
    match step {
        Step::Ok => {
            done.outcome = Outcome::Installed;
            done.detail = None;
        }
        Step::Unsupported(why) => {
            done.outcome = Outcome::Unsupported;
            done.detail = Some(why);
        }
        Step::NoHeaders(why) => {
            done.outcome = Outcome::Skipped;
            done.detail = Some(format!("no headers: {why}"));
        }
        Step::DependencyMissing(why) => failed(done, format!("BUILD_DEPENDS not installed: {why}")),
        Step::BuildFailed { reason, make_log } => {
            // dkms's make.log is overwritten by the next build of the module: keep a copy (its
            // end, where the error is: a log is bounded, runner::LOG_LIMIT).
            let mut disk_full = false;
            if let Some(ml) = &make_log {
                if let Ok(text) = ctx.root().read_tail(ml, crate::runner::LOG_TAIL as u64) {
                    disk_full = String::from_utf8_lossy(&text).contains(DISK_FULL);
                    log.note(&format!("# --- {} ---", ml.display()));
                    log.append(&text);
                }
            }
            failed(done, reason);
            done.transient = disk_full;
        }
        Step::Failed(why) => failed(done, format!("{what}{why}")),
        Step::Transient(why) => {
            failed(done, format!("{what}{why}"));
            done.transient = true;
        }
    }
    Ok(())
}

fn failed(done: &mut JobDone, why: String) {
    done.outcome = Outcome::Failed;
    done.detail = Some(why);
}
