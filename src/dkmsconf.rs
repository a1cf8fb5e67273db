//! dkms.conf evaluation the way dkms does it: real bash, per kernel, with dkms's variables set and
//! the /etc/dkms override files sourced in dkms's order; values read back NUL-separated.

mod batch;
mod scan;

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The AUTOINSTALL directive, classified (docs/design.md, "AUTOINSTALL").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Autoinstall {
    /// `yes` (any case).
    Yes,
    /// unset, empty or `no`.
    No,
    /// Any other non-empty value: dkms <= 3.1.6 and Debian's common.postinst treat it as yes,
    /// dkms >= 3.1.7 rejects it. The raw value is kept; the planner decides with the dkms version.
    Other(String),
}

/// What the planner needs from one module's dkms.conf, evaluated for one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfValues {
    pub package_name: String,
    pub package_version: String,
    pub autoinstall: Autoinstall,
    pub build_depends: Vec<String>,
    pub build_exclusive_kernel: Option<String>,
    pub build_exclusive_arch: Option<String>,
    pub build_exclusive_config: Option<String>,
    pub build_exclusive_kernel_min: Option<String>,
    pub build_exclusive_kernel_max: Option<String>,
    pub built_module_name: Vec<String>,
    pub dest_module_location: Vec<String>,
    pub no_weak_modules: bool,
    /// `Some(reason)` when a BUILD_EXCLUSIVE_* directive excludes this kernel/arch/config
    /// ("BUILD_EXCLUSIVE_KERNEL ^5\. does not match 6.1.0-47-amd64"), decided the way dkms decides.
    pub excluded: Option<String>,
}

#[cfg(test)]
impl ConfValues {
    /// Test fixtures: only PACKAGE_NAME and PACKAGE_VERSION set, AUTOINSTALL=yes, nothing excluded.
    pub fn named(name: &str, version: &str) -> ConfValues {
        ConfValues {
            package_name: name.into(),
            package_version: version.into(),
            autoinstall: Autoinstall::Yes,
            build_depends: vec![],
            build_exclusive_kernel: None,
            build_exclusive_arch: None,
            build_exclusive_config: None,
            build_exclusive_kernel_min: None,
            build_exclusive_kernel_max: None,
            built_module_name: vec![],
            dest_module_location: vec![],
            no_weak_modules: false,
            excluded: None,
        }
    }
}

/// The kernel-dependent variables dkms sets before sourcing dkms.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelContext {
    pub kernelver: String,
    pub arch: String,
    /// Absolute path (inside the root) of the kernel's build directory: `kernel_source_dir`.
    pub kernel_source_dir: PathBuf,
    /// Absolute path of its `.config`: `kernel_config`.
    pub kernel_config: PathBuf,
}

/// One module to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub module: String,
    pub version: String,
    /// Absolute path of the dkms.conf to source.
    pub conf: PathBuf,
    /// Kernels to evaluate it for. When empty, it is evaluated once with `kernelver` set to the
    /// running kernel (or empty) so that name, version and AUTOINSTALL are still known.
    pub kernels: Vec<KernelContext>,
}

/// The result for one module: either it could not be evaluated at all (`Err(reason)`), or a
/// generic evaluation plus one per requested kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluated {
    /// Evaluation without a specific kernel (first requested kernel when the file is kernel-independent).
    pub generic: ConfValues,
    /// Per kernel; `Err(reason)` makes the module broken for that kernel only.
    pub per_kernel: BTreeMap<String, Result<ConfValues, String>>,
    /// True when the file (and its overrides) provably do not depend on kernel variables, so one
    /// evaluation served every kernel.
    pub kernel_independent: bool,
}

/// Paths and limits for evaluation.
#[derive(Debug, Clone)]
pub struct Options {
    /// Absolute paths dkms would see: dkms_tree, source_tree, install_tree.
    pub dkms_tree: PathBuf,
    pub source_tree: PathBuf,
    pub install_tree: PathBuf,
    /// Directory holding the M.conf, M-V.conf, M-V-K.conf, M-V-K-A.conf overrides.
    pub override_dir: PathBuf,
    /// The longest one evaluation (a module, or a module for one kernel) may take.
    pub timeout: Duration,
    /// How many bash processes may run at once.
    pub parallel: usize,
    /// Version of the dkms that will build ("3.0.10", as `Inventory::dkms_version`); None when
    /// unknown. Selects the version-specific behaviour listed at `Dialect`.
    pub dkms_version: Option<String>,
    /// The os-release file dkms would read for `running_distribution` (`etc/os-release` under
    /// the root); None, or a missing file, gives dkms's fallback "unknown".
    pub os_release: Option<PathBuf>,
}

impl Autoinstall {
    /// Classifies AUTOINSTALL as dkms holds it after reading the files (so with the stray `\r`
    /// of a CRLF file on dkms < 3.1.5).
    ///
    /// dkms 3.0.10 only asks whether the value is non-empty: measured with the real 3.0.10,
    /// `dkms autoinstall` built and installed a module for each of "no", "YES", "y", "1", "true"
    /// and " yes", and skipped it for "". dkms >= 3.1.7 accepts "" (no), `[Yy][Ee][Ss]` (yes) and
    /// `[Nn][Oo]` (no) and fails read_conf ("Unsupported AUTOINSTALL value") on anything else,
    /// "y", "1", "true" and " yes" included. Hence: `Yes` is "yes" in any case (yes for every
    /// dkms); `No` is unset, "" or "no" in any case (no on 3.1.7+; 3.0.10 autoinstalls "no", but
    /// the author's meaning is plain and dkms-trigger runs the builds itself); `Other` keeps any
    /// other value byte for byte, surrounding blanks included.
    pub fn classify(raw: &str) -> Autoinstall {
        if raw.is_empty() || raw.eq_ignore_ascii_case("no") {
            Autoinstall::No
        } else if raw.eq_ignore_ascii_case("yes") {
            Autoinstall::Yes
        } else {
            Autoinstall::Other(raw.to_string())
        }
    }
}

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
///   A CRLF `if`/`then` does not parse and is reported as a syntax error;
/// - a conf whose last command fails is fine (the status of `.` is the last command's); one that
///   does not parse (`bash -n`) is an error, although dkms 3.0.10 would carry on with whatever
///   was assigned before the error; a conf that calls `exit` loses its values as in dkms;
/// - `excluded`: dkms's own tests, in bash: BUILD_EXCLUSIVE_KERNEL and _ARCH as `=~` regexes
///   (an invalid regex excludes, as in dkms), _KERNEL_MIN/_MAX compared as dkms's VER() strings,
///   OBSOLETE_BY standing in for an unset _KERNEL_MAX (dkms 3.1.8; applied for every version,
///   since 3.0.10 refuses to install such a module anyway), BUILD_EXCLUSIVE_CONFIG against the
///   kernel's `kernel_config` (see `Shared::config_exclusion`); reasons joined with "; ".
///
/// The environment is empty but for PATH and LC_ALL=C (so `=~` and `<` compare bytes, where dkms
/// would use the caller's locale), stdin is /dev/null, the working directory `/`. A module is
/// evaluated once for every kernel when its base files (dkms.conf, M.conf, M-V.conf) provably
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
    let overrides = OverrideDir::read(&opts.override_dir);
    let mut kernels = Vec::new();
    let plans: Vec<Result<Plan, String>> =
        requests.iter().map(|r| plan(r, &running, &overrides, dialect, &mut kernels)).collect();
    // safe_source rewrites a temporary file per file sourced: tmpfs when there is one.
    let scratch = tempfile::Builder::new().prefix("dkms-trigger-conf.").tempdir_in("/dev/shm");
    let tmp = match scratch.or_else(|_| tempfile::Builder::new().prefix("dkms-trigger-conf.").tempdir()) {
        Ok(t) => t,
        Err(e) => return requests.iter().map(|_| Err(format!("cannot create a temporary directory: {e}"))).collect(),
    };
    let shared = Shared {
        opts,
        dialect,
        header: header(opts, dialect, tmp.path(), &running, &kernels),
        kernels,
        requests,
        plans: &plans,
        configs: Mutex::new(HashMap::new()),
    };
    let jobs = plans
        .iter()
        .enumerate()
        .filter_map(|(req, p)| p.as_ref().ok().map(|p| Job { req, ctxs: (0..p.ctxs.len()).collect() }))
        .collect();
    let partials = shared.run_all(jobs);
    requests
        .iter()
        .zip(plans.iter())
        .zip(partials)
        .map(|((req, plan), part)| assemble(req, plan.as_ref()?, part))
        .collect()
}

