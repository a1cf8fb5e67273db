//! `dkms-trigger boot` (dkms-trigger.service): a finalize at boot for what an interrupted
//! transaction left, plus the running kernel's DKMS modules when a cheap look finds some with no
//! trace for it (a kernel installed by a tool that bypassed the hooks).
//!
//! The look reads directory names only (dkms's tree, usr/src, the kernel's `build` link), the
//! state and the marker file; it evaluates no dkms.conf and fingerprints nothing, so a boot with
//! nothing to do costs what an idle finalize costs. Only when a module has no trace for the running
//! kernel is a `kernel-added` for it planned (not recorded: a boot that is stopped leaves nothing
//! pending, and the next boot looks again). What that plan does not touch (a module that is not
//! AUTOINSTALL, or whose dkms.conf fails) leaves no state record, so it goes into the marker
//! `var/lib/dkms-trigger/boot-checked`: otherwise every boot would pay for the full scan again.

use crate::config::Config;
use crate::exit::Code;
use crate::finalize;
use crate::intent::Intent;
use crate::inventory::{self, ModKey, Module};
use crate::lock::{FinalizeLock, Waiting};
use crate::paths;
use crate::root::{self, Root};
use crate::state::{Outcome, State};
use crate::statefile;
use crate::ui;
use crate::validate::{check, What};
use crate::version;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What the cheap look decided about the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every module with a source has a trace for the kernel (or the kernel is not installed here).
    Nothing,
    /// These modules (`name/version`, the version kernel events build) have none: plan the kernel
    /// as added.
    Missing(Vec<String>),
    /// They have none and the kernel has no headers to build them with.
    NoHeaders(Vec<String>),
}

/// What the cheap look reads about the running kernel.
#[derive(Debug, Clone, Copy)]
pub struct KernelFacts {
    /// A modules directory (lib/modules/K or usr/lib/modules/K) exists.
    pub installed: bool,
    /// Its `build` link leads to a directory with a Makefile.
    pub headers: bool,
}

/// Runs `boot`: the finalize, with the running kernel planned as added when the look says so.
pub fn run(root: &Root, config: &Config) -> Result<Code> {
    root::require_root("boot")?;
    let mut opts = finalize::Options::default();
    let kernel = running_kernel(root);
    let verdict = match &kernel {
        None => {
            log::info!("boot: the running kernel's release is unknown under this root; only pending work is done");
            Verdict::Nothing
        }
        // The look failing must not cost the pending work: say so and go on.
        Some(k) => look(root, k).unwrap_or_else(|e| {
            ui::warn(format!("not looking for DKMS modules missing on the running kernel {k}: {e:#}"));
            Verdict::Nothing
        }),
    };
    let k = kernel.as_deref().unwrap_or_default();
    match &verdict {
        Verdict::Nothing => log::debug!("boot: nothing to catch up for the running kernel {k}"),
        Verdict::Missing(names) => {
            ui::info(format!(
                "dkms-trigger: the running kernel {k} has no DKMS build or record of {}; planning it as added",
                names.join(", ")
            ));
            opts.also.push(Intent::KernelAdded { kernel: k.to_string() });
        }
        Verdict::NoHeaders(names) => ui::warn(format!(
            "the running kernel {k} has no headers, so {} cannot be built for it: install {} \
             (its hooks then build them)",
            names.join(", "),
            headers_package(root, k)
        )),
    }
    let code = finalize::run(root, config, &opts)?;
    if matches!(verdict, Verdict::Missing(_)) {
        // Only the next boot's cost depends on it: a failure here is not the boot's.
        if let Err(e) = remember(root, k) {
            ui::warn(format!("{e:#} (the next boot looks at the running kernel again)"));
        }
    }
    Ok(code)
}

/// The running kernel's release: `ROOT/proc/sys/kernel/osrelease`, read through the root handle
/// (so that a chroot, whose uname(2) is the host's, can be shown another kernel by a file
/// bind-mounted over it in a private mount namespace, and a fake root can hold one), else uname(2)
/// when the root is the running system. None for a root without /proc, or a name that is not a
/// kernel version.
pub fn running_kernel(root: &Root) -> Option<String> {
    let release = match root.read_to_string(paths::PROC_OSRELEASE_IN_ROOT) {
        Ok(s) => s.trim().to_string(),
        Err(_) if root.is_host() => inventory::uname().0,
        Err(_) => return None,
    };
    match check(What::KernelVersion, &release) {
        Ok(()) => Some(release),
        Err(e) => {
            log::info!("boot: running kernel release refused: {e}");
            None
        }
    }
}

/// The cheap look at the running kernel `k`.
pub fn look(root: &Root, k: &str) -> Result<Verdict> {
    let facts =
        KernelFacts { installed: inventory::kernel_installed(root, k), headers: inventory::has_headers(root, k) };
    if !facts.installed {
        // A container, or a kernel booted from elsewhere: nothing of it to build for here.
        return Ok(Verdict::Nothing);
    }
    let modules = inventory::modules_on_disk_for(root, Some(k))?;
    let state = statefile::read(root)?;
    Ok(decide(k, facts, &modules, &state, &read_marker(root, k)))
}

