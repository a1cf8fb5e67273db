//! The evaluation itself: which files each module sources for which kernel (a `Recipe` per
//! module, a `Pass` per kernel context), the input of the bash evaluator (`batch`), batches spread
//! over bash processes, and the values read back assembled into `Evaluated`.

use super::recipe::{recipe, running_kernel, Dialect, OverrideDir, Pass, Recipe};
use super::{batch, Autoinstall, ConfValues, Evaluated, KernelContext, Options, Request};
use crate::runner::Cmd;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Evaluates every request; results are in request order.
///
/// Each module's dkms.conf and the override files that exist in `override_dir` (M.conf,
/// M-V.conf, M-V-K.conf, M-V-K-A.conf, and M--K.conf, M--K-A.conf for dkms >= 3.1.6) are
/// sourced by bash through a copy of dkms's safe_source, with dkms's variables set; the values
/// returned are those dkms would hold afterwards, quirks included:
/// - safe_source re-reads each value through an unquoted `echo NAME[i]="value"`: runs of blanks
///   and newlines become one space, `$`, backquotes and `\` are expanded again, and a value
///   with an odd number of `"` loses every variable dkms carries after it;
/// - CRLF: dkms 3.0.10 keeps the `\r` (measured: `dkms add` of a CRLF dkms.conf succeeds, then
///   `dkms build` fails with 7, "Build of hello\r.ko failed"), so the values here keep it too;
///   dkms >= 3.1.5 strips one trailing `\r` from each value, and so does this with that version.
///   A CRLF `if ...; then` never ends (`then\r` is no keyword): what came before it stays;
/// - nothing looks at how the sourcing ended, as in dkms: a syntax error in a late line, an
///   unterminated quote at the end, a failing command (mid-file or last) keep whatever was
///   assigned before them, and what comes after is never run; output on stdout and stderr is
///   discarded; a file that calls `exit` contributes nothing (dkms's subshell ends before it
///   prints the values), so a dkms.conf that exits has no PACKAGE_NAME and is refused;
/// - refused (`Err`) exactly where the dkms that will build refuses the values (read_conf fails,
///   `dkms add`/`build` exit 8): no PACKAGE_NAME or PACKAGE_VERSION (every version, and for an
///   unknown version only these); for a known version also a module record without
///   BUILT_MODULE_NAME (PACKAGE_NAME stands in for a single record) or DEST_MODULE_LOCATION, a
///   name ending in .o/.ko, a location outside /kernel, /updates, /extra, and the version's own
///   rules (`Dialect`: no record at all before 3.0.11, sparse records from 3.2.2, array lengths
///   and AUTOINSTALL yes/no from 3.1.7, NO_WEAK_MODULES and BUILD_DEPENDS_REBUILD yes/no from
///   3.2.0). A refused generic evaluation fails the whole module (a plain `dkms add` refuses
///   it); a refused kernel (its M-V-K*.conf, or a conf that reads the kernel) only that kernel;
/// - `excluded`: dkms's own tests, in bash: BUILD_EXCLUSIVE_KERNEL and _ARCH as `=~` regexes
///   (an invalid regex excludes, as in dkms), _KERNEL_MIN/_MAX compared as dkms's VER() strings,
///   OBSOLETE_BY standing in for an unset _KERNEL_MAX (dkms 3.1.8; applied for every version,
///   since 3.0.10 refuses to install such a module anyway), BUILD_EXCLUSIVE_CONFIG against the
///   kernel's `kernel_config` (see `Shared::config_exclusion`); reasons joined with "; ".
///
/// The environment is the runner's: PATH, LC_ALL=C (so `=~` and `<` compare bytes, where dkms
/// would use the caller's locale) and `pass_environment`; stdin is /dev/null, the working
/// directory `/`. A module is evaluated once for every kernel when its base files (dkms.conf, M.conf, M-V.conf) provably
/// cannot see the kernel (see `scan`); kernels with M-V-K*.conf files then source just those on
/// top. Otherwise one bash evaluates every kernel in turn. Bash processes take several modules
/// each, up to `parallel` at a time. When one evaluation (a module, or a module for one kernel)
/// takes longer than `timeout`, its bash is killed with its process group, that module (or that
/// module for that kernel) gets "timed out after N s", and what remained goes to a new bash.
pub fn evaluate(requests: &[Request], opts: &Options) -> Vec<Result<Evaluated, String>> {
    if requests.is_empty() {
        return Vec::new();
    }
    let dialect = Dialect::new(opts.dkms_version.as_deref());
    let running = running_kernel(&opts.install_tree);
    let overrides = OverrideDir::read(&opts.root, &opts.override_dir);
    let mut kernels = Vec::new();
    let plans: Vec<Result<Recipe, String>> =
        requests.iter().map(|r| recipe(r, &running, &overrides, dialect, &mut kernels)).collect();
    // safe_source rewrites a temporary file per file sourced, then sources it: a private
    // directory on tmpfs when there is one, never under a $TMPDIR the caller chose.
    let tmp = match crate::root::scratch_dir("dkms-trigger-conf.") {
        Ok(t) => t,
        Err(e) => return requests.iter().map(|_| Err(format!("cannot create a temporary directory: {e}"))).collect(),
    };
    let shared = Shared {
        opts,
        dialect,
        header: header(opts, dialect, tmp.path(), &running, &kernels),
        scratch: tmp.path(),
        kernels,
        requests,
        recipes: &plans,
        configs: Mutex::new(HashMap::new()),
    };
    let jobs = plans
        .iter()
        .enumerate()
        .filter_map(|(req, p)| p.as_ref().ok().map(|p| Work { req, ctxs: (0..p.ctxs.len()).collect() }))
        .collect();
    let partials = shared.run_all(jobs);
    requests
        .iter()
        .zip(plans.iter())
        .zip(partials)
        .map(|((req, plan), part)| assemble(req, plan.as_ref()?, part))
        .collect()
}