/// What differs between dkms versions. An unknown version is taken as 3.0.10 (Debian 12), except
/// that BUILD_EXCLUSIVE_KERNEL_MIN/MAX are honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dialect {
    /// >= 3.0.11: safe_source carries BUILD_EXCLUSIVE_KERNEL_MIN/MAX (3.0.10 drops them).
    min_max: bool,
    /// >= 3.1.5: safe_source strips one trailing CR from each value.
    strip_cr: bool,
    /// >= 3.1.6: /etc/dkms/M--K.conf and M--K-A.conf are sourced last.
    unversioned_overrides: bool,
    /// >= 3.2.0: NO_WEAK_MODULES is yes/no; before, any non-empty value means yes.
    strict_no_weak: bool,
    /// < 3.3.0: a `build_exclude` assigned by the conf itself excludes (later dkms resets it).
    conf_build_exclude: bool,
    /// < 3.0.11 (Debian's backport): BUILD_EXCLUSIVE_CONFIG entries are grep -E patterns.
    config_ere: bool,
}

impl Dialect {
    fn new(version: Option<&str>) -> Dialect {
        let Some(v) = version.and_then(parse_version) else {
            return Dialect {
                min_max: true,
                strip_cr: false,
                unversioned_overrides: false,
                strict_no_weak: false,
                conf_build_exclude: true,
                config_ere: true,
            };
        };
        Dialect {
            min_max: v >= [3, 0, 11],
            strip_cr: v >= [3, 1, 5],
            unversioned_overrides: v >= [3, 1, 6],
            strict_no_weak: v >= [3, 2, 0],
            conf_build_exclude: v < [3, 3, 0],
            config_ere: v < [3, 0, 11],
        }
    }

    /// dkms's dkms_conf_variables: what safe_source carries from one file to the next.
    fn variables(self) -> &'static str {
        if self.min_max {
            "PACKAGE_NAME PACKAGE_VERSION POST_ADD POST_BUILD POST_INSTALL POST_REMOVE PRE_BUILD \
             PRE_INSTALL BUILD_DEPENDS BUILD_EXCLUSIVE_ARCH BUILD_EXCLUSIVE_CONFIG \
             BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_KERNEL_MIN BUILD_EXCLUSIVE_KERNEL_MAX \
             build_exclude MAKE MAKE_MATCH PATCH PATCH_MATCH patch_array BUILT_MODULE_NAME \
             built_module_name BUILT_MODULE_LOCATION built_module_location DEST_MODULE_NAME \
             dest_module_name DEST_MODULE_LOCATION dest_module_location STRIP strip AUTOINSTALL \
             NO_WEAK_MODULES BUILD_DEPENDS_REBUILD OBSOLETE_BY CLEAN REMAKE_INITRD MODULES_CONF \
             MODULES_CONF_OBSOLETES MODULES_CONF_ALIAS_TYPE MODULES_CONF_OBSOLETE_ONLY"
        } else {
            "CLEAN PACKAGE_NAME PACKAGE_VERSION POST_ADD POST_BUILD POST_INSTALL POST_REMOVE \
             PRE_BUILD PRE_INSTALL BUILD_DEPENDS BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_ARCH \
             BUILD_EXCLUSIVE_CONFIG build_exclude OBSOLETE_BY MAKE MAKE_MATCH PATCH PATCH_MATCH \
             patch_array BUILT_MODULE_NAME built_module_name BUILT_MODULE_LOCATION \
             built_module_location DEST_MODULE_NAME dest_module_name DEST_MODULE_LOCATION \
             dest_module_location STRIP strip AUTOINSTALL NO_WEAK_MODULES SIGN_FILE \
             MOK_SIGNING_KEY MOK_CERTIFICATE REMAKE_INITRD MODULES_CONF MODULES_CONF_OBSOLETES \
             MODULES_CONF_ALIAS_TYPE MODULES_CONF_OBSOLETE_ONLY"
        }
    }
}

/// "3.0.10", "3.0.10-8+deb12u1", "3.4" -> [major, minor, patch].
fn parse_version(v: &str) -> Option<[u32; 3]> {
    let numeric = v.split(|c: char| !c.is_ascii_digit() && c != '.').next()?;
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>());
    let mut out = [0; 3];
    out[0] = parts.next()?.ok()?;
    for slot in &mut out[1..] {
        *slot = parts.next().and_then(Result::ok).unwrap_or(0);
    }
    Some(out)
}

/// The generic context of a module that is kernel-dependent or has no kernels requested: what
/// dkms uses without -k, `uname -r` and `uname -m` (read from /proc: the running kernel is the
/// host's whatever the root), with headers under install_tree.
fn running_kernel(install_tree: &Path) -> KernelContext {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let kernelver = read("/proc/sys/kernel/osrelease");
    let mut arch = read("/proc/sys/kernel/arch");
    if arch.is_empty() {
        arch = std::env::consts::ARCH.to_string();
    }
    let kernel_source_dir =
        if kernelver.is_empty() { PathBuf::new() } else { install_tree.join(&kernelver).join("build") };
    KernelContext { kernel_config: kernel_source_dir.join(".config"), kernelver, arch, kernel_source_dir }
}

/// The names in the override directory, listed once instead of probed per kernel.
struct OverrideDir {
    dir: PathBuf,
    names: HashSet<OsString>,
}

