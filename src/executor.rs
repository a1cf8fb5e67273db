//! Runs a plan with the real dkms: jobs of one module one after the other, different modules in
//! parallel (BUILD_DEPENDS respected), a per-job timeout, the state updated after every job, then one
//! depmod and at most one initramfs update per kernel where something changed.

use crate::backend::{Deadline, Dkms, Step, Target};
use crate::clock;
use crate::config::{Config, Initramfs, Policy};
use crate::inventory::Inventory;
use crate::paths;
use crate::plan::{Action, EventClass, Job, Plan, SkipKind};
use crate::root::Root;
use crate::runner::Cmd;
use crate::state::{Outcome, PairKey, PairState, State};
use crate::ui;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
}

/// What the executor needs besides the plan.
pub struct Context<'a> {
    pub root: &'a Root,
    pub config: &'a Config,
    pub dkms: Dkms,
    pub inventory: &'a Inventory,
    pub run: &'a RunLog,
    /// Modules built at once (config `jobs`, or the CPU count).
    pub jobs: usize,
    pub cpus: usize,
    /// Kernels installed in this transaction: their initramfs was made before their modules.
    pub added_kernels: BTreeSet<String>,
}

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
}

/// One unit of work for a worker thread.
enum Task {
    Job(usize),
    Post(String),
}

struct Done {
    task: Task,
    outcome: Outcome,
    detail: Option<String>,
    duration: Duration,
    /// The kernel's installed modules changed (something unbuilt, uninstalled or installed).
    changed: bool,
    built: bool,
    post: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    Finished(bool),
}

