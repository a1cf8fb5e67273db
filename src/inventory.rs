//! The system as the planner sees it, read from the filesystem under the root: kernels (headers,
//! image, arch), DKMS modules and their on-disk state, weak-updates links, fingerprints.

mod dkms_tree;
pub(crate) mod kernels;
mod prints;
pub(crate) mod resolve;
mod sources;
mod trust;
mod weak;

use crate::config::Config;
use crate::dkmsconf::{ConfValues, Evaluated, KernelContext, Options, Request};
use crate::fingerprint::{Fingerprint, SourceDigest};
use crate::paths::{DKMS_ETC, DKMS_SCRIPTS, DKMS_TREE, MODULE_DIRS, OS_RELEASE, SOURCE_TREE};
use crate::root::Root;
use crate::validate::{check, What};
use prints::{KernelCache, Overrides};
use resolve::{relative, resolve};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// (module name, module version).
pub type ModKey = (String, String);

/// Everything the planner reads about the system. Built by `scan`; plain data so that planner
/// tests construct it directly.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub kernels: BTreeMap<String, Kernel>,
    /// `uname -r` of the running system when the root is `/` and that kernel is installed.
    pub running_kernel: Option<String>,
    /// The installed dkms's version ("3.0.10"), read from the dkms script; None if not found.
    pub dkms_version: Option<String>,
    /// The certificate (and key) dkms signs with, as its configuration names them.
    pub certificate: crate::secureboot::Certificate,
    /// dkms's signing key pair exists where its configuration puts it (without it, the first
    /// signed build generates it).
    pub signing_key: bool,
    pub modules: BTreeMap<ModKey, Module>,
    /// Things noticed while scanning that do not stop anything (a dangling build link...).
    pub notes: Vec<String>,
}

/// One installed kernel (a directory under lib/modules or usr/lib/modules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    pub version: String,
    /// Root-relative modules directory with symlinks resolved: `usr/lib/modules/K` on merged-/usr
    /// systems (where lib/modules/K is the same directory), `lib/modules/K` on split ones.
    pub modules_dir: String,
    /// Absolute path of the usable headers (the `build` directory, resolved, containing a Makefile).
    pub headers: Option<PathBuf>,
    /// A kernel image exists (boot/vmlinuz-K or vmlinux-K, or the modules directory's vmlinuz or
    /// vmlinux).
    pub image: bool,
    /// Architecture as dkms names it (`x86_64`), from the headers' .config or the machine.
    pub arch: String,
    /// Root-relative initramfs image for this kernel, when one exists.
    pub initramfs: Option<String>,
    /// Fingerprint of the kernel-side build inputs (headers, kbuild, compiler); empty without headers.
    pub print: Fingerprint,
}

/// One DKMS module version, known from its source (usr/src/M-V/dkms.conf), from dkms's tree
/// (var/lib/dkms/M/V), or both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Module {
    pub name: String,
    pub version: String,
    /// Root-relative source directory when it holds a dkms.conf.
    pub source: Option<String>,
    /// var/lib/dkms/M/V exists (dkms "added").
    pub registered: bool,
    /// Why this module cannot be used at all: dangling `source` link, untrusted source tree,
    /// dkms.conf that failed to evaluate... (dkms "broken" and our own refusals).
    pub broken: Option<String>,
    /// dkms state per (kernel, arch).
    pub builds: BTreeMap<(String, String), Build>,
    /// Kernels that have this module version through weak-updates links: NEW kernel -> OLD kernel
    /// whose build the links point at.
    pub weak: BTreeMap<String, String>,
    /// The evaluated dkms.conf (None when there is no source or it could not be evaluated).
    pub conf: Option<Evaluated>,
    /// Fingerprint of the module-side inputs per kernel (source tree, /etc/dkms overrides), for
    /// every kernel with headers; empty for a broken module.
    pub prints: BTreeMap<String, Fingerprint>,
    /// Bytes in the source tree's files: a stand-in for the build's cost when scheduling.
    pub source_bytes: u64,
    /// The source tree's digest (`source` fingerprint component), also for a broken module: tells
    /// whether an unusable source changed since it was reported.
    pub source_digest: Option<String>,
}

/// dkms's on-disk state of one (module, version, kernel, arch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Build {
    /// `installed` (built and `kernel-K-A` points at this version) or only `built`.
    pub installed: bool,
    /// mtime of the built module directory (ms since the epoch): when it was built.
    pub built_ms: u64,
}