impl OverrideDir {
    fn read(dir: &Path) -> OverrideDir {
        let names = std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default();
        OverrideDir { dir: dir.to_path_buf(), names }
    }

    /// dkms's `[ -e /etc/dkms/NAME ]`: a dangling symlink does not count.
    fn existing(&self, name: &str) -> Option<PathBuf> {
        self.names.contains(OsStr::new(name)).then(|| self.dir.join(name)).filter(|p| p.exists())
    }
}

/// How one module is evaluated.
struct Plan {
    /// dkms.conf, then M.conf and M-V.conf when they exist.
    base: Vec<PathBuf>,
    /// The base files provably do not read the kernel.
    independent: bool,
    /// Context 0 is the generic evaluation, 1.. the requested kernels in order.
    ctxs: Vec<Ctx>,
}

struct Ctx {
    /// Index into the kernel table.
    kernel: usize,
    /// The M-V-K.conf family of override files that exist for this kernel, in dkms's order.
    files: Vec<PathBuf>,
}

fn plan(
    req: &Request,
    running: &KernelContext,
    dir: &OverrideDir,
    dialect: Dialect,
    kernels: &mut Vec<KernelContext>,
) -> Result<Plan, String> {
    let nul = |s: &[u8]| s.contains(&0);
    if nul(req.module.as_bytes())
        || nul(req.version.as_bytes())
        || nul(req.conf.as_os_str().as_bytes())
        || req.kernels.iter().any(|k| {
            nul(k.kernelver.as_bytes())
                || nul(k.arch.as_bytes())
                || nul(k.kernel_source_dir.as_os_str().as_bytes())
                || nul(k.kernel_config.as_os_str().as_bytes())
        })
    {
        return Err(format!(
            "{}/{}: a name or path contains a NUL byte",
            req.module.escape_debug(),
            req.version.escape_debug()
        ));
    }
    let (m, v) = (&req.module, &req.version);
    let mut base = vec![req.conf.clone()];
    base.extend(dir.existing(&format!("{m}.conf")));
    base.extend(dir.existing(&format!("{m}-{v}.conf")));
    let mut independent = true;
    for file in &base {
        let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        independent &= scan::kernel_independent(&String::from_utf8_lossy(&text));
    }
    let generic = match req.kernels.first() {
        Some(first) if independent => first,
        _ => running,
    };
    let mut ctxs = vec![Ctx { kernel: intern(kernels, generic), files: Vec::new() }];
    for k in &req.kernels {
        let (kv, a) = (&k.kernelver, &k.arch);
        let mut names = vec![format!("{m}-{v}-{kv}.conf"), format!("{m}-{v}-{kv}-{a}.conf")];
        if dialect.unversioned_overrides {
            names.extend([format!("{m}--{kv}.conf"), format!("{m}--{kv}-{a}.conf")]);
        }
        let files = names.iter().filter_map(|n| dir.existing(n)).collect();
        ctxs.push(Ctx { kernel: intern(kernels, k), files });
    }
    Ok(Plan { base, independent, ctxs })
}

