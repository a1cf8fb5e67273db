//! Runs a plan: the scheduler (scheduler.rs) decides what starts next, worker threads run jobs
//! (job.rs) and per-kernel post-steps (post.rs) through the backend, and every result flows to one
//! sink (sink.rs) that prints it, applies the failure policy and records it in the state.

mod job;
mod post;
mod sink;
pub mod swap;

use crate::backend::{Depmod, Dkms};
use crate::config::Config;
use crate::inventory::Inventory;
use crate::lock::FinalizeLock;
use crate::plan::{Job, Plan};
use crate::root::Root;
use crate::runner;
use crate::scheduler::{Limits, Next, Scheduler, Unit};
use crate::state::{Outcome, State};
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

pub use sink::{JobReport, Summary};

/// Where a run writes its logs.
#[derive(Debug, Clone)]
pub struct RunLog {
    pub id: String,
    /// Absolute directory of this run's logs.
    pub dir: PathBuf,
}

impl RunLog {
    /// The log file of a job: `<module>-<version>-<kernel>.log` (all validated names).
    pub fn job_log(&self, j: &Job) -> PathBuf {
        self.dir.join(format!("{}-{}-{}.log", j.module, j.version, j.kernel))
    }

    /// The log of a kernel's post-steps (depmod, initramfs).
    pub fn post_log(&self, kernel: &str) -> PathBuf {
        self.dir.join(format!("post-{kernel}.log"))
    }
}

/// What the executor needs besides the plan.
pub struct Context<'a> {
    /// The finalize lock: the run changes builds and stores the state under it.
    pub lock: &'a FinalizeLock,
    pub config: &'a Config,
    pub dkms: Dkms,
    pub depmod: Depmod,
    pub inventory: &'a Inventory,
    pub run: &'a RunLog,
    /// Modules built at once (config `jobs`, or the CPU count).
    pub jobs: usize,
    pub cpus: usize,
    /// Kernels installed in this transaction: their initramfs was made before their modules.
    pub added_kernels: BTreeSet<String>,
    /// Builds ahead of the transaction's finalize (`finalize::early`): a failure is only a
    /// warning, recorded as early (that finalize reports it under its policy).
    pub early: bool,
}

impl Context<'_> {
    pub fn root(&self) -> &Root {
        self.lock.root()
    }

    /// One job's time budget (config `job_timeout`), also the bound of every post-step command.
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.job_timeout)
    }
}

/// What a worker thread reports.
enum Done {
    Job(usize, job::JobDone),
    Post(String, post::PostDone),
}

/// Executes `plan`, updating and storing `state` after every job.
pub fn execute(ctx: &Context, plan: &Plan, state: &mut State) -> Result<Summary> {
    let mut sink = sink::Sink::new(ctx, plan, state);
    // Jobs that run nothing are recorded at once.
    for (i, _) in plan.jobs.iter().enumerate().filter(|(_, j)| !j.action.builds()) {
        sink.settled_without_running(i);
    }
    sink.store()?;

    let units: Vec<Unit> = plan
        .jobs
        .iter()
        .map(|j| Unit {
            module: j.module.clone(),
            kernel: j.kernel.clone(),
            after: j.after.clone(),
            weight: ctx.inventory.modules.get(&(j.module.clone(), j.version.clone())).map_or(0, |m| m.source_bytes),
            builds: j.action.builds(),
        })
        .collect();
    let limits = Limits {
        parallel: ctx.jobs.max(1),
        cpus: ctx.cpus,
        make_jobs: ctx.config.make_jobs,
        key_missing: !ctx.inventory.signing_key,
    };
    let mut scheduler = Scheduler::new(units, limits);

    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::channel::<Done>();
        // Jobs and post-steps started and not reported yet.
        let mut running = 0usize;
        let receive = |scheduler: &mut Scheduler, sink: &mut sink::Sink, running: &mut usize| -> Result<()> {
            *running -= 1;
            match rx.recv().expect("workers report") {
                Done::Job(i, done) => {
                    scheduler.finished(i, done.outcome == Outcome::Installed);
                    sink.finished(i, done)
                }
                Done::Post(kernel, done) => {
                    scheduler.post_finished(&kernel);
                    sink.post_finished(&kernel, done);
                    Ok(())
                }
            }
        };
        loop {
            // Stopped: nothing new starts; the running jobs (their commands stopped by the
            // runner) report, and are recorded as interrupted.
            if runner::stop_signal().is_some() {
                if running == 0 {
                    return sink.stopped();
                }
                receive(&mut scheduler, &mut sink, &mut running)?;
                continue;
            }
            match scheduler.decide() {
                Next::Start { job: i, make_jobs } => {
                    sink.started(i)?;
                    running += 1;
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let _ = tx.send(Done::Job(i, job::run(ctx, &plan.jobs[i], make_jobs)));
                    });
                }
                Next::Blocked { job, dependency } => sink.blocked(job, dependency)?,
                Next::Post { kernel } => match sink.post_needed(&kernel) {
                    Some(initramfs) => {
                        let changed: Vec<&Job> =
                            plan.jobs.iter().filter(|j| j.kernel == kernel && j.action.builds()).collect();
                        running += 1;
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let done = post::run(ctx, &kernel, initramfs, &changed);
                            let _ = tx.send(Done::Post(kernel, done));
                        });
                    }
                    None => scheduler.post_finished(&kernel),
                },
                Next::Wait => receive(&mut scheduler, &mut sink, &mut running)?,
                Next::Done => return Ok(()),
                // The planner orders jobs so that this cannot happen.
                Next::Stuck => anyhow::bail!("internal error: jobs left that can never start"),
            }
        }
    })?;
    Ok(sink.summary())
}