/// The decision, from data. A module name has a trace on `k` when one of its versions has a
/// complete build for it in dkms's tree, when the state records a result other than "installed"
/// for one of its versions on `k` (failed, unsupported, skipped, deferred, interrupted: a finalize
/// handled it; a "no headers" skip counts only while the kernel still has none), or when the
/// marker lists its candidate version. An "installed" record without a build is no trace: the
/// build was removed behind the tool's back. Names without any source (obsolete) are not counted:
/// there is nothing to build them from.
pub fn decide(
    k: &str,
    facts: KernelFacts,
    modules: &BTreeMap<ModKey, Module>,
    state: &State,
    marker: &BTreeSet<ModKey>,
) -> Verdict {
    if !facts.installed {
        return Verdict::Nothing;
    }
    let mut by_name: BTreeMap<&str, Vec<&Module>> = BTreeMap::new();
    for m in modules.values() {
        by_name.entry(m.name.as_str()).or_default().push(m);
    }
    let mut missing = Vec::new();
    for (name, versions) in by_name {
        // The version kernel events build (planner's `candidate`): the newest with a source.
        let Some(candidate) =
            versions.iter().filter(|m| m.source.is_some()).max_by(|a, b| version::cmp(&a.version, &b.version))
        else {
            continue;
        };
        let built = versions.iter().any(|m| m.builds.keys().any(|(kk, _)| kk == k));
        let recorded = state.pairs.iter().any(|(key, s)| {
            key.module == name
                && key.kernel == k
                && match s.result {
                    Outcome::Installed => false,
                    Outcome::Skipped => !(facts.headers && skipped_for_no_headers(s.reason.as_deref())),
                    _ => true,
                }
        });
        let marked = marker.contains(&(candidate.name.clone(), candidate.version.clone()));
        if !built && !recorded && !marked {
            missing.push(format!("{}/{}", candidate.name, candidate.version));
        }
    }
    match (missing.is_empty(), facts.headers) {
        (true, _) => Verdict::Nothing,
        (false, true) => Verdict::Missing(missing),
        (false, false) => Verdict::NoHeaders(missing),
    }
}

/// Whether a skip's recorded reason is the planner's "no headers" (executor/sink.rs writes
/// `<skip word>: <detail>`).
fn skipped_for_no_headers(reason: Option<&str>) -> bool {
    let word = crate::plan::skip_word(crate::plan::SkipKind::NoHeaders);
    reason.is_some_and(|r| r.strip_prefix(word).is_some_and(|rest| rest.starts_with(':')))
}

/// After a catch-up of `k`: the modules still without a trace there are those the plan left alone
/// (not AUTOINSTALL, dkms.conf failing); the marker lists them so that the next boot is idle. Under
/// the finalize lock, skipped when another finalize holds it (the next boot looks again).
fn remember(root: &Root, k: &str) -> Result<()> {
    let Ok(lock) = FinalizeLock::take(root, Waiting::NoWait, "boot") else { return Ok(()) };
    let facts = KernelFacts { installed: true, headers: inventory::has_headers(root, k) };
    let modules = inventory::modules_on_disk_for(root, Some(k))?;
    let state = statefile::load(&lock)?;
    let Verdict::Missing(left) = decide(k, facts, &modules, &state, &BTreeSet::new()) else {
        return write_marker(&lock, k, &[]);
    };
    write_marker(&lock, k, &left)
}

/// The marker's entries for kernel `k`. One line per module version: `KERNEL NAME/VERSION`. An
/// unreadable marker is empty: the worst it costs is one full scan.
fn read_marker(root: &Root, k: &str) -> BTreeSet<ModKey> {
    let path = root.path(Path::new(paths::STATE_DIR).join(paths::BOOT_CHECKED));
    let Ok(Some(bytes)) = root.read_private(&path) else { return BTreeSet::new() };
    parse_marker(&String::from_utf8_lossy(&bytes), k)
}

fn parse_marker(text: &str, k: &str) -> BTreeSet<ModKey> {
    text.lines()
        .filter_map(|l| {
            let (kernel, module) = l.split_once(' ')?;
            let (name, version) = module.split_once('/')?;
            (kernel == k).then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

/// Replaces the marker with `modules` (`name/version`) for `k`; other kernels' lines go (only the
/// running kernel is ever looked at, and a reboot into another one costs one full scan).
fn write_marker(lock: &FinalizeLock, k: &str, modules: &[String]) -> Result<()> {
    let root = lock.root();
    let mut text = String::from(
        "# dkms-trigger boot: module versions the running kernel's catch-up left unbuilt (not AUTOINSTALL,\n\
         # unusable dkms.conf), so that the next boot does not look again. Written by dkms-trigger.\n",
    );
    for m in modules {
        text.push_str(&format!("{k} {m}\n"));
    }
    let dir = root.private_dir(paths::STATE_DIR)?;
    root.remove_stale_temp_files(&dir, paths::BOOT_CHECKED);
    root.write_atomic(&dir, paths::BOOT_CHECKED, text.as_bytes())
}

/// The package that brings `k`'s headers, as the system's package manager names it: Arch's
/// `<pkgbase>-headers` (the kernel's modules directory names its package base), Debian's
/// `linux-headers-K`, Fedora's `kernel-devel-K`.
pub fn headers_package(root: &Root, k: &str) -> String {
    let pkgbase = paths::MODULE_DIRS
        .iter()
        .find_map(|d| root.read_to_string(Path::new(d).join(k).join("pkgbase")).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| check(What::ModuleName, s).is_ok());
    let dpkg = root.exists(paths::DPKG_STATUS);
    let rpm = paths::RPM_DBS.iter().any(|p| root.exists(p));
    package_name(k, pkgbase.as_deref(), dpkg, rpm)
}

fn package_name(k: &str, pkgbase: Option<&str>, dpkg: bool, rpm: bool) -> String {
    match (pkgbase, dpkg, rpm) {
        (Some(base), _, _) => format!("{base}-headers"),
        (None, true, _) => format!("linux-headers-{k}"),
        (None, false, true) => format!("kernel-devel-{k}"),
        (None, false, false) => format!("the headers of {k}"),
    }
}

#[cfg(test)]
mod tests;
