//! The Debian hooks: /etc/kernel/{postinst.d,header_postinst.d,prerm.d}/dkms-trigger and the dpkg
//! trigger handler of dkms-trigger's own postinst (docs/debian.md).

use super::{ancestors, finalize_or_warn, kernel_arg, record, remove_kernel_or_warn, warn, Load};
use crate::exit::Code;
use crate::finalize;
use crate::intent::Intent;
use crate::inventory::resolve::resolve;
use crate::inventory::{self, ModKey, Module};
use crate::paths::{self, BOOT_DIR, MODULE_DIRS, PROC_DIR};
use crate::removal;
use crate::root::{self, MetadataExt, Root};
use crate::runner::Cmd;
use crate::ui;
use crate::validate::{self, What};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// The package whose trigger the kernel hooks activate (debian/dkms-trigger.triggers).
const PACKAGE: &str = "dkms-trigger";
/// dpkg-query and dpkg-trigger answer at once; this only bounds a hung one.
const DPKG_TIMEOUT: Duration = Duration::from_secs(120);

/// What the kernel hooks read from the environment dpkg and the kernel packages give them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebEnv {
    /// DPKG_MAINTSCRIPT_PACKAGE when not empty: inside dpkg (dpkg-reconfigure sets it too).
    pub package: Option<String>,
    /// DEB_MAINT_PARAMS when set, even empty: the kernel package's maintainer-script arguments
    /// (the image scripts, and linux-run-hooks for the 6.12 and later headers, pass them).
    pub maint_params: Option<String>,
    /// DEBCONF_RECONFIGURE=1: under dpkg-reconfigure.
    pub reconfigure: bool,
}

impl DebEnv {
    pub fn from_env() -> DebEnv {
        DebEnv {
            package: std::env::var("DPKG_MAINTSCRIPT_PACKAGE").ok().filter(|p| !p.is_empty()),
            maint_params: std::env::var_os("DEB_MAINT_PARAMS").map(|p| p.to_string_lossy().into_owned()),
            reconfigure: std::env::var("DEBCONF_RECONFIGURE").is_ok_and(|v| v == "1"),
        }
    }

