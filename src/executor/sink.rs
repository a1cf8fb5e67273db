//! Where every result of a run goes: the line printed for it, the failure policy (warning or
//! error), the state record (stored after every job), and the run's summary.

use super::{job::JobDone, post::PostDone, Context};
use crate::clock;
use crate::config::Policy;
use crate::plan::{skip_word, Action, EventClass, Job, Plan, SkipKind};
use crate::state::{Outcome, PairKey, PairState, State};
use crate::statefile;
use crate::ui;
use anyhow::Result;
use std::collections::BTreeMap;
use std::time::Duration;

/// The result of one job.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub index: usize,
    pub outcome: Outcome,
    pub detail: Option<String>,
    /// Root-relative log path.
    pub log: Option<String>,
    pub duration: Duration,
    /// Counted towards the exit status (failure under an "error" policy).
    pub error: bool,
    /// A failure that is not the module's: retried by the next finalize.
    pub transient: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub reports: Vec<JobReport>,
    pub errors: usize,
    pub warnings: usize,
    pub depmod: Vec<String>,
    pub initramfs: Vec<String>,
    pub dkms_builds: usize,
    /// The builds installed, (module, version, kernel, arch): filled by the finalizer across
    /// rounds, for the Secure Boot advice at its end.
    pub built: Vec<crate::secureboot::Build>,
}

pub(super) struct Sink<'a> {
    ctx: &'a Context<'a>,
    plan: &'a Plan,
    state: &'a mut State,
    sum: Summary,
    /// Build jobs finished so far, of `total` (for the `[i/n]` counter).
    finished: usize,
    total: usize,
    /// Kernels whose installed modules changed (something unbuilt, uninstalled or installed).
    changed: BTreeMap<String, bool>,
    /// Jobs that succeeded, per kernel.
    succeeded: BTreeMap<String, usize>,
    /// Kernels whose depmod ran.
    depmod_done: BTreeMap<String, bool>,
}