/// Executes `plan`, updating and storing `state` after every job.
pub fn execute(ctx: &Context, plan: &Plan, state: &mut State) -> Result<Summary> {
    let mut sum = Summary::default();
    let now = clock::now_ms();
    // Jobs that run nothing are recorded at once.
    for (i, j) in plan.jobs.iter().enumerate().filter(|(_, j)| !j.action.builds()) {
        let (outcome, detail) = match &j.action {
            Action::Skip { kind: SkipKind::Unsupported, detail } => (Outcome::Unsupported, detail.clone()),
            Action::Skip { kind, detail } => (Outcome::Skipped, format!("{}: {detail}", crate::plan::skip_word(*kind))),
            Action::Deferred { waiting_for } => (Outcome::Deferred, format!("waiting for {}", waiting_for.join(", "))),
            Action::Fail { reason } => (Outcome::Failed, reason.clone()),
            _ => unreachable!(),
        };
        let previous = state.get(&j.module, &j.version, &j.kernel, &j.arch).map(|p| p.result);
        let report =
            JobReport { index: i, outcome, detail: Some(detail), log: None, duration: Duration::ZERO, error: false };
        let report = announce(ctx, j, report, None, previous);
        record(state, j, &report, ctx.run, now);
        if report.error {
            sum.errors += 1;
        }
        sum.reports.push(report);
    }
    state.store(ctx.root)?;

    let builds: Vec<usize> = (0..plan.jobs.len()).filter(|i| plan.jobs[*i].action.builds()).collect();
    let total = builds.len();
    let mut status: BTreeMap<usize, Status> = builds.iter().map(|i| (*i, Status::Waiting)).collect();
    let mut busy_modules: BTreeSet<String> = BTreeSet::new();
    let mut kernel_changed: BTreeMap<String, bool> = BTreeMap::new();
    let mut kernel_ok: BTreeMap<String, usize> = BTreeMap::new();
    let mut post_started: BTreeSet<String> = BTreeSet::new();
    let mut running = 0usize;
    let mut finished = 0usize;
    // Without a signing key, the first build generates it: let it run alone (dkms takes no lock).
    let mut key_gate = !signing_key_present(ctx.root);
    let dependents = dependents_count(plan);
    let weight = source_sizes(ctx, plan);

    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::channel::<Done>();
        loop {
            // Start whatever may start.
            while running < ctx.jobs.max(1) {
                // Dependents of a failed job fail without running.
                let blocked: Vec<(usize, String)> = status
                    .iter()
                    .filter(|(_, s)| **s == Status::Waiting)
                    .filter_map(|(i, _)| {
                        let j = &plan.jobs[*i];
                        j.after
                            .iter()
                            .find(|a| status.get(a) == Some(&Status::Finished(false)))
                            .map(|a| (*i, plan.jobs[*a].module.clone()))
                    })
                    .collect();
                for (i, dep) in blocked {
                    let j = &plan.jobs[i];
                    let previous = state.get(&j.module, &j.version, &j.kernel, &j.arch).map(|p| p.result);
                    finished += 1;
                    let report = JobReport {
                        index: i,
                        outcome: Outcome::Failed,
                        detail: Some(format!("dependency {dep} failed for {}", j.kernel)),
                        log: None,
                        duration: Duration::ZERO,
                        error: false,
                    };
                    let report = announce(ctx, j, report, Some((finished, total)), previous);
                    record(state, j, &report, ctx.run, clock::now_ms());
                    state.store(ctx.root)?;
                    if report.error {
                        sum.errors += 1;
                    }
                    status.insert(i, Status::Finished(false));
                    sum.reports.push(report);
                }
                if let Some(k) = next_post(plan, &status, &post_started) {
                    post_started.insert(k.clone());
                    if kernel_changed.get(&k).copied().unwrap_or(false) {
                        let initramfs = plan.kernels.get(&k).is_some_and(|s| s.initramfs)
                            && kernel_ok.get(&k).copied().unwrap_or(0) > 0;
                        let changed_jobs: Vec<&Job> =
                            plan.jobs.iter().filter(|j| j.kernel == k && j.action.builds()).collect();
                        let tx = tx.clone();
                        running += 1;
                        let k2 = k.clone();
                        scope.spawn(move || {
                            let done = run_post(ctx, &k2, initramfs, &changed_jobs);
                            let _ = tx.send(done);
                        });
                    }
                    continue;
                }
                if key_gate && running > 0 {
                    break;
                }
                let ready: Option<usize> = status
                    .iter()
                    .filter(|(_, s)| **s == Status::Waiting)
                    .map(|(i, _)| *i)
                    .filter(|i| {
                        let j = &plan.jobs[*i];
                        !busy_modules.contains(&j.module)
                            && j.after.iter().all(|a| status.get(a) == Some(&Status::Finished(true)))
                    })
                    .max_by_key(|i| {
                        // Long chains first: jobs others wait for, then modules with many kernels
                        // left, then the biggest sources, so that the last jobs, which run with
                        // cores to spare, are short ones.
                        let j = &plan.jobs[*i];
                        let left = status
                            .iter()
                            .filter(|(x, s)| **s == Status::Waiting && plan.jobs[**x].module == j.module)
                            .count();
                        (dependents[*i] * 2 + left, weight[*i], std::cmp::Reverse(*i))
                    });
                let Some(i) = ready else { break };
                let j = &plan.jobs[i];
                mark_in_progress(state, j, ctx.run);
                state.store(ctx.root)?;
                status.insert(i, Status::Running);
                busy_modules.insert(j.module.clone());
                running += 1;
                let remaining = status.values().filter(|s| matches!(s, Status::Waiting | Status::Running)).count();
                let make_jobs = match ctx.config.make_jobs {
                    0 => (ctx.cpus / remaining.min(ctx.jobs).max(1)).max(1) as u32,
                    n => n,
                };
                let tx = tx.clone();
                scope.spawn(move || {
                    let done = run_job(ctx, i, &plan.jobs[i], make_jobs);
                    let _ = tx.send(done);
                });
            }
            if running == 0 {
                let waiting = status.values().any(|s| *s == Status::Waiting);
                let posts_left = next_post(plan, &status, &post_started).is_some();
                if !waiting && !posts_left {
                    break;
                }
                if waiting && !posts_left {
                    // Nothing can start and nothing runs: only a dependency on a job that will
                    // never finish could cause this; the planner orders jobs so it cannot happen.
                    anyhow::bail!("internal error: jobs left that can never start");
                }
                continue;
            }
            let done = rx.recv().expect("workers report");
            running -= 1;
            match done.task {
                Task::Post(k) => {
                    sum.depmod.extend(done.post.iter().filter(|p| p.starts_with("depmod")).map(|_| k.clone()));
                    sum.initramfs.extend(done.post.iter().filter(|p| p.starts_with("initramfs")).map(|_| k.clone()));
                    if let Some(d) = &done.detail {
                        sum.warnings += 1;
                        ui::warn(format!("after building for {k}: {d}"));
                    }
                }
                Task::Job(i) => {
                    key_gate = false;
                    let j = &plan.jobs[i];
                    busy_modules.remove(&j.module);
                    finished += 1;
                    let ok = done.outcome == Outcome::Installed;
                    if done.changed {
                        kernel_changed.insert(j.kernel.clone(), true);
                    }
                    if ok {
                        *kernel_ok.entry(j.kernel.clone()).or_default() += 1;
                    }
                    if done.built {
                        sum.dkms_builds += 1;
                    }
                    status.insert(i, Status::Finished(ok));
                    let previous = state.get(&j.module, &j.version, &j.kernel, &j.arch).map(|p| p.result);
                    let log = ctx
                        .root
                        .inside(&ctx.run.job_log(j))
                        .map(|p| p.to_string_lossy().trim_start_matches('/').to_string());
                    let report = JobReport {
                        index: i,
                        outcome: done.outcome,
                        detail: done.detail,
                        log,
                        duration: done.duration,
                        error: false,
                    };
                    let report = announce(ctx, j, report, Some((finished, total)), previous);
                    record(state, j, &report, ctx.run, clock::now_ms());
                    if let Action::ReplaceOldVersion { old } = &j.action {
                        if ok {
                            state.pairs.remove(&PairKey {
                                module: j.module.clone(),
                                version: old.clone(),
                                kernel: j.kernel.clone(),
                                arch: j.arch.clone(),
                            });
                        }
                    }
                    state.store(ctx.root)?;
                    if report.error {
                        sum.errors += 1;
                    }
                    sum.reports.push(report);
                }
            }
        }
        Ok(())
    })?;
    sum.warnings += sum.reports.iter().filter(|r| !r.error && r.outcome == Outcome::Failed).count();
    Ok(sum)
}