impl Module {
    /// The evaluated values for kernel `k` (falls back to the generic evaluation).
    pub fn conf_for(&self, k: &str) -> Option<Result<&ConfValues, &str>> {
        let ev = self.conf.as_ref()?;
        Some(match ev.per_kernel.get(k) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(e.as_str()),
            None => Ok(&ev.generic),
        })
    }
}

impl Inventory {
    /// The installed version of module `name` on kernel `k` (any arch), if any.
    pub fn installed_version(&self, name: &str, k: &str) -> Option<&str> {
        self.modules
            .values()
            .filter(|m| m.name == name)
            .find(|m| m.builds.iter().any(|((kk, _), b)| kk == k && b.installed))
            .map(|m| m.version.as_str())
    }

    /// The fingerprint a build of `m` for `k` would have now.
    pub fn pair_print(&self, m: &Module, k: &str) -> Option<Fingerprint> {
        let kp = &self.kernels.get(k)?.print;
        let mp = m.prints.get(k)?;
        Some(kp.combine(mp))
    }
}

/// How dkms.conf files are evaluated: `dkmsconf::evaluate`, or a stand-in in tests.
pub type Evaluator<'a> = &'a dyn Fn(&[Request], &Options) -> Vec<Result<Evaluated, String>>;

/// Reads the whole inventory under `root`: kernels, DKMS modules (evaluating their dkms.conf for
/// every kernel with headers), weak-updates links and fingerprints. Read-only; works as non-root.
pub fn scan(root: &Root, config: &Config) -> anyhow::Result<Inventory> {
    scan_with(root, config, &crate::dkmsconf::evaluate)
}

/// `scan` with the dkms.conf evaluation supplied by the caller. It is called once with every
/// trusted, unbroken module (a second time for modules re-keyed by their dkms.conf), never with an
/// empty list.
pub fn scan_with(root: &Root, config: &Config, evaluate: Evaluator<'_>) -> anyhow::Result<Inventory> {
    let mut notes = Vec::new();
    let (release, machine) = uname();
    let mut cache = KernelCache::default();
    let kernels = kernels::scan(root, &machine, &mut cache, &mut notes)?;
    let mut drafts = collect_modules(root, None, &mut notes)?;
    // dkms sources /etc/dkms files for a module: one root may not trust makes it unusable.
    let etc = trust::EtcDkms::check(root);
    for d in drafts.values_mut() {
        if let (None, Some(why)) = (&d.module.broken, etc.against(&d.module.name)) {
            d.module.broken = Some(format!("untrusted /etc/dkms file: {why}"));
        }
        d.read_source(root, config);
    }
    let dkms_version = dkms_version(root);
    let os_release = match root.open_trusted(OS_RELEASE) {
        Ok(t) => Some(t.path),
        Err(crate::root::Distrust::Refused(why)) => {
            notes.push(format!("{why}: not sourced; dkms.conf files see running_distribution=unknown"));
            None
        }
        // Missing: the evaluator falls back to "unknown", as dkms does.
        Err(_) => None,
    };
    let found = Found { kernels: &kernels, dkms_version: dkms_version.as_deref(), os_release, etc: &etc };
    evaluate_modules(root, config, &found, &mut drafts, evaluate);

    let mut overrides = Overrides::load(root);
    let links = weak::links(root, &kernels);
    let mut modules = BTreeMap::new();
    for (key, mut d) in drafts {
        if let (None, Some(source)) = (&d.module.broken, &d.source_print) {
            for k in kernels.values().filter(|k| k.headers.is_some()) {
                let print = overrides.module_side(root, source, &key.0, &key.1, &k.version, &k.arch);
                d.module.prints.insert(k.version.clone(), print);
            }
        }
        d.module.weak = weak::satisfied(&links, &d.module.builds, &d.kos);
        modules.insert(key, d.module);
    }

    let running_kernel = Some(release).filter(|r| root.is_host() && kernels.contains_key(r));
    let certificate = crate::secureboot::certificate_with(root, etc.global());
    let signing_key = certificate.pair_exists(root);
    Ok(Inventory { kernels, running_kernel, dkms_version, certificate, signing_key, modules, notes })
}

/// A module version registered with dkms and the builds dkms has of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub version: String,
    /// By (kernel, arch).
    pub builds: BTreeMap<(String, String), Build>,
    /// Every (kernel, arch) with a build directory, complete or not (an interrupted build too).
    pub present: BTreeSet<(String, String)>,
}