    /// The maintainer-script arguments: DEB_MAINT_PARAMS when set, else (inside dpkg) what the
    /// ancestors' command lines say (`ancestors(package)`), else none.
    fn params(&self, ancestors: impl FnOnce(&str) -> Option<Vec<String>>) -> Vec<String> {
        match (&self.maint_params, &self.package) {
            (Some(p), _) => p.split_whitespace().map(str::to_string).collect(),
            (None, Some(pkg)) => ancestors(pkg).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// `--force` for a headers change: the same KVER configured again, by dpkg-reconfigure or by
/// `postinst configure OLD-VERSION` (an upgrade or reinstall: KVER is part of the package name, so
/// any earlier version of the package had the same KVER). `ancestors` is asked only when needed.
pub fn headers_force(env: &DebEnv, ancestors: impl FnOnce(&str) -> Option<Vec<String>>) -> bool {
    if env.reconfigure {
        return true;
    }
    let params = env.params(ancestors);
    log::debug!("maintainer-script arguments {params:?}");
    params.first().is_some_and(|a| a == "configure") && params.get(1).is_some_and(|v| !v.is_empty())
}

/// The image prerm runs the hooks for `remove` only; be sure when DEB_MAINT_PARAMS says what it
/// does (unset or empty: the caller did not say, and the hooks are run on removal).
pub fn prerm_applies(env: &DebEnv) -> bool {
    match env.maint_params.as_deref().filter(|p| !p.is_empty()) {
        None => true,
        Some(p) => p == "remove" || p.starts_with("remove "),
    }
}

/// How a kernel hook hands what it recorded to the finalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Activate dkms-trigger's dpkg trigger: the finalizer runs once, at the end of the dpkg run.
    Trigger,
    /// Finalize now: outside dpkg (installkernel, run-parts by hand) there is no end of transaction
    /// to wait for, and installed from source (`make install-debian`) nobody answers the trigger.
    FinalizeNow,
}

/// `status`: dkms-trigger's `${db:Status-Abbrev}` from dpkg-query (None when it has none). A
/// package unpacked, half-configured, awaiting or pending triggers, or installed has its trigger
/// interest registered.
pub fn handoff(env: &DebEnv, status: Option<&str>) -> Handoff {
    let registered = status.and_then(|s| s.chars().nth(1)).is_some_and(|c| "UFWti".contains(c));
    if env.package.is_some() && registered {
        Handoff::Trigger
    } else {
        Handoff::FinalizeNow
    }
}

/// `hook debian-kernel-postinst KVER [IMAGE]`. Any postinst action leaves the kernel installed, so
/// whatever DEB_MAINT_PARAMS says it is recorded (the planner builds only what is missing).
///
/// When an initramfs hook (initramfs-tools', dracut's) runs after ours for this kernel, its image
/// must be made once, with the modules: inside dpkg the kernel's pairs that can be built now are
/// built before the hook returns (`finalize::early`; the trigger's finalize does the rest), and
/// outside dpkg the finalize leaves the image to that hook (docs/debian.md, "One initramfs
/// generation").
pub fn kernel_postinst(root: &Root, env: &DebEnv, args: &[String], load: Load) -> Result<Code> {
    ui::set_quiet(true);
    let Some(kver) = kernel_arg("debian-kernel-postinst", args, "nothing recorded") else { return Ok(Code::Ok) };
    let source = format!("{}:postinst.d", env.package.as_deref().unwrap_or("installkernel"));
    let follows = initramfs_hook_after_ours(root);
    let intent = Intent::KernelAdded { kernel: kver.clone() };
    let code = record_and_hand_off(root, env, intent, &source, load, follows.is_some().then_some(kver.as_str()))?;
    if let (Some(hook), Handoff::Trigger) = (follows, handoff_of(root, env)) {
        if code == Code::Ok && !root.is_host() {
            log::info!("not building for {kver} ahead of {hook}: the root is not /");
        } else if code == Code::Ok {
            let built = load().and_then(|c| finalize::early(root, &c, &kver, &|c| unsettled(root, c)));
            if let Err(e) = built {
                warn(format!("building for {kver} before {hook} failed: {e:#}; the end of the transaction does it"));
            }
        }
    }
    Ok(code)
}

/// The initramfs hook of /etc/kernel/postinst.d that run-parts runs after ours, if any.
pub fn initramfs_hook_after_ours(root: &Root) -> Option<&'static str> {
    paths::DEBIAN_INITRAMFS_HOOKS.into_iter().filter(|h| *h > paths::OUR_KERNEL_HOOK).find(|h| {
        root.stat(Path::new(paths::KERNEL_POSTINST_DIR).join(h)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
    })
}

/// Of the modules a kernel hook could build now (with their source directories), those whose
/// source belongs to a package dpkg has not configured yet: in this transaction their package's
/// postinst has not run, and what it brings with it may not be in place either. When dpkg cannot
/// say, all of them (the end of the transaction builds them).
fn unsettled(root: &Root, candidates: &[(ModKey, String)]) -> BTreeSet<ModKey> {
    let all = || candidates.iter().map(|(k, _)| k.clone()).collect();
    let dpkg_query = || {
        let c = Cmd::new("dpkg-query");
        if root.is_host() {
            c
        } else {
            c.arg(format!("--root={}", root.dir().display()))
        }
    };
    let dirs: Vec<String> = candidates.iter().map(|(_, d)| format!("/{}", d.trim_start_matches('/'))).collect();
    // Exit status 1 when some path belongs to no package (a source made by hand): its output still
    // lists the others.
    let Ok(owners) = dpkg_query().arg("-S").arg("--").args(&dirs).timeout(DPKG_TIMEOUT).output() else { return all() };
    let owned = parse_search(&owners.stdout);
    let packages: BTreeSet<&str> = owned.values().flatten().map(String::as_str).collect();
    if packages.is_empty() {
        return BTreeSet::new();
    }
    let status = dpkg_query()
        .args(["-W", "-f=${binary:Package}\t${db:Status-Abbrev}\n", "--"])
        .args(packages.iter().copied())
        .timeout(DPKG_TIMEOUT)
        .output();
    let Some(status) = status.ok().filter(|r| r.ok()) else { return all() };
    let configured: BTreeSet<&str> = status
        .stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, st)| st.chars().nth(1).is_some_and(|c| "itW".contains(c)))
        .map(|(p, _)| p)
        .collect();
    let bare = |p: &str| p.split(':').next().unwrap_or(p).to_string();
    let configured: BTreeSet<String> = configured.iter().flat_map(|p| [p.to_string(), bare(p)]).collect();
    candidates
        .iter()
        .zip(&dirs)
        .filter(|(_, dir)| owned.get(dir.as_str()).is_some_and(|ps| ps.iter().any(|p| !configured.contains(p))))
        .map(|((k, _), _)| k.clone())
        .collect()
}