/// A kernel whose build jobs are all finished and whose post-steps have not started.
fn next_post(plan: &Plan, status: &BTreeMap<usize, Status>, started: &BTreeSet<String>) -> Option<String> {
    plan.kernels
        .keys()
        .find(|k| {
            !started.contains(*k)
                && plan
                    .jobs
                    .iter()
                    .enumerate()
                    .filter(|(_, j)| &j.kernel == *k && j.action.builds())
                    .all(|(i, _)| matches!(status.get(&i), Some(Status::Finished(_))))
        })
        .cloned()
}

/// How many jobs (transitively) wait for each job.
fn dependents_count(plan: &Plan) -> Vec<usize> {
    let mut count = vec![0usize; plan.jobs.len()];
    for (i, j) in plan.jobs.iter().enumerate() {
        let mut stack: Vec<usize> = j.after.clone();
        let mut seen = BTreeSet::new();
        while let Some(a) = stack.pop() {
            if seen.insert(a) {
                count[a] += 1;
                stack.extend(plan.jobs[a].after.iter().copied());
            }
        }
        let _ = i;
    }
    count
}

/// Per job, the size in bytes of its module's source tree (a stand-in for its build time; 0 when
/// unknown). Read once per module version; the trees are small, and nothing follows symlinks.
fn source_sizes(ctx: &Context, plan: &Plan) -> Vec<u64> {
    fn tree_size(dir: &Path, depth: usize) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() && depth < 8 => tree_size(&e.path(), depth + 1),
                Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => 0,
            })
            .sum()
    }
    let mut sizes: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    plan.jobs
        .iter()
        .map(|j| {
            *sizes.entry((&j.module, &j.version)).or_insert_with(|| {
                ctx.inventory
                    .modules
                    .get(&(j.module.clone(), j.version.clone()))
                    .and_then(|m| m.source.as_deref())
                    .map(|src| tree_size(&ctx.root.path(src), 0))
                    .unwrap_or(0)
            })
        })
        .collect()
}

fn signing_key_present(root: &Root) -> bool {
    ["mok.key", "mok.pub"].iter().all(|f| root.path(format!("{}/{f}", paths::DKMS_TREE)).exists())
}

