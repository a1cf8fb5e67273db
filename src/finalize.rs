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
use crate::secureboot;
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
    /// Kernels whose initramfs the caller's tool makes right after this finalize (the kernel's
    /// install hook that follows ours): their modules are built and depmod run, the image is left
    /// to that tool, which would otherwise make it a second time.
    pub initramfs_follows: BTreeSet<String>,
    /// Intents planned in the first round besides the spool's, never recorded (`boot`'s catch-up
    /// of the running kernel: stopped, it leaves nothing pending, and the next boot looks again).
    pub also: Vec<Intent>,
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
        if round == 0 {
            if opts.rescan {
                intents.push(Intent::Rescan);
            }
            intents.extend(opts.also.iter().cloned());
        }
        let revisit = round == 0;
        if intents.is_empty() && !(revisit && pipeline::state_wants_work(&state, opts.retry_failed)) {
            break; // the no-op path: a lock, the spool and the state, nothing else
        }
        let p = pipeline::prepare(root, config, intents, state, opts.retry_failed, revisit)?;
        // Stopped while reading the system: nothing ran, every intent stays.
        runner::check_stop()?;
        state = p.state;
        let mut plan = p.plan;
        for n in &plan.notes {
            log::info!("plan: {n}");
        }
        leave_initramfs(&mut plan, &opts.initramfs_follows);
        if !plan.jobs.is_empty() {
            let rl = match &run_log {
                Some(r) => r.clone(),
                None => {
                    let r = new_run_log(root)?;
                    run_log = Some(r.clone());
                    r
                }
            };
            let ctx = context(&lock, config, &p.inventory, &rl, opts.jobs, &p.intents, false);
            let s = executor::execute(&ctx, &plan, &mut state)?;
            merge(&mut total, s, &plan);
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
            for k in &plan.keep {
                s.add(k, Some(DEFERRED_SOURCE), now);
            }
            s.entries.iter().any(|e| e.intent().is_ok_and(|i| !plan.keep.contains(&i)))
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
    secureboot::after_builds(root, &total.built);
    Ok(if total.errors > 0 { Code::Failure } else { Code::Ok })
}

/// What the executor needs besides the plan. `early`: the builds of `early` below.
fn context<'a>(
    lock: &'a FinalizeLock,
    config: &'a Config,
    inventory: &'a crate::inventory::Inventory,
    run: &'a RunLog,
    jobs: Option<usize>,
    intents: &[Intent],
    early: bool,
) -> Context<'a> {
    Context {
        lock,
        config,
        dkms: Dkms::new(&config.dkms, lock.root()),
        depmod: Depmod { program: config.depmod.clone(), root: lock.root().clone() },
        inventory,
        run,
        jobs: jobs.unwrap_or(if config.jobs == 0 { cpus() } else { config.jobs as usize }),
        cpus: cpus(),
        added_kernels: intents
            .iter()
            .filter_map(|i| if let Intent::KernelAdded { kernel } = i { Some(kernel.clone()) } else { None })
            .collect(),
        early,
    }
}

/// No initramfs step for the kernels whose image the caller's tool makes next.
fn leave_initramfs(plan: &mut Plan, kernels: &BTreeSet<String>) {
    for k in kernels {
        if let Some(steps) = plan.kernels.get_mut(k).filter(|s| s.initramfs) {
            steps.initramfs = false;
            log::info!("the initramfs of {k} is left to the tool that runs after this hook");
        }
    }
}

/// Given the modules a kernel's install hook could build (with their source directories, relative
/// to the root), those whose packages are not configured yet in the transaction.
pub type Unsettled<'a> = dyn Fn(&[(crate::inventory::ModKey, String)]) -> BTreeSet<crate::inventory::ModKey> + 'a;

/// A new kernel's builds, from its install hook inside a package transaction and before the
/// initramfs tool that follows that hook (docs/debian.md, "One initramfs generation"): the pairs
/// of `kernel` that the pending intents ask for, except those of modules in `unsettled(candidates)`
/// (their packages are not configured yet) and what BUILD_DEPENDS on them; depmod, no initramfs.
/// The spool is left alone: the transaction's own finalize plans again at its end, finds these
/// pairs done (so that it does not remake the image) and builds the rest. A failure here is
/// recorded as transient, so that finalize tries it again once everything is configured; nothing
/// here fails the hook. Skipped (info) when the finalize lock is taken.
pub fn early(root: &Root, config: &Config, kernel: &str, unsettled: &Unsettled<'_>) -> Result<Code> {
    root::require_root("building for a new kernel")?;
    runner::stop_on_signals()?;
    let lock = match FinalizeLock::take(root, Waiting::NoWait, "finalize") {
        Ok(l) => l,
        Err(e) => {
            ui::info(format!("dkms-trigger: not building for {kernel} now ({e:#}); the transaction's finalize will"));
            return Ok(Code::Ok);
        }
    };
    settle_interrupted_swaps(root, config)?;
    let state = statefile::load(&lock)?;
    let intents: Vec<Intent> = spool::snapshot(root)?.entries.iter().filter_map(|e| e.intent().ok()).collect();
    let p = pipeline::prepare(root, config, intents, state, false, false)?;
    runner::check_stop()?;
    let mut state = p.state;
    let candidates: Vec<_> = p
        .plan
        .jobs
        .iter()
        .filter(|j| j.kernel == kernel && j.action.builds())
        .filter_map(|j| {
            let key = (j.module.clone(), j.version.clone());
            let source = p.inventory.modules.get(&key)?.source.clone()?;
            Some((key, source))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(Code::Ok);
    }
    let plan = crate::planner::early::restrict(&p.plan, kernel, &unsettled(&candidates));
    if plan.jobs.is_empty() {
        ui::info(format!("dkms-trigger: nothing to build for {kernel} before the end of the transaction"));
        return Ok(Code::Ok);
    }
    ui::info(format!("dkms-trigger: building for {kernel} before its initramfs is made"));
    let started = Instant::now();
    let rl = new_run_log(root)?;
    let ctx = context(&lock, config, &p.inventory, &rl, None, &p.intents, true);
    let s = executor::execute(&ctx, &plan, &mut state)?;
    let mut total = Summary::default();
    merge(&mut total, s, &plan);
    print_summary(&total, started.elapsed(), &rl, root);
    rotate_logs(root, config.keep_runs as usize);
    secureboot::after_builds(root, &total.built);
    Ok(Code::Ok)
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
        if r.outcome == Outcome::Installed {
            total.built.push((j.module.clone(), j.version.clone(), j.kernel.clone(), j.arch.clone()));
        }
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