impl<'a> Sink<'a> {
    pub(super) fn new(ctx: &'a Context<'a>, plan: &'a Plan, state: &'a mut State) -> Sink<'a> {
        let total = plan.jobs.iter().filter(|j| j.action.builds()).count();
        Sink {
            ctx,
            plan,
            state,
            sum: Summary::default(),
            finished: 0,
            total,
            changed: BTreeMap::new(),
            succeeded: BTreeMap::new(),
            depmod_done: BTreeMap::new(),
        }
    }

    pub(super) fn store(&self) -> Result<()> {
        statefile::store(self.ctx.lock, self.state)
    }

    /// A job that runs nothing: a skip, a deferral or a failure decided by the planner.
    pub(super) fn settled_without_running(&mut self, i: usize) {
        let j = &self.plan.jobs[i];
        let (outcome, detail) = match &j.action {
            Action::Skip { kind: SkipKind::Unsupported, detail } => (Outcome::Unsupported, detail.clone()),
            Action::Skip { kind, detail } => (Outcome::Skipped, format!("{}: {detail}", skip_word(*kind))),
            Action::Deferred { waiting_for } => (Outcome::Deferred, format!("waiting for {}", waiting_for.join(", "))),
            Action::Fail { reason } => (Outcome::Failed, reason.clone()),
            _ => unreachable!("only jobs that run nothing"),
        };
        // A failure carried from a build ahead of the transaction's end keeps that build's log.
        let log = match &j.action {
            Action::Fail { .. } => self.state.pairs.get(&j.key()).filter(|p| p.early).and_then(|p| p.log.clone()),
            _ => None,
        };
        let report = JobReport {
            index: i,
            outcome,
            detail: Some(detail),
            log,
            duration: Duration::ZERO,
            error: false,
            transient: false,
        };
        self.report(j, report, None);
    }

    /// A job is about to start: marked in progress, so that a crash leaves a trace.
    pub(super) fn started(&mut self, i: usize) -> Result<()> {
        let j = &self.plan.jobs[i];
        let previous = self.state.pairs.get(&j.key()).cloned();
        self.state.set(
            j.key(),
            PairState {
                result: Outcome::InProgress,
                reason: Some(format!("{} started", j.action.verb())),
                time_ms: clock::now_ms(),
                run: Some(self.ctx.run.id.clone()),
                log: None,
                // Keep what was known, so an interrupted job does not forget the last good build.
                fingerprint: previous.and_then(|p| p.fingerprint),
                transient: false,
                early: false,
            },
        );
        self.store()
    }

    /// A job failed without running because its prerequisite `dep` (a job index) failed.
    pub(super) fn blocked(&mut self, i: usize, dep: usize) -> Result<()> {
        let j = &self.plan.jobs[i];
        self.finished += 1;
        let report = JobReport {
            index: i,
            outcome: Outcome::Failed,
            detail: Some(format!("dependency {} failed for {}", self.plan.jobs[dep].module, j.kernel)),
            log: None,
            duration: Duration::ZERO,
            error: false,
            transient: false,
        };
        self.report(j, report, Some(self.finished));
        self.store()
    }

    /// A job ended.
    pub(super) fn finished(&mut self, i: usize, done: JobDone) -> Result<()> {
        let j = &self.plan.jobs[i];
        self.finished += 1;
        let ok = done.outcome == Outcome::Installed;
        if done.changed {
            self.changed.insert(j.kernel.clone(), true);
        }
        if ok {
            *self.succeeded.entry(j.kernel.clone()).or_default() += 1;
        }
        if done.built {
            self.sum.dkms_builds += 1;
        }
        let root = self.ctx.root();
        let log =
            root.inside(&self.ctx.run.job_log(j)).map(|p| p.to_string_lossy().trim_start_matches('/').to_string());
        let report = JobReport {
            index: i,
            outcome: done.outcome,
            detail: done.detail,
            log,
            duration: done.duration,
            error: false,
            transient: done.transient,
        };
        self.report(j, report, Some(self.finished));
        if let (Action::ReplaceOldVersion { old }, true) = (&j.action, ok) {
            self.state.pairs.remove(&PairKey { version: old.clone(), ..j.key() });
        }
        self.store()
    }

    /// Whether kernel `k`'s post-step must run (something changed there) and, if so, whether its
    /// initramfs may be updated (the plan allows it and at least one job succeeded).
    pub(super) fn post_needed(&self, k: &str) -> Option<bool> {
        if !self.changed.get(k).copied().unwrap_or(false) {
            return None;
        }
        let allowed = self.plan.kernels.get(k).is_some_and(|s| s.initramfs);
        Some(allowed && self.succeeded.get(k).copied().unwrap_or(0) > 0)
    }

    /// A kernel's post-step ended.
    pub(super) fn post_finished(&mut self, k: &str, done: PostDone) {
        if done.depmod {
            self.sum.depmod.push(k.to_string());
            self.depmod_done.insert(k.to_string(), true);
        }
        if done.initramfs {
            self.sum.initramfs.push(k.to_string());
        }
        if let Some(d) = &done.problem {
            self.sum.warnings += 1;
            ui::warn(format!("after building for {k}: {d}"));
        }
    }

    /// A stop signal ended the run: on a kernel whose modules changed but whose depmod did not
    /// run, the jobs installed in this run are recorded as interrupted too, so that the next
    /// finalize redoes them, and with them the depmod (it runs only where something changed).
    pub(super) fn stopped(&mut self) -> Result<()> {
        let undone: Vec<&String> =
            self.changed.keys().filter(|k| !self.depmod_done.get(*k).copied().unwrap_or(false)).collect();
        for j in self.plan.jobs.iter().filter(|j| undone.contains(&&j.kernel)) {
            if let Some(p) = self.state.pairs.get_mut(&j.key()) {
                if p.result == Outcome::Installed && p.run.as_deref() == Some(self.ctx.run.id.as_str()) {
                    p.result = Outcome::InProgress;
                    p.reason = Some("installed, but interrupted before depmod; the next finalize redoes it".into());
                }
            }
        }
        self.store()
    }

    pub(super) fn summary(mut self) -> Summary {
        self.sum.warnings += self.sum.reports.iter().filter(|r| !r.error && r.outcome == Outcome::Failed).count();
        self.sum
    }

    /// Prints a job's line (and its warning or error), applies the failure policy, records it.
    fn report(&mut self, j: &Job, report: JobReport, counter: Option<usize>) {
        // Ahead of the transaction's end: its finalize reports the failure, and builds the pair
        // again only if its inputs change before then (planner: `carried_early_failure`).
        let early = self.ctx.early && report.outcome == Outcome::Failed;
        let previous = self.state.pairs.get(&j.key()).map(|p| p.result);
        let report = announce(self.ctx, j, report, counter.map(|i| (i, self.total)), previous);
        let fingerprint = match report.outcome {
            Outcome::Installed | Outcome::Failed => j.print.clone(),
            // Interrupted: what was last built stays known, as when the job started.
            Outcome::InProgress => self.state.pairs.get(&j.key()).and_then(|p| p.fingerprint.clone()),
            _ => None,
        };
        self.state.set(
            j.key(),
            PairState {
                result: report.outcome,
                reason: report.detail.clone(),
                time_ms: clock::now_ms(),
                run: Some(self.ctx.run.id.clone()),
                log: report.log.clone(),
                fingerprint,
                transient: report.transient,
                early,
            },
        );
        if report.error {
            self.sum.errors += 1;
        }
        self.sum.reports.push(report);
    }
}

