//! `dkms-trigger finalize`: one finalizer at a time takes the spool's intents, plans, executes,
//! removes exactly the intents it handled, and loops while hooks recorded new ones meanwhile. A
//! stop signal (SIGINT, SIGTERM, SIGHUP) stops the running jobs, which are recorded as interrupted
//! (the next finalize rebuilds them), keeps every pending intent, and exits with `Interrupted`.

use crate::backend::{Depmod, Dkms};
use crate::clock;
use crate::config::Config;
use crate::executor::{self, swap, Context, RunLog, Summary};
use crate::exit::Code;
use crate::intent::Intent;
use crate::lock::{FinalizeLock, Waiting};
use crate::paths;
use crate::pipeline;
use crate::plan::Plan;
use crate::root::{self, Root};
use crate::runner::{self, Log};
use crate::spool::{self, Entry};
use crate::state::Outcome;
use crate::statefile;
use crate::ui;
use anyhow::{Context as _, Result};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Command-line options of `finalize`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dry_run: bool,
    pub jobs: Option<usize>,
    pub no_wait: bool,
    pub retry_failed: bool,
    /// Add a rescan intent (full reconcile) to this run.
    pub rescan: bool,
}

/// Rounds of snapshot-plan-execute before giving up on hooks that keep recording.
const MAX_ROUNDS: usize = 20;
/// Source text of intents the finalizer leaves pending for deferred pairs.
const DEFERRED_SOURCE: &str = "dkms-trigger: deferred, waiting for a dependency";

/// Runs `finalize`.
pub fn run(root: &Root, config: &Config, opts: &Options) -> Result<Code> {
    if opts.dry_run {
        print!("{}", pipeline::preview(root, config, opts.rescan, opts.retry_failed)?.plan);
        return Ok(Code::Ok);
    }
    root::require_root("finalize")?;
    runner::stop_on_signals()?;
    let lock = FinalizeLock::take(root, Waiting::from(opts.no_wait, config.lock_timeout), "finalize")?;
    let started = Instant::now();
    settle_interrupted_swaps(root, config)?;
    let mut state = statefile::load(&lock)?;
    let mut total = Summary::default();
    let mut run_log: Option<RunLog> = None;
    let mut warned_unknown = BTreeSet::new();
    for round in 0..MAX_ROUNDS {
        let entries = spool::snapshot(root)?.entries;
        let mut handled: Vec<Entry> = Vec::new();
        let mut intents: Vec<Intent> = Vec::new();
        for e in &entries {
            match e.intent() {
                Ok(i) => {
                    handled.push(e.clone());
                    intents.push(i);
                }
                Err(why) => {
                    if warned_unknown.insert(why.clone()) {
                        ui::warn(format!("pending intent kept, not understood by this version: {why}"));
                    }
                }
            }
        }
        if round == 0 && opts.rescan {
            intents.push(Intent::Rescan);
        }
        let revisit = round == 0;
        if intents.is_empty() && !(revisit && pipeline::state_wants_work(&state, opts.retry_failed)) {
            break; // the no-op path: a lock, the spool and the state, nothing else
        }
        let p = pipeline::prepare(root, config, intents, state, opts.retry_failed, revisit)?;
        // Stopped while reading the system: nothing ran, every intent stays.
        runner::check_stop()?;
        state = p.state;
        for n in &p.plan.notes {
            log::info!("plan: {n}");
        }
        if !p.plan.jobs.is_empty() {
            let rl = match &run_log {
                Some(r) => r.clone(),
                None => {
                    let r = new_run_log(root)?;
                    run_log = Some(r.clone());
                    r
                }
            };
            let ctx = Context {
                lock: &lock,
                config,
                dkms: Dkms::new(&config.dkms, root),
                depmod: Depmod { program: config.depmod.clone(), root: root.clone() },
                inventory: &p.inventory,
                run: &rl,
                jobs: opts.jobs.unwrap_or(if config.jobs == 0 { cpus() } else { config.jobs as usize }),
                cpus: cpus(),
                added_kernels: p
                    .intents
                    .iter()
                    .filter_map(|i| if let Intent::KernelAdded { kernel } = i { Some(kernel.clone()) } else { None })
                    .collect(),
            };
            let s = executor::execute(&ctx, &p.plan, &mut state)?;
            merge(&mut total, s, &p.plan);
        }
        if let Some(sig) = runner::stop_signal() {
            // The jobs that ran are recorded (state.toml); the intents stay pending, so that the
            // next finalize plans again and rebuilds what was interrupted.
            if let Some(rl) = &run_log {
                print_summary(&total, started.elapsed(), rl, root);
            }
            let stopped = total.reports.iter().filter(|r| r.outcome == Outcome::InProgress).count();
            return Err(crate::exit::Failure::err(
                Code::Interrupted,
                format!(
                    "interrupted by {sig}: {stopped} running job(s) stopped and recorded as interrupted; \
                     the pending intents are kept and the next finalize does the rest"
                ),
            ));
        }
        // Remove what this round handled, keep what it deferred, and see whether hooks recorded
        // anything new in the meantime.
        let fresh = spool::update(root, |s| {
            s.remove_handled(&handled);
            let now = clock::now_ms();
            for k in &p.plan.keep {
                s.add(k, Some(DEFERRED_SOURCE), now);
            }
            s.entries.iter().any(|e| e.intent().is_ok_and(|i| !p.plan.keep.contains(&i)))
        })?;
        if !fresh {
            break;
        }
        if round + 1 == MAX_ROUNDS {
            ui::warn(format!(
                "intents keep arriving; stopping after {MAX_ROUNDS} rounds (the next finalize continues)"
            ));
        }
    }
    if let Some(rl) = &run_log {
        print_summary(&total, started.elapsed(), rl, root);
        rotate_logs(root, config.keep_runs as usize);
    }
    Ok(if total.errors > 0 { Code::Failure } else { Code::Ok })
}