fn intern(kernels: &mut Vec<KernelContext>, k: &KernelContext) -> usize {
    kernels.iter().position(|x| x == k).unwrap_or_else(|| {
        kernels.push(k.clone());
        kernels.len() - 1
    })
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
struct Job {
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
    kernels: Vec<KernelContext>,
    requests: &'a [Request],
    plans: &'a [Result<Plan, String>],
    /// Per kernel config path: the names set to y or m; None when there is no such file.
    configs: Mutex<HashMap<PathBuf, Option<Arc<HashSet<String>>>>>,
}

impl Shared<'_> {
    fn plan(&self, req: usize) -> &Plan {
        self.plans[req].as_ref().expect("only planned requests become jobs")
    }

    fn run_all(&self, jobs: VecDeque<Job>) -> Vec<Partial> {
        let workers = self.opts.parallel.clamp(1, jobs.len().max(1));
        // Several batches per worker: a slow batch does not leave the other workers idle.
        let chunk = jobs.len().div_ceil(workers * 4).max(1);
        let queue = Mutex::new(jobs);
        let results = Mutex::new((0..self.requests.len()).map(|_| Partial::default()).collect::<Vec<_>>());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let batch: Vec<Job> = {
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
    fn run_batch(&self, batch: &[Job]) -> (Vec<Partial>, Vec<Job>) {
        let mut input = self.header.clone();
        for (pos, job) in batch.iter().enumerate() {
            let (req, plan) = (&self.requests[job.req], self.plan(job.req));
            push(&mut input, pos.to_string().as_bytes());
            push(&mut input, req.module.as_bytes());
            push(&mut input, req.version.as_bytes());
            push(&mut input, flag(plan.independent));
            push(&mut input, plan.base.len().to_string().as_bytes());
            plan.base.iter().for_each(|f| push_path(&mut input, f));
            let ctxs: Vec<(usize, &Ctx)> = job.ctxs.iter().map(|&c| (c, &plan.ctxs[c])).collect();
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
        (parts, requeue)
    }

    fn record(&self, batch: &[Job], parts: &mut [Partial], current: &mut Option<usize>, rec: batch::Record) {
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
                if let Some(ctx) = parse_index(arg).filter(|&c| c < self.plan(batch[pos].req).ctxs.len()) {
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
        let kernel = &self.kernels[self.plan(req).ctxs[ctx].kernel];
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
                if !path.exists() {
                    return None;
                }
                // An unreadable config is what a failing grep sees: nothing set.
                let text = std::fs::read(path).unwrap_or_default();
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
        let mut grep = Command::new("grep");
        grep.arg("-q");
        if self.dialect.config_ere {
            grep.arg("-E");
        }
        grep.arg("-e")
            .arg(format!("^{name}=[ym]"))
            .arg(path)
            .env_clear()
            .env("PATH", batch::PATH)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        grep.status().is_ok_and(|s| s.success())
    }

    /// After a run, whatever it left unfinished is failed or queued again: a hung or crashing
    /// conf costs its own module (or its own kernel), never the other modules of the batch.
    fn settle(&self, batch: &[Job], parts: &mut [Partial], current: Option<usize>, run: batch::Run) -> Vec<Job> {
        let why = match run.end {
            batch::End::Spawn(e) => {
                parts.iter_mut().for_each(|p| p.failed = Some(e.clone()));
                return Vec::new();
            }
            batch::End::TimedOut => format!("timed out after {} s", seconds(self.opts.timeout)),
            batch::End::Eof => format!("the evaluator exited early ({})", run.status),
        };
        let reason = |job: &Job| format!("evaluating {}: {why}", self.requests[job.req].conf.display());
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
            if stuck == 0 || (self.plan(job.req).independent && part.base.is_none()) {
                part.failed = Some(reason(job));
            } else {
                part.ctx.insert(stuck, Err(reason(job)));
                if !rest.is_empty() {
                    requeue.push(Job { req: job.req, ctxs: rest.to_vec() });
                }
            }
        }
        requeue.extend(batch[cur + 1..].iter().cloned());
        requeue
    }
}

fn assemble(req: &Request, plan: &Plan, mut part: Partial) -> Result<Evaluated, String> {
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

fn text(bytes: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Instant;

    const K55: &str = "6.1.0-55-amd64";
    const K56: &str = "6.1.0-56-amd64";

    /// A scratch tree: sources under src/, overrides under etc/, fake kernels under lib/.
    struct Fx {
        dir: tempfile::TempDir,
    }

    impl Fx {
        fn new() -> Fx {
            let fx = Fx { dir: tempfile::tempdir().unwrap() };
            fs::create_dir_all(fx.path("etc")).unwrap();
            fx
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let p = self.path(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
            p
        }

        /// A kernel whose build directory holds `config` as .config (none when None).
        fn kernel(&self, kver: &str, arch: &str, config: Option<&str>) -> KernelContext {
            let build = self.path(&format!("lib/{kver}/build"));
            fs::create_dir_all(&build).unwrap();
            if let Some(c) = config {
                fs::write(build.join(".config"), c).unwrap();
            }
            KernelContext {
                kernelver: kver.into(),
                arch: arch.into(),
                kernel_config: build.join(".config"),
                kernel_source_dir: build,
            }
        }

        fn kernels(&self) -> Vec<KernelContext> {
            vec![self.kernel(K55, "x86_64", None), self.kernel(K56, "x86_64", None)]
        }

        /// A module `m` version 1.0 whose dkms.conf is `body` after the two required lines.
        fn module(&self, m: &str, body: &str, kernels: Vec<KernelContext>) -> Request {
            let conf = self
                .write(&format!("src/{m}-1.0/dkms.conf"), &format!("PACKAGE_NAME={m}\nPACKAGE_VERSION=1.0\n{body}"));
            Request { module: m.into(), version: "1.0".into(), conf, kernels }
        }

        fn opts(&self) -> Options {
            Options {
                dkms_tree: self.path("var/lib/dkms"),
                source_tree: self.path("src"),
                install_tree: self.path("lib"),
                override_dir: self.path("etc"),
                timeout: Duration::from_secs(20),
                parallel: 2,
                dkms_version: None,
                os_release: None,
            }
        }

        fn eval(&self, req: Request) -> Evaluated {
            self.eval_with(req, &self.opts()).unwrap()
        }

        fn eval_with(&self, req: Request, opts: &Options) -> Result<Evaluated, String> {
            evaluate(&[req], opts).pop().unwrap()
        }
    }

    fn kernel<'a>(e: &'a Evaluated, k: &str) -> &'a ConfValues {
        e.per_kernel[k].as_ref().unwrap()
    }

    fn version(v: &str) -> Options {
        Options { dkms_version: Some(v.into()), ..Fx::new().opts() }
    }

    #[test]
    fn build_exclusive_kernel_from_kernelver_matches_one_of_two() {
        let fx = Fx::new();
        let req = fx.module("m", "case $kernelver in *-55-*) BUILD_EXCLUSIVE_KERNEL='^5\\.' ;; esac\n", fx.kernels());
        let e = fx.eval(req);
        assert!(!e.kernel_independent);
        assert_eq!(kernel(&e, K55).build_exclusive_kernel.as_deref(), Some("^5\\."));
        assert_eq!(
            kernel(&e, K55).excluded.as_deref(),
            Some("BUILD_EXCLUSIVE_KERNEL '^5\\.' does not match 6.1.0-55-amd64")
        );
        assert_eq!(kernel(&e, K56).build_exclusive_kernel, None);
        assert_eq!(kernel(&e, K56).excluded, None);
    }

    #[test]
    fn build_exclusive_kernel_regex_is_bash_ere() {
        let fx = Fx::new();
        let e = fx.eval(fx.module("m", "BUILD_EXCLUSIVE_KERNEL='^6\\.1\\.0-(56|57)-'\n", fx.kernels()));
        assert!(e.kernel_independent);
        assert!(kernel(&e, K55).excluded.as_deref().unwrap().contains("does not match 6.1.0-55-amd64"));
        assert_eq!(kernel(&e, K56).excluded, None);
        // An invalid regex makes dkms's `[[ ! $k =~ $re ]]` true: excluded.
        let e = fx.eval(fx.module("n", "BUILD_EXCLUSIVE_KERNEL='('\n", fx.kernels()));
        assert!(kernel(&e, K56).excluded.is_some());
    }

    #[test]
    fn build_exclusive_arch() {
        let fx = Fx::new();
        let kernels = vec![fx.kernel(K55, "x86_64", None), fx.kernel(K56, "aarch64", None)];
        let e = fx.eval(fx.module("m", "BUILD_EXCLUSIVE_ARCH='^(aarch64|arm64)$'\n", kernels));
        assert_eq!(
            kernel(&e, K55).excluded.as_deref(),
            Some("BUILD_EXCLUSIVE_ARCH '^(aarch64|arm64)$' does not match x86_64")
        );
        assert_eq!(kernel(&e, K56).excluded, None);
        assert_eq!(kernel(&e, K56).build_exclusive_arch.as_deref(), Some("^(aarch64|arm64)$"));
    }

    #[test]
    fn build_exclusive_config_against_the_kernel_config() {
        let fx = Fx::new();
        let config = "CONFIG_FOO=y\nCONFIG_BAR=m\n# CONFIG_BAZ is not set\nCONFIG_NAME=\"yes\"\n";
        let kernels = vec![fx.kernel(K55, "x86_64", Some(config)), fx.kernel(K56, "x86_64", None)];
        let case = |m: &str, value: &str| {
            let e = fx.eval(fx.module(m, &format!("BUILD_EXCLUSIVE_CONFIG=\"{value}\"\n"), kernels.clone()));
            // No .config at all: dkms skips the test.
            assert_eq!(kernel(&e, K56).excluded, None, "{value}");
            assert_eq!(kernel(&e, K55).build_exclusive_config.as_deref(), Some(value));
            kernel(&e, K55).excluded.clone()
        };
        assert_eq!(case("a", "CONFIG_FOO CONFIG_BAR !CONFIG_BAZ"), None);
        let config_path = fx.path("lib/6.1.0-55-amd64/build/.config");
        assert_eq!(
            case("b", "CONFIG_FOO CONFIG_BAZ"),
            Some(format!("BUILD_EXCLUSIVE_CONFIG 'CONFIG_BAZ': CONFIG_BAZ is not set in {}", config_path.display()))
        );
        assert_eq!(
            case("c", "!CONFIG_BAR"),
            Some(format!("BUILD_EXCLUSIVE_CONFIG '!CONFIG_BAR': CONFIG_BAR is set in {}", config_path.display()))
        );
        // `=\"yes\"` is not `=[ym]`; a pattern goes to grep -E as in dkms 3.0.10.
        assert!(case("d", "CONFIG_NAME").is_some());
        assert_eq!(case("e", "CONFIG_F.O"), None);
        assert!(case("f", "!CONFIG_(FOO|QUX)").is_some());
    }

    #[test]
    fn kernel_min_max_and_obsolete_by() {
        let fx = Fx::new();
        let e = fx.eval(fx.module("a", "BUILD_EXCLUSIVE_KERNEL_MIN=6.1.0-56\n", fx.kernels()));
        assert_eq!(
            kernel(&e, K55).excluded.as_deref(),
            Some("BUILD_EXCLUSIVE_KERNEL_MIN '6.1.0-56' is above 6.1.0-55-amd64")
        );
        assert_eq!(kernel(&e, K56).excluded, None);
        let e = fx.eval(fx.module("b", "BUILD_EXCLUSIVE_KERNEL_MAX=6.1.0-55-amd64\n", fx.kernels()));
        assert_eq!(kernel(&e, K55).excluded, None);
        assert_eq!(
            kernel(&e, K56).excluded.as_deref(),
            Some("BUILD_EXCLUSIVE_KERNEL_MAX '6.1.0-55-amd64' is below 6.1.0-56-amd64")
        );
        // Numbers compare as numbers: 6.10 is above 6.9.
        let e = fx.eval(fx.module(
            "c",
            "BUILD_EXCLUSIVE_KERNEL_MIN=6.9\n",
            vec![fx.kernel("6.10.0-1-amd64", "x86_64", None)],
        ));
        assert_eq!(kernel(&e, "6.10.0-1-amd64").excluded, None);
        // VER strings compare as strings: 6.1.0-56-amd64 is above a MAX of 6.1.0-56, as in dkms.
        let e = fx.eval(fx.module("d", "OBSOLETE_BY=6.1.0-56\n", fx.kernels()));
        assert_eq!(kernel(&e, K56).build_exclusive_kernel_max.as_deref(), Some("6.1.0-56"));
        assert_eq!(kernel(&e, K56).excluded.as_deref(), Some("OBSOLETE_BY '6.1.0-56' is below 6.1.0-56-amd64"));
        assert_eq!(kernel(&e, K55).excluded, None);
        // dkms 3.0.10 does not carry MIN/MAX out of the conf at all, but OBSOLETE_BY it does.
        let old = version("3.0.10");
        let e = fx.eval_with(fx.module("e", "BUILD_EXCLUSIVE_KERNEL_MIN=6.1.0-56\n", fx.kernels()), &old).unwrap();
        assert_eq!(
            (kernel(&e, K55).build_exclusive_kernel_min.as_ref(), kernel(&e, K55).excluded.as_ref()),
            (None, None)
        );
        let e = fx.eval_with(fx.module("f", "OBSOLETE_BY=6.1.0-56\n", fx.kernels()), &old).unwrap();
        assert!(kernel(&e, K56).excluded.is_some());
    }

    /// One function of the evaluator program, to run it on its own.
    fn program_function(name: &str) -> &'static str {
        let start = batch::PROGRAM.find(&format!("\n{name}() {{")).unwrap() + 1;
        let len = batch::PROGRAM[start..].find("\n}\n").unwrap() + 2;
        &batch::PROGRAM[start..start + len]
    }

    #[test]
    fn ver_matches_dkms_sed() {
        // dkms's VER(), verbatim.
        let sed = r"VER() { echo $1 | sed -e 's:\([^0-9]\)\([0-9]\):\1 \2:g' -e 's:\([0-9]\)\([^0-9]\):\1 \2:g' \
            -e 's:\(.*\): \1 :' -e 's: \([0-9]\) : 00\1 :g' -e 's: \([0-9][0-9]\) : 0\1 :g' -e 's: ::g'; }";
        let check = r#"for s in 6.1.0-56-amd64 2.6.9-1cvs200409091247 5 10.20.300.4000 a1b22c333 rc-6.1.0 \
            'x y 7' 6.10 1.2.3-4.5 4.19.0+1 9; do
            __dt_ver "$s"; [[ $__dt_v == "$(VER "$s")" ]] || echo "$s: $__dt_v != $(VER "$s")"; done"#;
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{}\n{sed}\n{check}", program_function("__dt_ver")))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    }

    #[test]
    fn override_files_in_dkms_order_and_per_kernel() {
        let fx = Fx::new();
        // Each file appends its name; carried variables reach the next file, others do not.
        let req = fx.module("m", "BUILD_DEPENDS=(conf)\nhelper=from-conf\n", fx.kernels());
        fx.write("etc/m.conf", "BUILD_DEPENDS+=(m $helper)\n");
        fx.write("etc/m-1.0.conf", "BUILD_DEPENDS+=(m-v)\n");
        fx.write(&format!("etc/m-1.0-{K56}.conf"), "BUILD_DEPENDS+=(m-v-k)\n");
        fx.write(&format!("etc/m-1.0-{K56}-x86_64.conf"), "BUILD_DEPENDS+=(m-v-k-a)\n");
        fx.write(&format!("etc/m--{K56}.conf"), "BUILD_DEPENDS+=(m--k)\n");
        fx.write(&format!("etc/m--{K56}-x86_64.conf"), "BUILD_DEPENDS+=(m--k-a)\n");
        fx.write(&format!("etc/m-1.0-{K55}-aarch64.conf"), "BUILD_DEPENDS+=(wrong-arch)\n");
        let e = fx.eval(req.clone());
        assert!(!e.kernel_independent);
        assert_eq!(e.generic.build_depends, ["conf", "m", "m-v"]);
        assert_eq!(kernel(&e, K55).build_depends, ["conf", "m", "m-v"]);
        assert_eq!(kernel(&e, K56).build_depends, ["conf", "m", "m-v", "m-v-k", "m-v-k-a"]);
        // dkms 3.1.6 added M--K.conf and M--K-A.conf after the others.
        let e = fx.eval_with(req, &Options { dkms_version: Some("3.1.6".into()), ..fx.opts() }).unwrap();
        assert_eq!(kernel(&e, K56).build_depends, ["conf", "m", "m-v", "m-v-k", "m-v-k-a", "m--k", "m--k-a"]);
        assert_eq!(kernel(&e, K55).build_depends, ["conf", "m", "m-v"]);
    }

    #[test]
    fn per_kernel_override_of_a_dependent_conf() {
        let fx = Fx::new();
        let req = fx.module("m", "MAKE=\"make KVER=$kernelver\"\nAUTOINSTALL=yes\n", fx.kernels());
        fx.write(&format!("etc/m-1.0-{K55}.conf"), "AUTOINSTALL=\n");
        let e = fx.eval(req);
        assert!(!e.kernel_independent);
        assert_eq!(kernel(&e, K55).autoinstall, Autoinstall::No);
        assert_eq!(kernel(&e, K56).autoinstall, Autoinstall::Yes);
        assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
    }

    /// How many times each file was sourced, from a conf that appends to a counter file.
    fn counted(fx: &Fx, m: &str, extra: &str) -> (Evaluated, usize) {
        let counter = fx.path(&format!("{m}.count"));
        let body = format!("echo x >> '{}'\n{extra}", counter.display());
        let e = fx.eval(fx.module(m, &body, fx.kernels()));
        (e, fs::read_to_string(counter).unwrap().lines().count())
    }

    #[test]
    fn kernel_independent_conf_is_evaluated_once() {
        let fx = Fx::new();
        let (e, sourced) = counted(&fx, "m", "# for every arch\nBUILD_EXCLUSIVE_KERNEL='-56-'\n");
        assert!(e.kernel_independent);
        assert_eq!(sourced, 1);
        // The exclusion is still per kernel.
        assert!(kernel(&e, K55).excluded.is_some());
        assert_eq!(kernel(&e, K56).excluded, None);
        assert_eq!(e.generic.excluded, kernel(&e, K55).excluded);
    }

    #[test]
    fn kernel_dependent_conf_is_evaluated_per_kernel() {
        let fx = Fx::new();
        let (e, sourced) = counted(&fx, "m", "BUILT_MODULE_NAME=(m-${kernelver%%-*})\n");
        assert!(!e.kernel_independent);
        // The generic evaluation, then each kernel.
        assert_eq!(sourced, 3);
        assert_eq!(kernel(&e, K56).built_module_name, ["m-6.1.0"]);
        // An override that reads the kernel makes the module dependent too.
        fx.write("etc/n.conf", "PACKAGE_VERSION=$kernelver\n");
        let (e, sourced) = counted(&fx, "n", "");
        assert!(!e.kernel_independent);
        assert_eq!(sourced, 3);
        assert_eq!(kernel(&e, K55).package_version, K55);
    }

    #[test]
    fn dkms_variables_are_set() {
        let fx = Fx::new();
        let os = fx.write("os-release", "ID=rocky\nID_LIKE=\"rhel centos fedora\"\n");
        let k = fx.kernel(K56, "x86_64", None);
        let body =
            "BUILT_MODULE_NAME=(\"$module\" \"$module_version\" \"$kernelver\" \"$arch\" \"$kernel_source_dir\" \
                    \"$kernel_config\" \"$dkms_tree\" \"$source_tree\" \"$install_tree\" \"$running_distribution\")\n";
        let opts = Options { os_release: Some(os), ..fx.opts() };
        let e = fx.eval_with(fx.module("m", body, vec![k.clone()]), &opts).unwrap();
        let paths = [&k.kernel_source_dir, &k.kernel_config, &opts.dkms_tree, &opts.source_tree, &opts.install_tree];
        let mut expected = vec!["m".to_string(), "1.0".into(), K56.into(), "x86_64".into()];
        expected.extend(paths.iter().map(|p| p.display().to_string()));
        expected.push("rhel centos fedora".into());
        assert_eq!(kernel(&e, K56).built_module_name, expected);
    }

    #[test]
    fn command_substitution_runs() {
        let fx = Fx::new();
        let e = fx.eval(fx.module(
            "m",
            "PACKAGE_VERSION=$(echo 2.0)\nBUILT_MODULE_NAME=(`echo a` $(echo b))\n",
            fx.kernels(),
        ));
        assert_eq!(e.generic.package_version, "2.0");
        assert_eq!(kernel(&e, K55).built_module_name, ["a", "b"]);
    }

    #[test]
    fn hanging_conf_times_out_alone() {
        let fx = Fx::new();
        let pid_file = fx.path("bg.pid");
        let hang = format!("sleep 300 & echo $! > '{}'\nwhile :; do :; done\n", pid_file.display());
        // Nine modules in batches of three: the hung one is in the middle of the second batch,
        // so the module after it goes to a new bash.
        let requests: Vec<Request> = (0..9)
            .map(|i| fx.module(&format!("m{i}"), if i == 4 { &hang } else { "BUILD_DEPENDS=base\n" }, fx.kernels()))
            .collect();
        let opts = Options { timeout: Duration::from_secs(1), parallel: 1, ..fx.opts() };
        let started = Instant::now();
        let out = evaluate(&requests, &opts);
        assert!(started.elapsed() < Duration::from_secs(10));
        for (i, result) in out.iter().enumerate() {
            match result {
                Err(e) if i == 4 => assert!(e.contains("timed out after 1 s"), "{e}"),
                Ok(e) if i != 4 => assert_eq!(kernel(e, K56).build_depends, ["base"]),
                other => panic!("module {i}: {other:?}"),
            }
        }
        // Its process group went with it: the background sleep is gone (or a zombie).
        let pid = fs::read_to_string(pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let gone = || fs::read_to_string(&stat).map_or(true, |s| s.rsplit(')').next().unwrap().trim().starts_with('Z'));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(gone(), "the conf's background process survived");
    }

    #[test]
    fn timeout_is_per_evaluation() {
        let fx = Fx::new();
        // 4 evaluations (generic and three kernels) of 0.4 s each, under a 1 s timeout.
        let mut kernels = fx.kernels();
        kernels.push(fx.kernel("6.1.0-57-amd64", "x86_64", None));
        let req = fx.module("m", "sleep 0.4\nMAKE=\"make KVER=$kernelver\"\n", kernels);
        let e = fx.eval_with(req, &Options { timeout: Duration::from_secs(1), ..fx.opts() }).unwrap();
        assert!(e.per_kernel.values().all(Result::is_ok));
    }

    #[test]
    fn hang_in_one_kernel_override_breaks_only_that_kernel() {
        let fx = Fx::new();
        let k57 = fx.kernel("6.1.0-57-amd64", "x86_64", None);
        let mut kernels = fx.kernels();
        kernels.push(k57);
        let req = fx.module("m", "AUTOINSTALL=yes\n", kernels);
        fx.write(&format!("etc/m-1.0-{K56}.conf"), "sleep 300\n");
        let opts = Options { timeout: Duration::from_secs(1), ..fx.opts() };
        let e = fx.eval_with(req, &opts).unwrap();
        assert!(e.per_kernel[K56].as_ref().unwrap_err().contains("timed out after 1 s"));
        assert_eq!(kernel(&e, K55).autoinstall, Autoinstall::Yes);
        assert_eq!(kernel(&e, "6.1.0-57-amd64").autoinstall, Autoinstall::Yes);
    }

    #[test]
    fn syntax_error_is_an_error_but_a_failing_last_command_is_not() {
        let fx = Fx::new();
        let err =
            fx.eval_with(fx.module("m", "AUTOINSTALL=yes\nif then fi (\n", fx.kernels()), &fx.opts()).unwrap_err();
        assert!(err.starts_with("syntax error: "), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let e = fx.eval(fx.module("n", "AUTOINSTALL=yes\n(exit 2)\n", fx.kernels()));
        assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
        let e = fx.eval(fx.module("o", "AUTOINSTALL=yes\nfalse\n", fx.kernels()));
        assert_eq!(kernel(&e, K55).autoinstall, Autoinstall::Yes);
        // Parsed with extglob on, as dkms parses it.
        let e = fx.eval(fx.module("q", "case x in @(a|x)) AUTOINSTALL=yes ;; esac\n(exit 2)\n", fx.kernels()));
        assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
        // In a per-kernel override it breaks only that kernel.
        let req = fx.module("p", "AUTOINSTALL=yes\n", fx.kernels());
        fx.write(&format!("etc/p-1.0-{K55}.conf"), "X=\"unterminated\n");
        let e = fx.eval(req);
        assert!(e.per_kernel[K55].as_ref().unwrap_err().starts_with("syntax error: "));
        assert_eq!(kernel(&e, K56).autoinstall, Autoinstall::Yes);
    }

    #[test]
    fn crlf_keeps_the_carriage_returns_like_dkms_3_0_10() {
        let fx = Fx::new();
        let conf = fx.write(
            "src/c-1.0/dkms.conf",
            "PACKAGE_NAME=\"c\"\r\nPACKAGE_VERSION=\"1.0\"\r\nAUTOINSTALL=\"yes\"\r\n\r\n",
        );
        let req = Request { module: "c".into(), version: "1.0".into(), conf, kernels: fx.kernels() };
        let e = fx.eval(req.clone());
        assert_eq!(e.generic.package_name, "c\r");
        assert_eq!(e.generic.autoinstall, Autoinstall::Other("yes\r".into()));
        let e = fx.eval_with(req, &version("3.1.5")).unwrap();
        assert_eq!(e.generic.package_name, "c");
        assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
        let conf =
            fx.write("src/d-1.0/dkms.conf", "PACKAGE_NAME=d\r\nPACKAGE_VERSION=1\r\nif true; then\r\n  X=1\r\nfi\r\n");
        let req = Request { module: "d".into(), version: "1.0".into(), conf, kernels: fx.kernels() };
        assert!(fx.eval_with(req, &fx.opts()).unwrap_err().starts_with("syntax error: "));
    }

    #[test]
    fn output_on_stdout_and_stderr_and_fd_3_cannot_forge_values() {
        let fx = Fx::new();
        // Were any of these to reach the evaluator's output, the F record would fail the module.
        let forged = r"printf 'e\0Fforged\0e\0r1\0kPACKAGE_NAME\0v0:forged\0e\0'";
        // A `"` in a carried value makes dkms's re-read of it run the rest as code, in the
        // evaluator's own shell rather than in the conf's subshell.
        let escape = r#"MAKE='"; printf "e\0Fforged\0e\0"; printf "e\0Fforged\0e\0" >&3; "'"#;
        let body = format!("{forged}\n{forged} >&2\n{forged} >&3\necho junk\n{escape}\nAUTOINSTALL=yes\n");
        let e = fx.eval(fx.module("m", &body, fx.kernels()));
        assert_eq!(e.generic.package_name, "m");
        assert_eq!(kernel(&e, K55).package_name, "m");
        assert_eq!(kernel(&e, K56).autoinstall, Autoinstall::Yes);
    }

    #[test]
    fn missing_package_name_or_unreadable_conf_is_an_error() {
        let fx = Fx::new();
        let conf = fx.write("src/m-1.0/dkms.conf", "PACKAGE_VERSION=1.0\n");
        let req = Request { module: "m".into(), version: "1.0".into(), conf: conf.clone(), kernels: fx.kernels() };
        assert_eq!(fx.eval_with(req, &fx.opts()).unwrap_err(), format!("{} sets no PACKAGE_NAME", conf.display()));
        let missing = fx.path("src/none/dkms.conf");
        let req = Request { module: "n".into(), version: "1.0".into(), conf: missing.clone(), kernels: fx.kernels() };
        let err = fx.eval_with(req, &fx.opts()).unwrap_err();
        assert!(err.starts_with(&format!("cannot read {}", missing.display())), "{err}");
        // Only for the kernel where a dependent conf drops it.
        let e = fx.eval(fx.module("k", "[[ $kernelver = *-55-* ]] && PACKAGE_NAME=\n", fx.kernels()));
        assert!(e.per_kernel[K55].as_ref().unwrap_err().ends_with("sets no PACKAGE_NAME"));
        assert_eq!(kernel(&e, K56).package_name, "k");
    }

    #[test]
    fn arrays_with_several_entries() {
        let fx = Fx::new();
        let body = "BUILT_MODULE_NAME[0]=a\nBUILT_MODULE_NAME[1]=b\nBUILT_MODULE_NAME[2]=c\n\
                    DEST_MODULE_LOCATION=(/updates/dkms /extra /kernel/drivers)\nBUILD_DEPENDS=(\"x y\" z)\n";
        let e = fx.eval(fx.module("m", body, fx.kernels()));
        assert_eq!(e.generic.built_module_name, ["a", "b", "c"]);
        assert_eq!(kernel(&e, K56).dest_module_location, ["/updates/dkms", "/extra", "/kernel/drivers"]);
        // autoinstall word-splits the dependencies.
        assert_eq!(kernel(&e, K56).build_depends, ["x", "y", "z"]);
    }

    #[test]
    fn values_go_through_safe_source_like_dkms() {
        let fx = Fx::new();
        let body = "BUILD_EXCLUSIVE_KERNEL='^6\\.1 .*$'\n\
                    BUILT_MODULE_NAME=('a  b' ' lead' $'x\\ny' 'd$module' \"it's\" 'e\\\\f')\n\
                    AUTOINSTALL=yes\n";
        let e = fx.eval(fx.module("m", body, fx.kernels()));
        let v = kernel(&e, K56);
        assert_eq!(v.built_module_name, ["a b", " lead", "x y", "dm", "it's", "e\\f"]);
        assert_eq!(v.build_exclusive_kernel.as_deref(), Some("^6\\.1 .*$"));
        assert_eq!(v.autoinstall, Autoinstall::Yes);
        // A stray `"` breaks dkms's re-read: whatever dkms carries after it is lost.
        let e = fx.eval(fx.module(
            "n",
            "BUILT_MODULE_NAME=('q\"x')\nAUTOINSTALL=yes\nDEST_MODULE_LOCATION=/extra\n",
            fx.kernels(),
        ));
        assert_eq!(e.generic.autoinstall, Autoinstall::No);
        assert!(e.generic.dest_module_location.is_empty());
        assert_eq!(e.generic.package_name, "n");
    }

    #[test]
    fn autoinstall_variants() {
        for (raw, class) in [
            ("", Autoinstall::No),
            ("no", Autoinstall::No),
            ("NO", Autoinstall::No),
            ("yes", Autoinstall::Yes),
            ("YES", Autoinstall::Yes),
            ("Yes", Autoinstall::Yes),
            ("y", Autoinstall::Other("y".into())),
            ("1", Autoinstall::Other("1".into())),
            ("true", Autoinstall::Other("true".into())),
            (" yes", Autoinstall::Other(" yes".into())),
        ] {
            assert_eq!(Autoinstall::classify(raw), class, "{raw:?}");
        }
        let fx = Fx::new();
        for (m, line, class) in [
            ("a", "", Autoinstall::No),
            ("b", "AUTOINSTALL=YES", Autoinstall::Yes),
            ("c", "AUTOINSTALL=' yes'", Autoinstall::Other(" yes".into())),
            ("d", "AUTOINSTALL=no", Autoinstall::No),
        ] {
            assert_eq!(fx.eval(fx.module(m, line, fx.kernels())).generic.autoinstall, class, "{line}");
        }
    }

    #[test]
    fn no_weak_modules_and_build_exclude_by_dkms_version() {
        let fx = Fx::new();
        let req = fx.module("m", "NO_WEAK_MODULES=no\nbuild_exclude=yes\n", fx.kernels());
        let old = fx.eval_with(req.clone(), &version("3.0.10")).unwrap();
        assert!(old.generic.no_weak_modules);
        assert_eq!(kernel(&old, K55).excluded.as_deref(), Some("dkms.conf sets build_exclude='yes'"));
        let new = fx.eval_with(req, &version("3.4.3")).unwrap();
        assert!(!new.generic.no_weak_modules);
        assert_eq!(kernel(&new, K55).excluded, None);
        let e = fx.eval_with(fx.module("n", "NO_WEAK_MODULES=YES\n", vec![]), &version("3.4.3")).unwrap();
        assert!(e.generic.no_weak_modules);
    }

    #[test]
    fn no_kernels_gives_the_generic_evaluation_only() {
        let fx = Fx::new();
        let e = fx.eval(fx.module("m", "MAKE=\"make -C $kernel_source_dir\"\nAUTOINSTALL=yes\n", vec![]));
        assert!(e.per_kernel.is_empty());
        assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("3.0.10"), Some([3, 0, 10]));
        assert_eq!(parse_version("3.0.10-8+deb12u1"), Some([3, 0, 10]));
        assert_eq!(parse_version("3.4"), Some([3, 4, 0]));
        assert_eq!(parse_version("dkms"), None);
        assert!(Dialect::new(Some("3.0.10")).conf_build_exclude && !Dialect::new(Some("3.0.10")).min_max);
        assert!(Dialect::new(None).min_max && !Dialect::new(None).unversioned_overrides);
    }

    /// The same confs through dkms 3.0.10's own read_conf (its functions, sourced from the
    /// installed /usr/sbin/dkms) and through `evaluate`. Fails, never skips, where that dkms is not
    /// installed.
    #[test]
    fn agrees_with_the_installed_dkms_3_0_10() {
        let dkms = Path::new("/usr/sbin/dkms");
        let is_3_0_10 = fs::read_to_string(dkms).is_ok_and(|t| t.contains("echo $\"dkms-3.0.10\""));
        // Debian 12's dkms; tests/setup/install-deps.sh installs it. Not a silent skip: without it
        // this comparison cannot be made, and that must show.
        assert!(is_3_0_10, "no dkms 3.0.10 at {}: run tests/setup/install-deps.sh", dkms.display());
        let fx = Fx::new();
        let k = fx.kernel(K56, "x86_64", Some("CONFIG_FOO=y\n"));
        let bodies = [
            "BUILD_EXCLUSIVE_KERNEL='^5\\.'\nAUTOINSTALL=' yes'\n",
            "BUILD_EXCLUSIVE_CONFIG='CONFIG_FOO !CONFIG_BAR'\nBUILD_DEPENDS=(a 'b c')\n",
            "BUILD_EXCLUSIVE_CONFIG='CONFIG_BAR'\nBUILD_EXCLUSIVE_ARCH=x86_64\n",
            "BUILT_MODULE_NAME=('a  b' ' lead' $'x\\ny' 'd$module' 'e\\\\f' '$(echo sub)')\nDEST_MODULE_LOCATION=/extra\n",
            "BUILT_MODULE_NAME=('q\"x')\nAUTOINSTALL=yes\nDEST_MODULE_LOCATION=/extra\nNO_WEAK_MODULES=no\n",
            "OBSOLETE_BY=6.1\nbuild_exclude=yes\nBUILD_EXCLUSIVE_KERNEL_MIN=9\nPACKAGE_VERSION=$kernelver\n",
            "AUTOINSTALL=$(echo yes)\nexit 0\n",
            "AUTOINSTALL=yes\nfalse\n",
        ];
        let opts = version("3.0.10");
        for (i, body) in bodies.iter().enumerate() {
            let m = format!("dt-oracle-{i}");
            let req = fx.module(&m, body, vec![k.clone()]);
            let script = format!(
                "eval \"$(sed -n '1,/^# Set a standard path/p' /usr/sbin/dkms)\"\n\
                 current_os=Linux module={m} module_version=1.0 ksourcedir_fromcli=1 kconfig_fromcli=1\n\
                 kernel_source_dir='{}' kernel_config='{}'\n\
                 read_conf {K56} x86_64 '{}' >/dev/null 2>&1\n\
                 printf '%s\\0' \"$PACKAGE_NAME\" \"$PACKAGE_VERSION\" \"$AUTOINSTALL\" \"${{BUILD_DEPENDS[*]}}\" \
                 \"${{BUILT_MODULE_NAME[*]}}\" \"${{DEST_MODULE_LOCATION[*]}}\" \"$NO_WEAK_MODULES\" \"$build_exclude\"",
                k.kernel_source_dir.display(),
                k.kernel_config.display(),
                req.conf.display()
            );
            let out = Command::new("bash").arg("-c").arg(script).current_dir("/").output().unwrap();
            let theirs: Vec<String> = out.stdout.split(|&b| b == 0).map(text).collect();
            let e = fx.eval_with(req, &opts);
            let ours = match &e {
                Ok(e) => {
                    let v = kernel(e, K56);
                    vec![
                        v.package_name.clone(),
                        v.package_version.clone(),
                        match &v.autoinstall {
                            Autoinstall::Yes => "yes".into(),
                            Autoinstall::No => String::new(),
                            Autoinstall::Other(raw) => raw.clone(),
                        },
                        v.build_depends.join(" "),
                        v.built_module_name.join(" "),
                        v.dest_module_location.join(" "),
                        if v.no_weak_modules { "no".into() } else { String::new() },
                        if v.excluded.is_some() { "yes".into() } else { String::new() },
                    ]
                }
                // dkms ends up without a name or version too (read_conf fails).
                Err(err) => {
                    assert!(err.contains("sets no PACKAGE_"), "{body}: {err}");
                    assert!(theirs[0].is_empty() || theirs[1].is_empty(), "{body}: {theirs:?}");
                    continue;
                }
            };
            assert_eq!(ours[..], theirs[..8], "{body}");
        }
    }
}