/// What dkms's own tree holds, without evaluating anything: what the removals act on.
pub fn registrations(root: &Root) -> anyhow::Result<Vec<Registration>> {
    let mut notes = Vec::new();
    Ok(dkms_tree::scan(root, &mut notes)?
        .into_iter()
        .map(|r| Registration { name: r.name, version: r.version, builds: r.builds, present: r.present })
        .collect())
}

/// Whether `dir` (a host path) holds a complete dkms build: `module/` with module files in it.
pub fn is_complete_build(root: &Root, dir: &Path) -> bool {
    !dkms_tree::module_files(root, dir).is_empty()
}

/// The DKMS modules as the disk lists them (dkms's tree and the usr/src sources it does not know),
/// with their builds, without evaluating any dkms.conf or fingerprinting anything: the cheap part
/// of `scan`, for the dpkg trigger handler (which sources are new, which kernels have builds).
pub fn modules_on_disk(root: &Root) -> anyhow::Result<BTreeMap<ModKey, Module>> {
    modules_on_disk_for(root, None)
}

/// `modules_on_disk` with the builds of kernel `only` alone (all when None): `boot`'s look at the
/// running kernel, which must stay cheap however many kernels are installed.
pub fn modules_on_disk_for(root: &Root, only: Option<&str>) -> anyhow::Result<BTreeMap<ModKey, Module>> {
    let mut notes = Vec::new();
    let drafts = collect_modules(root, only, &mut notes)?;
    for n in notes {
        log::debug!("inventory: {n}");
    }
    Ok(drafts.into_iter().map(|(key, d)| (key, d.module)).collect())
}

/// Whether kernel `k` has a modules directory (lib/modules/K or usr/lib/modules/K).
pub fn kernel_installed(root: &Root, k: &str) -> bool {
    MODULE_DIRS.iter().any(|d| resolve(root, &Path::new(d).join(k)).is_ok_and(|p| root.is_dir(p)))
}

/// Whether kernel `k`'s `build` link leads to a directory with a Makefile, without the trust check
/// or the fingerprint of `scan` (which a plan does next).
pub fn has_headers(root: &Root, k: &str) -> bool {
    MODULE_DIRS
        .iter()
        .any(|d| resolve(root, &Path::new(d).join(k).join("build")).is_ok_and(|h| root.is_file(h.join("Makefile"))))
}

/// A module while it is being scanned.
struct Draft {
    module: Module,
    /// Resolved source directory (host path) holding a dkms.conf.
    source_dir: Option<PathBuf>,
    /// The source as dkms names it, inside the root: `usr/src/M-V`, or `var/lib/dkms/M/V/source`
    /// for a registered module (the trust rule follows it from there).
    source_named: Option<PathBuf>,
    /// For a module found only in usr/src: the directory name PACKAGE_NAME-PACKAGE_VERSION must match.
    dir_name: Option<String>,
    source_print: Option<SourceDigest>,
    /// Module file names per build (for weak-updates).
    kos: BTreeMap<(String, String), Vec<String>>,
}

impl Draft {
    fn new(name: &str, version: &str, registered: bool) -> Draft {
        Draft {
            module: Module {
                name: name.to_string(),
                version: version.to_string(),
                source: None,
                registered,
                broken: None,
                builds: BTreeMap::new(),
                weak: BTreeMap::new(),
                conf: None,
                prints: BTreeMap::new(),
                source_bytes: 0,
                source_digest: None,
            },
            source_dir: None,
            source_named: None,
            dir_name: None,
            source_print: None,
            kos: BTreeMap::new(),
        }
    }

    /// Walks the source tree once: for the trust check and for the `source` fingerprint.
    fn read_source(&mut self, root: &Root, config: &Config) {
        let Some(dir) = self.source_dir.as_ref().filter(|_| self.module.broken.is_none()) else { return };
        match prints::walk(root, dir) {
            Ok(entries) => {
                if !config.allow_untrusted_sources {
                    let named = self.source_named.as_deref().unwrap_or(dir);
                    if let Some(why) = sources::distrust(root, named, dir, &entries) {
                        self.module.broken =
                            Some(format!("untrusted source: {why} (allow_untrusted_sources = true accepts it)"));
                    }
                }
                let digest = SourceDigest::of(&entries);
                self.module.source_digest = Some(digest.0.finish());
                self.source_print = Some(digest);
                self.module.source_bytes = entries.iter().filter(|e| e.md.is_file()).map(|e| e.md.len()).sum();
            }
            Err(e) => self.module.broken = Some(format!("cannot read {}: {e}", relative(root, dir))),
        }
    }
}