/// Finishes (or undoes) the rebuilds an interrupted run left half-swapped, so that every kernel has
/// the old or the new build installed before anything is planned (executor/swap.rs), then runs
/// depmod where that changed the installed modules.
fn settle_interrupted_swaps(root: &Root, config: &Config) -> Result<()> {
    if swap::pending(root).is_empty() {
        return Ok(());
    }
    let log = Log::open(root, root.private_dir(paths::LOG_DIR)?.join("recover.log"))?;
    let timeout = Duration::from_secs(config.job_timeout);
    let kernels = swap::recover(&Dkms::new(&config.dkms, root), &log, timeout)?;
    let depmod = Depmod { program: config.depmod.clone(), root: root.clone() };
    for k in kernels {
        if let Err(why) = depmod.run(&k, &log, timeout) {
            ui::warn(format!("{why} (for {k})"));
        }
    }
    Ok(())
}

fn merge(total: &mut Summary, s: Summary, plan: &Plan) {
    total.errors += s.errors;
    total.warnings += s.warnings;
    total.depmod.extend(s.depmod);
    total.initramfs.extend(s.initramfs);
    total.dkms_builds += s.dkms_builds;
    for mut r in s.reports {
        // Keep the pair's identity with the report: the plan index means nothing across rounds.
        let j = &plan.jobs[r.index];
        r.detail = Some(format!(
            "{}/{} on {}{}",
            j.module,
            j.version,
            j.kernel,
            r.detail.map(|d| format!(" ({d})")).unwrap_or_default()
        ));
        total.reports.push(r);
    }
}

fn print_summary(total: &Summary, took: Duration, rl: &RunLog, root: &Root) {
    let groups: [(Outcome, &str); 6] = [
        (Outcome::Installed, "installed"),
        (Outcome::Failed, "failed"),
        (Outcome::Unsupported, "unsupported"),
        (Outcome::Deferred, "deferred"),
        (Outcome::Skipped, "skipped"),
        (Outcome::InProgress, "interrupted"),
    ];
    ui::info(format!(
        "summary ({:.1}s, logs in {}):",
        took.as_secs_f64(),
        root.inside(&rl.dir).unwrap_or_default().display()
    ));
    for (o, word) in groups {
        let items: Vec<&str> =
            total.reports.iter().filter(|r| r.outcome == o).filter_map(|r| r.detail.as_deref()).collect();
        if !items.is_empty() {
            ui::info(format!("  {word} ({}): {}", items.len(), items.join("; ")));
        }
    }
    if !total.depmod.is_empty() {
        ui::info(format!("  depmod: {}", total.depmod.join(", ")));
    }
    if !total.initramfs.is_empty() {
        ui::info(format!("  initramfs updated: {}", total.initramfs.join(", ")));
    }
}

fn new_run_log(root: &Root) -> Result<RunLog> {
    let base = root.private_dir(paths::LOG_DIR)?;
    let id = format!("{}-{}", clock::compact(clock::now_ms()), std::process::id());
    let dir = base.join(&id);
    root.create_private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(RunLog { id, dir })
}

/// Keeps the newest `keep` run directories (run ids sort by time).
fn rotate_logs(root: &Root, keep: usize) {
    let base = root.path(paths::LOG_DIR);
    let Ok(entries) = root.list_typed(&base) else { return };
    let runs: Vec<_> = entries.into_iter().filter(|(_, t)| t.is_dir()).map(|(n, _)| base.join(n)).collect();
    let n = runs.len().saturating_sub(keep);
    for old in &runs[..n] {
        let _ = root.remove_dir_all(old);
    }
}

/// CPUs available to this process.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