fn push(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(bytes);
    buf.push(0);
}

fn push_path(buf: &mut Vec<u8>, path: &Path) {
    push(buf, path.as_os_str().as_bytes());
}

/// "1 2 3": one input token for a list of numbers, which bash splits in one assignment.
fn numbers(list: impl Iterator<Item = usize>) -> String {
    list.map(|n| n.to_string()).collect::<Vec<_>>().join(" ")
}

fn flag(on: bool) -> &'static [u8] {
    if on {
        b"1"
    } else {
        b""
    }
}

/// The part of the evaluator's input shared by every batch (layout in `batch`).
fn header(opts: &Options, dialect: Dialect, tmp: &Path, running: &KernelContext, kernels: &[KernelContext]) -> Vec<u8> {
    let mut buf = Vec::new();
    push(&mut buf, dialect.variables().as_bytes());
    push(&mut buf, flag(dialect.strip_cr));
    push(&mut buf, flag(dialect.conf_build_exclude));
    push(&mut buf, flag(dialect.records));
    push(&mut buf, flag(dialect.dest_required));
    push(&mut buf, flag(dialect.sparse_records));
    push(&mut buf, flag(dialect.length_check));
    push(&mut buf, flag(dialect.strict_autoinstall));
    push(&mut buf, flag(dialect.strict_no_weak));
    push_path(&mut buf, tmp);
    push_path(&mut buf, opts.os_release.as_deref().unwrap_or(Path::new("")));
    push(&mut buf, running.kernelver.as_bytes());
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    push(&mut buf, jobs.to_string().as_bytes());
    push_path(&mut buf, &opts.dkms_tree);
    push_path(&mut buf, &opts.source_tree);
    push_path(&mut buf, &opts.install_tree);
    push(&mut buf, kernels.len().to_string().as_bytes());
    for k in kernels {
        push(&mut buf, k.kernelver.as_bytes());
        push(&mut buf, k.arch.as_bytes());
        push_path(&mut buf, &k.kernel_source_dir);
        push_path(&mut buf, &k.kernel_config);
    }
    buf
}

/// Some contexts of one request, for one bash.
#[derive(Debug, Clone)]
struct Work {
    req: usize,
    ctxs: Vec<usize>,
}

/// A variable as the evaluator printed it.
#[derive(Debug, Default)]
struct Var {
    /// Element 0, what dkms reads as `$NAME`; None when unset.
    first: Option<String>,
    /// Every element, in index order.
    all: Vec<String>,
}

type Vars = BTreeMap<String, Var>;

/// What came back for one request so far.
#[derive(Default)]
struct Partial {
    /// The module as a whole failed.
    failed: Option<String>,
    /// The values shared by all contexts of a kernel-independent module (only within a batch).
    base: Option<Vars>,
    ctx: BTreeMap<usize, Result<ConfValues, String>>,
}

struct Shared<'a> {
    opts: &'a Options,
    dialect: Dialect,
    header: Vec<u8>,
    /// The evaluator's scratch directory (safe_source's temporary files).
    scratch: &'a Path,
    kernels: Vec<KernelContext>,
    requests: &'a [Request],
    recipes: &'a [Result<Recipe, String>],
    /// Per kernel config path: the names set to y or m; None when there is no such file.
    configs: Mutex<HashMap<PathBuf, Option<Arc<HashSet<String>>>>>,
}