fn mark_in_progress(state: &mut State, j: &Job, run: &RunLog) {
    let key = PairKey {
        module: j.module.clone(),
        version: j.version.clone(),
        kernel: j.kernel.clone(),
        arch: j.arch.clone(),
    };
    let previous = state.pairs.get(&key).cloned();
    state.pairs.insert(
        key,
        PairState {
            result: Outcome::InProgress,
            reason: Some(format!("{} started", j.action.verb())),
            time_ms: clock::now_ms(),
            run: Some(run.id.clone()),
            log: None,
            // Keep what was known, so an interrupted job does not forget the last good build.
            fingerprint: previous.and_then(|p| p.fingerprint),
        },
    );
}

fn record(state: &mut State, j: &Job, r: &JobReport, run: &RunLog, now: u64) {
    let key = PairKey {
        module: j.module.clone(),
        version: j.version.clone(),
        kernel: j.kernel.clone(),
        arch: j.arch.clone(),
    };
    let fingerprint = match r.outcome {
        Outcome::Installed | Outcome::Failed => j.print.clone(),
        _ => None,
    };
    state.pairs.insert(
        key,
        PairState {
            result: r.outcome,
            reason: r.detail.clone(),
            time_ms: now,
            run: Some(run.id.clone()),
            log: r.log.clone(),
            fingerprint,
        },
    );
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
            match policy {
                Policy::Warn => ui::warn(format!("{mv} failed for {}: {detail}{log}", j.kernel)),
                Policy::Error => {
                    eprintln!("error: {mv} failed for {}: {detail}{log}", j.kernel);
                    r.error = true;
                }
            }
        }
        Outcome::InProgress => {}
    }
    r
}

/// One build job, in a worker thread.
fn run_job(ctx: &Context, index: usize, j: &Job, make_jobs: u32) -> Done {
    let started = Instant::now();
    let mut done = Done {
        task: Task::Job(index),
        outcome: Outcome::Failed,
        detail: None,
        duration: Duration::ZERO,
        changed: false,
        built: false,
        post: Vec::new(),
    };
    let log = ctx.run.job_log(j);
    let result = job_steps(ctx, j, make_jobs, &log, &mut done);
    if let Err(e) = result {
        done.outcome = Outcome::Failed;
        done.detail = Some(format!("{e:#}"));
    }
    done.duration = started.elapsed();
    done
}