/// `dpkg-query -S` output: path -> the packages that own it ("pkg1, pkg2: /path"; diversion lines
/// are not ownership).
pub fn parse_search(text: &str) -> BTreeMap<&str, Vec<String>> {
    let mut owned = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("diversion by ") || line.starts_with("local diversion ") {
            continue;
        }
        if let Some((pkgs, path)) = line.split_once(": ") {
            let list = pkgs.split(", ").map(str::trim).filter(|p| !p.is_empty()).map(str::to_string);
            owned.entry(path.trim()).or_insert_with(Vec::new).extend(list);
        }
    }
    owned
}

/// How a kernel hook hands off on this system now (`handoff`).
fn handoff_of(root: &Root, env: &DebEnv) -> Handoff {
    let status = env.package.as_ref().and_then(|_| dpkg_status(root));
    handoff(env, status.as_deref())
}

/// `hook debian-headers-postinst KVER`: headers-changed, forced when the same KVER is configured
/// again (docs/debian.md, "Same-KVER headers changes").
pub fn headers_postinst(root: &Root, env: &DebEnv, args: &[String], load: Load) -> Result<Code> {
    ui::set_quiet(true);
    let Some(kver) = kernel_arg("debian-headers-postinst", args, "nothing recorded") else { return Ok(Code::Ok) };
    let force = headers_force(env, |pkg| {
        let start = nix::unistd::getppid().as_raw() as u32;
        ancestors::find_params(start, pkg, |pid| ancestors::read_proc(Path::new(PROC_DIR), pid))
    });
    let source = format!("{}:header_postinst.d", env.package.as_deref().unwrap_or("manual"));
    record_and_hand_off(root, env, Intent::HeadersChanged { kernel: kver, force }, &source, load, None)
}

/// `hook debian-kernel-prerm KVER [IMAGE]`: the kernel's DKMS builds are removed now (its files go
/// before the end of the transaction). Never blocks the removal: always exit 0.
pub fn kernel_prerm(root: &Root, env: &DebEnv, args: &[String], load: Load) -> Result<Code> {
    ui::set_quiet(true);
    let Some(kver) = kernel_arg("debian-kernel-prerm", args, "nothing removed") else { return Ok(Code::Ok) };
    if !prerm_applies(env) {
        log::debug!("DEB_MAINT_PARAMS {:?}: not a removal", env.maint_params);
        return Ok(Code::Ok);
    }
    remove_kernel_or_warn(root, &kver, load);
    Ok(Code::Ok)
}

/// `hook debian-module-postinst NAME VERSION [...]` (common.postinst's arguments). Exit status:
/// 1 when the source cannot be used (untrusted, a dkms.conf dkms would refuse...) and this state of
/// it was not reported yet: the module package that brought or changed it fails to configure,
/// naming it; the next attempt with the same source exits 0 with a warning, so that later
/// transactions are not held up by it (`status` keeps showing it). 1 as well when nothing could be
/// recorded; otherwise 0 (a build failure is the finalizer's to report).
pub fn module_postinst(root: &Root, env: &DebEnv, args: &[String], load: Load) -> Result<Code> {
    ui::set_quiet(true);
    let (Some(name), Some(version)) = (args.first(), args.get(1)) else {
        warn("debian-module-postinst: expected NAME VERSION; nothing recorded");
        return Ok(Code::Ok);
    };
    if let Err(e) = validate::check(What::ModuleName, name).and_then(|_| validate::check(What::ModuleVersion, version))
    {
        warn(format!("debian-module-postinst: {e}; nothing recorded"));
        return Ok(Code::Ok);
    }
    if !root.is_dir(format!("{}/{name}-{version}", paths::SOURCE_TREE)) {
        // A binary-only or tarball package: nothing of ours to build.
        warn(format!("{name}/{version}: no source in /{}/{name}-{version}; nothing recorded", paths::SOURCE_TREE));
        return Ok(Code::Ok);
    }
    let config = load()?;
    let inventory = inventory::scan(root, &config)?;
    let module = inventory.modules.get(&(name.clone(), version.clone()));
    if let Some(why) = module.and_then(|m| m.broken.as_deref()) {
        let state = module.and_then(|m| m.source_digest.clone()).unwrap_or_default();
        return Ok(report_unusable(root, name, version, why, &state));
    }
    forget_unusable(root, name, version);
    let source = format!("{}:common.postinst", env.package.as_deref().unwrap_or("manual"));
    let intent = Intent::ModuleChanged { module: name.clone(), version: version.clone() };
    record_and_hand_off(root, env, intent, &source, load, None)
}