impl Shared<'_> {
    fn recipe(&self, req: usize) -> &Recipe {
        self.recipes[req].as_ref().expect("only planned requests become jobs")
    }

    fn run_all(&self, jobs: VecDeque<Work>) -> Vec<Partial> {
        let workers = self.opts.parallel.clamp(1, jobs.len().max(1));
        // Several batches per worker: a slow batch does not leave the other workers idle.
        let chunk = jobs.len().div_ceil(workers * 4).max(1);
        let queue = Mutex::new(jobs);
        let results = Mutex::new((0..self.requests.len()).map(|_| Partial::default()).collect::<Vec<_>>());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let batch: Vec<Work> = {
                        let mut q = queue.lock().expect("queue lock");
                        let n = chunk.min(q.len());
                        q.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        break;
                    }
                    let (parts, requeue) = self.run_batch(&batch);
                    let mut all = results.lock().expect("results lock");
                    for (job, part) in batch.iter().zip(parts) {
                        let into = &mut all[job.req];
                        into.failed = into.failed.take().or(part.failed);
                        into.ctx.extend(part.ctx);
                    }
                    drop(all);
                    let mut q = queue.lock().expect("queue lock");
                    for job in requeue.into_iter().rev() {
                        q.push_front(job);
                    }
                });
            }
        });
        results.into_inner().expect("results lock")
    }

    /// Runs one bash over `batch`; returns what it produced and the jobs to run again.
    fn run_batch(&self, batch: &[Work]) -> (Vec<Partial>, Vec<Work>) {
        let mut input = self.header.clone();
        for (pos, job) in batch.iter().enumerate() {
            let (req, plan) = (&self.requests[job.req], self.recipe(job.req));
            push(&mut input, pos.to_string().as_bytes());
            push(&mut input, req.module.as_bytes());
            push(&mut input, req.version.as_bytes());
            push(&mut input, flag(plan.independent));
            push(&mut input, plan.base.len().to_string().as_bytes());
            plan.base.iter().for_each(|f| push_path(&mut input, f));
            let ctxs: Vec<(usize, &Pass)> = job.ctxs.iter().map(|&c| (c, &plan.ctxs[c])).collect();
            let offsets = ctxs.iter().scan(0, |at, (_, ctx)| {
                *at += ctx.files.len();
                Some(*at - ctx.files.len())
            });
            let files: Vec<&PathBuf> = ctxs.iter().flat_map(|(_, ctx)| &ctx.files).collect();
            push(&mut input, numbers(ctxs.iter().map(|(c, _)| *c)).as_bytes());
            push(&mut input, numbers(ctxs.iter().map(|(_, ctx)| ctx.kernel)).as_bytes());
            push(&mut input, numbers(ctxs.iter().map(|(_, ctx)| ctx.files.len())).as_bytes());
            push(&mut input, numbers(offsets).as_bytes());
            push(&mut input, files.len().to_string().as_bytes());
            files.iter().for_each(|f| push_path(&mut input, f));
        }
        let mut parts: Vec<Partial> = batch.iter().map(|_| Partial::default()).collect();
        let mut current = None;
        let run = batch::run(&input, self.opts.timeout, &mut |rec| self.record(batch, &mut parts, &mut current, rec));
        let requeue = self.settle(batch, &mut parts, current, run);
        // Without it every conf reads as empty: say so rather than blame the confs.
        if !crate::root::Root::host().is_dir(self.scratch) {
            let why = format!("the evaluator's scratch directory {} was removed while it ran", self.scratch.display());
            parts.iter_mut().for_each(|p| p.failed = Some(why.clone()));
        }
        (parts, requeue)
    }

    fn record(&self, batch: &[Work], parts: &mut [Partial], current: &mut Option<usize>, rec: batch::Record) {
        let Some((head, body)) = rec.split_first() else { return };
        let Some((&tag, arg)) = head.split_first() else { return };
        if tag == b'm' {
            *current = parse_index(arg).filter(|&pos| pos < batch.len());
            return;
        }
        let Some(pos) = *current else { return };
        let part = &mut parts[pos];
        match tag {
            b'F' => part.failed = Some(text(arg)),
            b'b' => part.base = Some(parse_vars(body)),
            b'r' => {
                if let Some(ctx) = parse_index(arg).filter(|&c| c < self.recipe(batch[pos].req).ctxs.len()) {
                    let result = self.context(batch[pos].req, ctx, part.base.as_ref(), body);
                    part.ctx.insert(ctx, result);
                }
            }
            // The evaluator writes no other record.
            _ => {}
        }
    }

    fn context(&self, req: usize, ctx: usize, base: Option<&Vars>, body: &[Vec<u8>]) -> Result<ConfValues, String> {
        let mut same = false;
        let mut excluded = Vec::new();
        for token in body {
            match token.split_first() {
                Some((b'f', reason)) => return Err(text(reason)),
                Some((b's', _)) => same = true,
                Some((b'x', reason)) => excluded.push(text(reason)),
                _ => {}
            }
        }
        let own;
        let vars = if same {
            base.ok_or("the evaluator referred to shared values it did not send")?
        } else {
            own = parse_vars(body);
            &own
        };
        let kernel = &self.kernels[self.recipe(req).ctxs[ctx].kernel];
        self.values(vars, excluded, kernel, &self.requests[req].conf)
    }

    fn values(
        &self,
        vars: &Vars,
        mut excluded: Vec<String>,
        kernel: &KernelContext,
        conf: &Path,
    ) -> Result<ConfValues, String> {
        let scalar = |name: &str| vars.get(name).and_then(|v| v.first.clone()).unwrap_or_default();
        let array = |name: &str| vars.get(name).map(|v| v.all.clone()).unwrap_or_default();
        let some = |s: String| (!s.is_empty()).then_some(s);
        let package_name = scalar("PACKAGE_NAME");
        let package_version = scalar("PACKAGE_VERSION");
        for (name, value) in [("PACKAGE_NAME", &package_name), ("PACKAGE_VERSION", &package_version)] {
            if value.is_empty() {
                return Err(format!("{} sets no {name}", conf.display()));
            }
        }
        // autoinstall runs `for d in ${build_depends[$m]}` over the joined array: split on blanks.
        let build_depends = array("BUILD_DEPENDS")
            .join(" ")
            .split([' ', '\t', '\n'])
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
        let build_exclusive_config = some(scalar("BUILD_EXCLUSIVE_CONFIG"));
        if let Some(config) = &build_exclusive_config {
            excluded.extend(self.config_exclusion(config, kernel));
        }
        let no_weak = scalar("NO_WEAK_MODULES");
        Ok(ConfValues {
            package_name,
            package_version,
            autoinstall: Autoinstall::classify(&scalar("AUTOINSTALL")),
            build_depends,
            build_exclusive_kernel: some(scalar("BUILD_EXCLUSIVE_KERNEL")),
            build_exclusive_arch: some(scalar("BUILD_EXCLUSIVE_ARCH")),
            build_exclusive_config,
            build_exclusive_kernel_min: some(scalar("BUILD_EXCLUSIVE_KERNEL_MIN")),
            build_exclusive_kernel_max: some(scalar("BUILD_EXCLUSIVE_KERNEL_MAX"))
                .or_else(|| some(scalar("OBSOLETE_BY"))),
            built_module_name: array("BUILT_MODULE_NAME"),
            dest_module_location: array("DEST_MODULE_LOCATION"),
            no_weak_modules: if self.dialect.strict_no_weak {
                no_weak.eq_ignore_ascii_case("yes")
            } else {
                !no_weak.is_empty()
            },
            excluded: (!excluded.is_empty()).then(|| excluded.join("; ")),
        })
    }

    /// read_conf's BUILD_EXCLUSIVE_CONFIG test, done here so that each kernel's config is read
    /// once for all modules: `for kconf in $BUILD_EXCLUSIVE_CONFIG` (split on blanks, without
    /// bash's pathname expansion), `!NAME` excludes when `^NAME=[ym]` matches a line of the
    /// config, `NAME` when none does; no test when the config does not exist. dkms 3.0.10 greps
    /// `$kernel_source_dir/.config`, later ones `$kernel_config`: the same file unless a caller
    /// says otherwise, and `kernel_config` is used here.
    fn config_exclusion(&self, value: &str, kernel: &KernelContext) -> Vec<String> {
        let path = &kernel.kernel_config;
        let Some(enabled) = self.enabled_options(path) else { return Vec::new() };
        value
            .split([' ', '\t', '\n'])
            .filter(|t| !t.is_empty())
            .filter_map(|token| {
                let (negated, name) = token.strip_prefix('!').map_or((false, token), |n| (true, n));
                match (negated, self.option_enabled(&enabled, name, path)) {
                    (true, true) => {
                        Some(format!("BUILD_EXCLUSIVE_CONFIG '{token}': {name} is set in {}", path.display()))
                    }
                    (false, false) => {
                        Some(format!("BUILD_EXCLUSIVE_CONFIG '{token}': {name} is not set in {}", path.display()))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    fn enabled_options(&self, path: &Path) -> Option<Arc<HashSet<String>>> {
        let mut cache = self.configs.lock().expect("config cache lock");
        cache
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                if !self.opts.root.exists(path) {
                    return None;
                }
                // An unreadable config is what a failing grep sees: nothing set.
                let text = self.opts.root.read(path).unwrap_or_default();
                let names = text
                    .split(|&b| b == b'\n')
                    .filter_map(|line| {
                        let eq = line.iter().position(|&b| b == b'=')?;
                        matches!(line.get(eq + 1), Some(b'y' | b'm'))
                            .then(|| String::from_utf8_lossy(&line[..eq]).into_owned())
                    })
                    .collect();
                Some(Arc::new(names))
            })
            .clone()
    }

    /// Whether `^NAME=[ym]` matches a line: a lookup for a plain option name, grep as dkms runs
    /// it for anything else (a pattern, a stray `\r`).
    fn option_enabled(&self, enabled: &HashSet<String>, name: &str, path: &Path) -> bool {
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return enabled.contains(name);
        }
        let mut grep = Cmd::new("grep").arg("-q");
        if self.dialect.config_ere {
            grep = grep.arg("-E");
        }
        grep.arg("-e").arg(format!("^{name}=[ym]")).arg(path).env("PATH", batch::PATH).env("LC_ALL", "C").succeeds()
    }

    /// After a run, whatever it left unfinished is failed or queued again: a hung or crashing
    /// conf costs its own module (or its own kernel), never the other modules of the batch.
    fn settle(&self, batch: &[Work], parts: &mut [Partial], current: Option<usize>, run: batch::Run) -> Vec<Work> {
        let why = match run.end {
            batch::End::Spawn(e) => {
                parts.iter_mut().for_each(|p| p.failed = Some(e.clone()));
                return Vec::new();
            }
            batch::End::TimedOut => format!("timed out after {} s", seconds(self.opts.timeout)),
            batch::End::Eof => format!("the evaluator exited early ({})", run.status),
        };
        let reason = |job: &Work| format!("evaluating {}: {why}", self.requests[job.req].conf.display());
        let Some(cur) = current else {
            // Nothing started (bash itself failed): retrying would fail the same way.
            for (job, part) in batch.iter().zip(parts.iter_mut()) {
                part.failed = Some(reason(job));
            }
            return Vec::new();
        };
        let (job, part) = (&batch[cur], &mut parts[cur]);
        let pending: Vec<usize> = job.ctxs.iter().copied().filter(|c| !part.ctx.contains_key(c)).collect();
        let mut requeue = Vec::new();
        if let (None, Some((&stuck, rest))) = (&part.failed, pending.split_first()) {
            if stuck == 0 || (self.recipe(job.req).independent && part.base.is_none()) {
                part.failed = Some(reason(job));
            } else {
                part.ctx.insert(stuck, Err(reason(job)));
                if !rest.is_empty() {
                    requeue.push(Work { req: job.req, ctxs: rest.to_vec() });
                }
            }
        }
        requeue.extend(batch[cur + 1..].iter().cloned());
        requeue
    }
}

fn assemble(req: &Request, plan: &Recipe, mut part: Partial) -> Result<Evaluated, String> {
    if let Some(failed) = part.failed {
        return Err(failed);
    }
    let mut take = |ctx: usize| {
        part.ctx.remove(&ctx).unwrap_or_else(|| Err(format!("evaluating {}: no result", req.conf.display())))
    };
    let generic = take(0)?;
    let per_kernel = req.kernels.iter().enumerate().map(|(i, k)| (k.kernelver.clone(), take(i + 1))).collect();
    Ok(Evaluated {
        generic,
        per_kernel,
        kernel_independent: plan.independent && plan.ctxs[1..].iter().all(|c| c.files.is_empty()),
    })
}

fn parse_index(arg: &[u8]) -> Option<usize> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_vars(tokens: &[Vec<u8>]) -> Vars {
    let mut vars = Vars::new();
    let mut current = None;
    for token in tokens {
        match token.split_first() {
            Some((b'k', name)) => current = Some(vars.entry(text(name)).or_default()),
            Some((b'z', value)) => current.iter_mut().for_each(|v| v.first = Some(text(value))),
            Some((b'v', value)) => current.iter_mut().for_each(|v| v.all.push(text(value))),
            _ => {}
        }
    }
    vars
}

fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}