/// Registered module versions (var/lib/dkms) and unregistered sources (usr/src) by (name, version),
/// with the builds of kernel `only` (all when None).
fn collect_modules(
    root: &Root,
    only: Option<&str>,
    notes: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<ModKey, Draft>> {
    let mut drafts = BTreeMap::new();
    for r in dkms_tree::scan_kernels(root, only, notes)? {
        let mut d = Draft::new(&r.name, &r.version, true);
        match r.source {
            Ok(dir) => match sources::conf_file(root, &dir) {
                Some(_) => {
                    d.module.source = Some(relative(root, &dir));
                    d.source_dir = Some(dir);
                    d.source_named = Some(Path::new(DKMS_TREE).join(&r.name).join(&r.version).join("source"));
                }
                None => d.module.broken = Some(format!("{} has no dkms.conf", relative(root, &dir))),
            },
            Err(why) => d.module.broken = Some(why),
        }
        d.module.builds = r.builds;
        d.kos = r.kos;
        drafts.insert((r.name, r.version), d);
    }
    let known: HashSet<PathBuf> = drafts.values().filter_map(|d| d.source_dir.clone()).collect();
    for u in sources::scan(root, &known, notes)? {
        let key = (u.name, u.version);
        if drafts.contains_key(&key) {
            notes.push(format!(
                "{SOURCE_TREE}/{}: {}/{} is registered with another source; ignored",
                u.dir_name, key.0, key.1
            ));
            continue;
        }
        let mut d = Draft::new(&key.0, &key.1, false);
        d.module.source = Some(relative(root, &u.dir));
        d.source_dir = Some(u.dir);
        d.source_named = Some(Path::new(SOURCE_TREE).join(&u.dir_name));
        d.dir_name = Some(u.dir_name);
        drafts.insert(key, d);
    }
    Ok(drafts)
}

/// Evaluates the dkms.conf of every usable module for every kernel with headers and checks that
/// it names the module it was found as. A module found only in usr/src whose directory name was
/// split wrongly (`a-b-1` as a/b-1) is re-keyed to what its dkms.conf says and evaluated again,
/// since override file names depend on the name.
fn evaluate_modules(
    root: &Root,
    config: &Config,
    found: &Found,
    drafts: &mut BTreeMap<ModKey, Draft>,
    evaluate: Evaluator<'_>,
) {
    let contexts: Vec<KernelContext> = found
        .kernels
        .values()
        .filter_map(|k| {
            let h = k.headers.as_ref()?;
            Some(KernelContext {
                kernelver: k.version.clone(),
                arch: k.arch.clone(),
                kernel_source_dir: h.clone(),
                kernel_config: h.join(".config"),
            })
        })
        .collect();
    let opts = Options {
        root: root.clone(),
        dkms_tree: root.path(DKMS_TREE),
        source_tree: root.path(SOURCE_TREE),
        install_tree: root.path(install_tree(root)),
        override_dir: root.path(DKMS_ETC),
        timeout: Duration::from_secs(config.eval_timeout),
        parallel: std::thread::available_parallelism().map_or(1, |n| n.get()),
        dkms_version: found.dkms_version.map(str::to_string),
        os_release: found.os_release.clone(),
    };
    let mut pending: Vec<(ModKey, PathBuf)> = drafts
        .iter()
        .filter(|(_, d)| d.module.broken.is_none())
        .filter_map(|(key, d)| Some((key.clone(), sources::conf_file(root, d.source_dir.as_ref()?)?)))
        .collect();
    for second_round in [false, true] {
        if pending.is_empty() {
            break;
        }
        let requests: Vec<Request> = pending
            .iter()
            .map(|((m, v), conf)| Request {
                module: m.clone(),
                version: v.clone(),
                conf: conf.clone(),
                kernels: contexts.clone(),
            })
            .collect();
        let mut results = evaluate(&requests, &opts).into_iter();
        let mut rekeyed = Vec::new();
        for (key, conf) in pending.drain(..) {
            let result = results.next().unwrap_or_else(|| Err("the evaluator returned no result".into()));
            let ev = match result {
                Ok(ev) => ev,
                Err(e) => {
                    drafts.get_mut(&key).expect("pending module").module.broken = Some(format!("dkms.conf: {e}"));
                    continue;
                }
            };
            let named = (ev.generic.package_name.clone(), ev.generic.package_version.clone());
            let free = !drafts.contains_key(&named);
            let d = drafts.get_mut(&key).expect("pending module");
            if named != key {
                let dir_agrees = d.dir_name.as_deref() == Some(format!("{}-{}", named.0, named.1).as_str());
                let valid = check(What::ModuleName, &named.0).is_ok() && check(What::ModuleVersion, &named.1).is_ok();
                if dir_agrees && valid && free && !second_round && !d.module.registered {
                    rekeyed.push((key, named, conf));
                    continue;
                }
                d.module.broken = Some(match &d.dir_name {
                    Some(dir) => format!(
                        "dkms.conf says PACKAGE_NAME={} PACKAGE_VERSION={}, which does not match its directory {SOURCE_TREE}/{dir}",
                        named.0, named.1
                    ),
                    None => format!(
                        "dkms.conf says PACKAGE_NAME={} PACKAGE_VERSION={}, but it is registered as {}/{}",
                        named.0, named.1, key.0, key.1
                    ),
                });
            }
            d.module.conf = Some(ev);
        }
        for (old, new, conf) in rekeyed {
            let mut d = drafts.remove(&old).expect("pending module");
            d.module.name = new.0.clone();
            d.module.version = new.1.clone();
            // Its override files are those of its real name.
            let refused = found.etc.against(&new.0).map(|why| format!("untrusted /etc/dkms file: {why}"));
            let usable = refused.is_none();
            d.module.broken = refused;
            drafts.insert(new.clone(), d);
            if usable {
                pending.push((new, conf));
            }
        }
    }
}

/// What the scan found that the evaluation of dkms.conf files needs.
struct Found<'a> {
    kernels: &'a BTreeMap<String, Kernel>,
    dkms_version: Option<&'a str>,
    /// The os-release file to source for `running_distribution`, when it passed the trust rule.
    os_release: Option<PathBuf>,
    etc: &'a trust::EtcDkms,
}