/// Reports an unusable source: an error the first time for this state of it (`state`, the source
/// tree's digest, remembered in UNUSABLE_DIR), a warning afterwards.
fn report_unusable(root: &Root, name: &str, version: &str, why: &str, state: &str) -> Code {
    let marker = format!("{name}-{version}");
    let dir = root.path(paths::UNUSABLE_DIR);
    let reported = root.read_to_string(dir.join(&marker)).is_ok_and(|s| s.trim() == state && !state.is_empty());
    if reported {
        warn(format!(
            "{name}/{version} cannot be used: {why} (reported when its package brought it; `dkms-trigger status` lists it)"
        ));
        return Code::Ok;
    }
    eprintln!("dkms-trigger: error: {name}/{version} cannot be used: {why}");
    let remembered =
        root.private_dir(paths::UNUSABLE_DIR).and_then(|d| root.write_atomic(&d, &marker, state.as_bytes()));
    if let Err(e) = remembered {
        warn(format!("could not remember that {name}/{version} was reported: {e:#}"));
    }
    Code::Failure
}

/// Forgets that `name`/`version` was reported unusable (it is usable now, or gone).
pub fn forget_unusable(root: &Root, name: &str, version: &str) {
    let _ = root.remove_file(root.path(paths::UNUSABLE_DIR).join(format!("{name}-{version}")));
}

/// Records, then hands off. Exit status policy (docs/debian.md, "Hook exit status"): nothing
/// recorded is 1, so that dpkg leaves the kernel package half-configured and runs the hook again;
/// after that, 0 whatever the finalizer says (a module never fails a kernel's configuration).
///
/// `follows`: the kernel whose initramfs a hook after ours makes; a finalize run here leaves it.
fn record_and_hand_off(
    root: &Root,
    env: &DebEnv,
    intent: Intent,
    source: &str,
    load: Load,
    follows: Option<&str>,
) -> Result<Code> {
    if let Err(e) = record(root, std::slice::from_ref(&intent), source) {
        eprintln!("dkms-trigger: error: could not record {intent}: {e:#}");
        return Ok(Code::Failure);
    }
    if handoff_of(root, env) == Handoff::Trigger {
        let mut c = Cmd::new("dpkg-trigger");
        if !root.is_host() {
            c = c.arg(format!("--root={}", root.dir().display()));
        }
        match c.args(["--no-await", PACKAGE]).timeout(DPKG_TIMEOUT).output() {
            Ok(r) if r.ok() => return Ok(Code::Ok),
            Ok(r) => warn(format!("{}; finalizing now", r.explain())),
            Err(e) => warn(format!("{e:#}; finalizing now")),
        }
    }
    let opts = finalize::Options {
        initramfs_follows: follows.into_iter().map(str::to_string).collect(),
        ..Default::default()
    };
    finalize_or_warn(root, load, &opts);
    Ok(Code::Ok)
}

/// dkms-trigger's `${db:Status-Abbrev}` ("ii "), None when dpkg does not know it (or cannot say).
fn dpkg_status(root: &Root) -> Option<String> {
    let mut c = Cmd::new("dpkg-query");
    if !root.is_host() {
        c = c.arg(format!("--root={}", root.dir().display()));
    }
    let r = c.args(["-W", "-f=${db:Status-Abbrev}", PACKAGE]).timeout(DPKG_TIMEOUT).output().ok()?;
    r.ok().then_some(r.stdout)
}

/// `hook dpkg-triggered NAMES`: dkms-trigger's `postinst triggered`. dpkg names the triggers (the
/// interest paths for file triggers), never the files, so a file trigger is followed by finding
/// out: sources DKMS does not know are recorded as module-changed (their package's failure to build
/// is then an error), kernels that are gone lose their builds, and a rescan does the rest. Then the
/// finalizer runs; its exit status is the handler's.
pub fn triggered(root: &Root, triggers: &str, load: Load) -> Result<Code> {
    root::require_root("hook dpkg-triggered")?;
    if !file_triggered(triggers) {
        return finalize::run(root, &load()?, &finalize::Options::default());
    }
    let modules = inventory::modules_on_disk(root)?;
    let mut new = new_sources(&modules);
    let config = load();
    if !new.is_empty() {
        // Only sources that can be used: one that cannot was reported by its package's own
        // configuration (module_postinst), and must not fail every later trigger run.
        if let Ok(c) = &config {
            match inventory::scan(root, c) {
                Ok(inv) => new.retain(|i| usable(&inv, i)),
                Err(e) => warn(format!("could not check the new module sources: {e:#}")),
            }
        }
        if let Err(e) = record(root, &new, "dpkg-trigger:new-source") {
            warn(format!("could not record new module sources ({e:#}); the rescan builds them"));
        }
    }
    let gone: Vec<String> = kernels_with_builds(&modules)
        .into_iter()
        .map(|k| kernel_facts(root, k))
        .filter(is_gone)
        .map(|f| f.kernel)
        .collect();
    match &config {
        Ok(c) => {
            for k in &gone {
                match removal::remove_kernel(root, c, k) {
                    Ok(0) => {}
                    Ok(n) => ui::info(format!("dkms-trigger: removed {n} DKMS build(s) for {k}")),
                    Err(e) => warn(format!("could not remove the DKMS builds of {k}, which is gone: {e:#}")),
                }
            }
        }
        Err(e) if !gone.is_empty() => {
            warn(format!("could not remove the DKMS builds of {}, which are gone: {e:#}", gone.join(", ")))
        }
        Err(_) => {}
    }
    prune_unusable(root);
    record(root, &[Intent::Rescan], &trigger_source(triggers))?;
    finalize::run(root, &config?, &finalize::Options::default())
}