fn job_steps(ctx: &Context, j: &Job, make_jobs: u32, log: &Path, done: &mut Done) -> Result<()> {
    let deadline = Deadline(Instant::now() + Duration::from_secs(ctx.config.job_timeout));
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
    let registered = ctx.root.path(format!("{}/{}/{}/source", paths::DKMS_TREE, j.module, j.version)).exists();
    if j.register && !registered {
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
            // dkms's make.log is overwritten by the next build of the module: keep a copy.
            if let Some(ml) = &make_log {
                append_file(log, ml);
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
        other => return failed(done, format!("dkms install failed: {}", step_text(&other))),
    }
    Ok(())
}

fn failed(done: &mut Done, why: String) -> Result<()> {
    done.outcome = Outcome::Failed;
    done.detail = Some(why);
    Ok(())
}

fn step_text(s: &Step) -> String {
    match s {
        Step::Ok => "ok".into(),
        Step::Unsupported(w) | Step::NoHeaders(w) | Step::DependencyMissing(w) | Step::Failed(w) => w.clone(),
        Step::BuildFailed { reason, .. } => reason.clone(),
    }
}

fn append_file(log: &Path, extra: &Path) {
    use std::io::Write;
    if let (Ok(text), Ok(mut f)) = (std::fs::read(extra), std::fs::OpenOptions::new().append(true).open(log)) {
        let _ = writeln!(f, "# --- {} ---", extra.display());
        let _ = f.write_all(&text);
    }
}

/// depmod, then the initramfs when it contains a changed module (or was made before them).
fn run_post(ctx: &Context, kernel: &str, initramfs_allowed: bool, jobs: &[&Job]) -> Done {
    let started = Instant::now();
    let mut done = Done {
        task: Task::Post(kernel.to_string()),
        outcome: Outcome::Installed,
        detail: None,
        duration: Duration::ZERO,
        changed: false,
        built: false,
        post: Vec::new(),
    };
    let log = ctx.run.dir.join(format!("post-{kernel}.log"));
    let timeout = Duration::from_secs(ctx.config.job_timeout);
    let mut depmod = Cmd::new(&ctx.config.depmod);
    if !ctx.root.is_host() {
        depmod = depmod.arg("-b").arg(ctx.root.dir());
    }
    match depmod.args(["-a", kernel]).timeout(timeout).run(&log) {
        Ok(r) if r.ok() => done.post.push("depmod".into()),
        Ok(r) => done.detail = Some(format!("depmod failed: {}", r.explain())),
        Err(e) => done.detail = Some(format!("{e:#}")),
    }
    if initramfs_allowed {
        match initramfs_command(ctx, kernel, jobs, &log) {
            Ok(Some(cmd)) => match cmd.timeout(timeout).run(&log) {
                Ok(r) if r.ok() => done.post.push("initramfs".into()),
                Ok(r) => done.detail = Some(format!("initramfs update failed: {}", r.explain())),
                Err(e) => done.detail = Some(format!("{e:#}")),
            },
            Ok(None) => {}
            Err(e) => done.detail = Some(format!("{e:#}")),
        }
    }
    done.duration = started.elapsed();
    done
}

/// The initramfs update command for `kernel`, or None when none is needed or none applies.
fn initramfs_command(ctx: &Context, kernel: &str, jobs: &[&Job], log: &Path) -> Result<Option<Cmd>> {
    if !ctx.root.is_host() {
        log::info!(
            "not updating the initramfs of {kernel}: the root is not / (initramfs tools act on the running system)"
        );
        return Ok(None);
    }
    let Some(image) = ctx.inventory.kernels.get(kernel).and_then(|k| k.initramfs.clone()) else { return Ok(None) };
    let image = ctx.root.path(&image);
    let tool = match ctx.config.initramfs {
        Initramfs::Never => return Ok(None),
        Initramfs::UpdateInitramfs => Initramfs::UpdateInitramfs,
        Initramfs::Dracut => Initramfs::Dracut,
        Initramfs::Auto => {
            if ctx.root.path("usr/bin/mkinitcpio").exists() {
                return Ok(None); // Arch: mkinitcpio's own pacman hook regenerates images
            } else if ctx.root.path("usr/sbin/update-initramfs").exists() {
                Initramfs::UpdateInitramfs
            } else if ctx.root.path("usr/bin/dracut").exists() || ctx.root.path("usr/sbin/dracut").exists() {
                Initramfs::Dracut
            } else {
                return Ok(None);
            }
        }
    };
    let needed = ctx.added_kernels.contains(kernel) || image_contains_changed_module(ctx, tool, &image, jobs, log);
    if !needed {
        log::info!("initramfs of {kernel} contains none of the changed modules; not updated");
        return Ok(None);
    }
    Ok(Some(match tool {
        Initramfs::UpdateInitramfs => Cmd::new("update-initramfs").args(["-u", "-k", kernel]),
        _ => Cmd::new("dracut").args(["--force", "--kver", kernel]),
    }))
}

/// Whether any module file the jobs touched is inside the image (listing failures count as yes).
fn image_contains_changed_module(ctx: &Context, tool: Initramfs, image: &Path, jobs: &[&Job], log: &Path) -> bool {
    let lister = if tool == Initramfs::UpdateInitramfs { "lsinitramfs" } else { "lsinitrd" };
    let listing = ctx.run.dir.join(format!(
        "initramfs-list-{}.txt",
        image.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let Ok(r) = Cmd::new(lister).arg(image).run(&listing) else { return true };
    if !r.ok() {
        let _ = std::fs::write(log, format!("# {} failed; updating the initramfs to be safe\n", r.command));
        return true;
    }
    let text = std::fs::read_to_string(&listing).unwrap_or_default();
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
    text.lines().any(|l| {
        let file = l.rsplit('/').next().unwrap_or(l);
        names.iter().any(|n| file.strip_prefix(n.as_str()).is_some_and(|rest| rest.starts_with(".ko")))
    })
}
