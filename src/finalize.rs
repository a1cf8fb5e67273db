//! `dkms-trigger finalize`: one finalizer at a time takes the spool's intents, plans, executes,
//! removes exactly the intents it handled, and loops while hooks recorded new ones meanwhile.

use crate::clock;
use crate::config::Config;
use crate::executor::{self, Context, RunLog, Summary};
use crate::exit::{Code, Failure};
use crate::intent::Intent;
use crate::inventory;
use crate::paths;
use crate::plan::Plan;
use crate::planner;
use crate::root::{self, Root};
use crate::spool::{self, Entry};
use crate::state::{Outcome, State};
use crate::ui;
use anyhow::{Context as _, Result};
use fs2::FileExt;
use std::collections::BTreeSet;
use std::fs::File;
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

/// Holds ROOT/var/lib/dkms-trigger/finalize.lock while alive.
pub struct FinalizeLock {
    _file: File,
}

/// Takes the finalize lock: fails with `Code::Busy` under `no_wait`, otherwise waits and says so
/// every 30 s. The descriptor is deliberately inherited by the dkms processes it starts: if this
/// process is killed, the lock stays held until the last orphaned build has ended, so a new
/// finalizer can never run dkms on the same module at the same time as a leftover one.
pub fn lock(root: &Root, no_wait: bool) -> Result<FinalizeLock> {
    let dir = root.private_dir(paths::STATE_DIR)?;
    let path = dir.join(paths::FINALIZE_LOCK);
    let file = root::open_lock_file(&path)?;
    let started = Instant::now();
    let mut said = None::<Instant>;
    loop {
        match file.try_lock_exclusive() {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                if no_wait {
                    return Err(Failure::err(
                        Code::Busy,
                        format!("another finalizer holds {} (--no-wait given)", path.display()),
                    ));
                }
                if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    ui::info(format!(
                        "waiting for another finalizer to finish ({}s so far)...",
                        started.elapsed().as_secs()
                    ));
                    said = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::fd::AsRawFd;
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())).context("making the finalize lock inheritable")?;
    Ok(FinalizeLock { _file: file })
}

/// Takes the spool's current entries (storing it back when a corrupt spool was replaced).
fn snapshot(root: &Root) -> Result<Vec<Entry>> {
    let mut locked = spool::lock(root)?;
    let s = locked.load()?;
    if !locked.warnings.is_empty() {
        for w in std::mem::take(&mut locked.warnings) {
            ui::warn(w);
        }
        locked.store(&s)?;
    }
    Ok(s.entries)
}

/// Runs `finalize`.
pub fn run(root: &Root, config: &Config, opts: &Options) -> Result<Code> {
    if opts.dry_run {
        return dry_run(root, config, opts);
    }
    root::require_root("finalize")?;
    let _lock = lock(root, opts.no_wait)?;
    let started = Instant::now();
    let mut state = State::load(root, true)?;
    let mut total = Summary::default();
    let mut run_log: Option<RunLog> = None;
    let mut warned_unknown = BTreeSet::new();
    for round in 0..MAX_ROUNDS {
        let entries = snapshot(root)?;
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
        let interrupted = state.pairs.values().any(|p| p.result == Outcome::InProgress);
        if intents.is_empty() && !(round == 0 && interrupted) {
            break; // the no-op path: a lock, the spool and the state, nothing else
        }
        let inventory = inventory::scan(root, config)?;
        let plan = planner::plan(&planner::Input {
            intents: &intents,
            inventory: &inventory,
            state: &state,
            config,
            retry_failed: opts.retry_failed,
        });
        for n in &plan.notes {
            log::info!("plan: {n}");
        }
        if !plan.jobs.is_empty() {
            let rl = match &run_log {
                Some(r) => r.clone(),
                None => {
                    let r = new_run_log(root)?;
                    run_log = Some(r.clone());
                    r
                }
            };
            let ctx = Context {
                root,
                config,
                dkms: crate::backend::Dkms { program: config.dkms.clone(), root: root.clone() },
                inventory: &inventory,
                run: &rl,
                jobs: opts.jobs.unwrap_or(if config.jobs == 0 { cpus() } else { config.jobs as usize }),
                cpus: cpus(),
                added_kernels: intents
                    .iter()
                    .filter_map(|i| if let Intent::KernelAdded { kernel } = i { Some(kernel.clone()) } else { None })
                    .collect(),
            };
            let s = executor::execute(&ctx, &plan, &mut state)?;
            merge(&mut total, s, &plan);
        }
        // Remove what this round handled, keep what it deferred, and see whether hooks recorded
        // anything new in the meantime.
        let mut locked = spool::lock(root)?;
        let mut s = locked.load()?;
        for w in std::mem::take(&mut locked.warnings) {
            ui::warn(w);
        }
        s.remove_handled(&handled);
        let now = clock::now_ms();
        for k in &plan.keep {
            s.add(k, Some(DEFERRED_SOURCE), now);
        }
        locked.store(&s)?;
        let fresh = s.entries.iter().any(|e| e.intent().is_ok_and(|i| !plan.keep.contains(&i)));
        drop(locked);
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

fn dry_run(root: &Root, config: &Config, opts: &Options) -> Result<Code> {
    let (s, problem) = spool::read(root)?;
    if let Some(p) = problem {
        ui::warn(format!("the spool is unreadable ({p}); a real finalize would move it aside and rescan"));
    }
    let mut intents: Vec<Intent> = s.intents().map(|(_, i)| i).collect();
    if opts.rescan {
        intents.push(Intent::Rescan);
    }
    let state = State::load(root, false)?;
    let inventory = inventory::scan(root, config)?;
    let plan = planner::plan(&planner::Input {
        intents: &intents,
        inventory: &inventory,
        state: &state,
        config,
        retry_failed: opts.retry_failed,
    });
    print!("{plan}");
    Ok(Code::Ok)
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
    let groups: [(Outcome, &str); 5] = [
        (Outcome::Installed, "installed"),
        (Outcome::Failed, "failed"),
        (Outcome::Unsupported, "unsupported"),
        (Outcome::Deferred, "deferred"),
        (Outcome::Skipped, "skipped"),
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
    std::fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(RunLog { id, dir })
}

use std::os::unix::fs::DirBuilderExt;

/// Keeps the newest `keep` run directories (run ids sort by time).
fn rotate_logs(root: &Root, keep: usize) {
    let base = root.path(paths::LOG_DIR);
    let Ok(rd) = std::fs::read_dir(&base) else { return };
    let mut runs: Vec<_> = rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
    runs.sort();
    let n = runs.len().saturating_sub(keep);
    for old in &runs[..n] {
        let _ = std::fs::remove_dir_all(old);
    }
}

/// CPUs available to this process.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