/// Drops the "reported unusable" notes of sources that are gone.
fn prune_unusable(root: &Root) {
    let dir = root.path(paths::UNUSABLE_DIR);
    for name in root.list(&dir).unwrap_or_default() {
        let name = name.to_string_lossy();
        if validate::check(What::ModuleName, &name).is_ok() && !root.is_dir(format!("{}/{name}", paths::SOURCE_TREE)) {
            let _ = root.remove_file(dir.join(name.as_ref()));
        }
    }
}

/// Whether a module-changed intent names a module the inventory can use (not broken or untrusted).
fn usable(inv: &inventory::Inventory, i: &Intent) -> bool {
    match i {
        Intent::ModuleChanged { module, version } => {
            inv.modules.get(&(module.clone(), version.clone())).is_some_and(|m| m.broken.is_none())
        }
        _ => true,
    }
}

/// dpkg passes file triggers by their interest path, explicit ones by name.
pub fn file_triggered(triggers: &str) -> bool {
    triggers.split_whitespace().any(|t| t.starts_with('/'))
}

/// `dpkg-trigger:/usr/src,/usr/lib/gcc`: the rescan's source, naming what fired.
pub fn trigger_source(triggers: &str) -> String {
    format!("dpkg-trigger:{}", triggers.split_whitespace().collect::<Vec<_>>().join(","))
}

/// Module sources in usr/src that DKMS has not registered. With dkms's autoinstall taken over,
/// common.postinst no longer runs `dkms add`, so a source that appeared in this dpkg run came with
/// its module package.
pub fn new_sources(modules: &BTreeMap<ModKey, Module>) -> Vec<Intent> {
    modules
        .values()
        .filter(|m| !m.registered && m.source.is_some())
        .map(|m| Intent::ModuleChanged { module: m.name.clone(), version: m.version.clone() })
        .collect()
}

/// Kernels some DKMS module has a build for.
pub fn kernels_with_builds(modules: &BTreeMap<ModKey, Module>) -> BTreeSet<String> {
    modules.values().flat_map(|m| m.builds.keys().map(|(k, _)| k.clone())).collect()
}

/// What is left of a kernel under the root, as far as telling "gone" goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelFacts {
    pub kernel: String,
    /// lib/modules/K or usr/lib/modules/K is a directory.
    pub modules_dir: bool,
    /// Its `build` link leads somewhere (the headers are there).
    pub headers: bool,
    /// boot/vmlinuz-K exists.
    pub image: bool,
    /// modules.builtin or the kernel/ tree exists: the image package's files are there.
    pub image_files: bool,
}

/// A kernel whose headers were removed and that has no image either: it is gone, and so are its
/// DKMS builds. A kernel whose image stays keeps its modules (its own removal runs prerm.d). A
/// kernel without a modules directory at all is left alone, as the hook always did.
pub fn is_gone(f: &KernelFacts) -> bool {
    f.modules_dir && !f.headers && !f.image && !f.image_files
}

/// Looks `kernel` up under the root, following links inside it.
pub fn kernel_facts(root: &Root, kernel: String) -> KernelFacts {
    let exists = |rel: String| resolve(root, Path::new(&rel)).is_ok();
    let in_dirs = |name: &str| MODULE_DIRS.iter().any(|d| exists(format!("{d}/{kernel}/{name}")));
    KernelFacts {
        modules_dir: MODULE_DIRS
            .iter()
            .any(|d| resolve(root, Path::new(&format!("{d}/{kernel}"))).is_ok_and(|p| root.is_dir(p))),
        headers: in_dirs("build"),
        image: exists(format!("{BOOT_DIR}/vmlinuz-{kernel}")),
        image_files: in_dirs("modules.builtin") || in_dirs("kernel"),
        kernel,
    }
}