/// Prints the job's line (and its warning or error line) and decides whether it is an error.
fn announce(
    ctx: &Context,
    j: &Job,
    mut r: JobReport,
    counter: Option<(usize, usize)>,
    previous: Option<Outcome>,
) -> JobReport {
    let prefix = counter.map(|(i, n)| format!("[{i}/{n}] ")).unwrap_or_default();
    let mv = j.module_version();
    let what = format!("{prefix}{} {mv} for {}", j.action.verb(), j.kernel);
    let secs = if r.duration > Duration::ZERO { format!(" ({:.1}s)", r.duration.as_secs_f64()) } else { String::new() };
    let log = r.log.as_deref().map(|l| format!(", log: /{l}")).unwrap_or_default();
    let detail = r.detail.clone().unwrap_or_default();
    let policy = match j.class {
        _ if ctx.early => Policy::Warn,
        EventClass::Kernel => ctx.config.on_failure_kernel,
        EventClass::Module => ctx.config.on_failure_module,
    };
    match r.outcome {
        Outcome::Installed => ui::info(format!("{what} ... ok{secs}")),
        Outcome::Unsupported => {
            ui::info(format!("{what} ... unsupported{secs}"));
            if previous != Some(Outcome::Unsupported) {
                ui::warn(format!("{mv} is not supported on {}: {detail}", j.kernel));
            }
        }
        Outcome::Skipped => ui::info(format!("{what} ... skipped: {detail}")),
        Outcome::Deferred => ui::info(format!("{what} ... deferred: {detail}")),
        Outcome::Failed => {
            ui::info(format!("{what} ... FAILED{secs}"));
            let retry = match (ctx.early, r.transient) {
                (true, _) => " (the finalize at the end of this transaction reports it, and builds it again if its inputs change before then)",
                (false, true) => " (not the module's own failure: the next finalize tries again)",
                (false, false) => "",
            };
            match policy {
                Policy::Warn => ui::warn(format!("{mv} failed for {}: {detail}{log}{retry}", j.kernel)),
                Policy::Error => {
                    eprintln!("error: {mv} failed for {}: {detail}{log}{retry}", j.kernel);
                    r.error = true;
                }
            }
        }
        Outcome::InProgress => ui::info(format!("{what} ... interrupted{secs}")),
    }
    r
}