/// The modules tree dkms installs into (`install_tree`): the first of MODULE_DIRS that exists.
fn install_tree(root: &Root) -> &'static str {
    MODULE_DIRS
        .into_iter()
        .find(|d| resolve(root, Path::new(d)).is_ok_and(|p| root.is_dir(p)))
        .unwrap_or(MODULE_DIRS[0])
}

/// Entry names of a directory, sorted (non-UTF-8 names lossily, so that they fail validation).
fn sorted_names(root: &Root, dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(root.list(dir)?.into_iter().map(|n| n.to_string_lossy().into_owned()).collect())
}

/// The installed dkms's version, read from its script under the root.
fn dkms_version(root: &Root) -> Option<String> {
    DKMS_SCRIPTS.iter().find_map(|p| {
        let path = resolve(root, Path::new(p)).ok()?;
        parse_dkms_version(&String::from_utf8_lossy(&root.read(path).ok()?))
    })
}

/// dkms 3.0.10 prints its version with `echo $"dkms-3.0.10"`, 3.4 with `echo "dkms-3.4.3"` (its
/// Makefile substitutes @RELEASE_STRING@; an unsubstituted script has no version).
fn parse_dkms_version(script: &str) -> Option<String> {
    let re = regex::Regex::new(r#"echo \$?"dkms-([0-9][0-9A-Za-z.+~-]*)""#).expect("valid regex");
    re.captures(script).map(|c| c[1].to_string())
}

/// `uname -r` and `uname -m` of the running system.
/// Why dkms's framework configuration (/etc/dkms itself, framework.conf, framework.conf.d) fails
/// the trust rule, if it does: then nothing sources it.
pub(crate) fn etc_dkms_problem(root: &Root) -> Option<String> {
    trust::EtcDkms::check(root).global().map(str::to_string)
}

pub(crate) use dkms_tree::module_files;

pub(crate) fn uname() -> (String, String) {
    // SAFETY: uname() only writes into the struct it is given, whose fields it NUL-terminates.
    let mut u: nix::libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { nix::libc::uname(&mut u) } != 0 {
        return (String::new(), std::env::consts::ARCH.to_string());
    }
    let field = |f: &[nix::libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.release), field(&u.machine))
}

#[cfg(test)]
mod tests;
