//! The planner: a pure function from (intents, inventory, state, config) to a `Plan`. No I/O.
//!
//! Rules (docs/design.md, "Planning rules"), in short: kernel, headers, toolchain events and rescans
//! concern AUTOINSTALL modules only; a module package's change and an explicit rebuild concern the
//! named module whatever its AUTOINSTALL. Every rule turns into *wants* keyed by (kernel, module
//! name), merged so that each pair appears at most once; wants are then resolved against the
//! inventory (headers, BUILD_EXCLUSIVE, weak-updates, what is built and installed, fingerprints),
//! BUILD_DEPENDS are resolved (pulling in, deferring or failing), and the jobs are ordered.

use crate::config::{Config, KernelSet};
use crate::dkmsconf::{Autoinstall, ConfValues};
use crate::fingerprint::Fingerprint;
use crate::intent::Intent;
use crate::inventory::{Inventory, Module};
use crate::plan::{Action, EventClass, Job, KernelSteps, Plan, SkipKind};
use crate::state::{Outcome, PairState, State};
use crate::version;
use std::collections::BTreeMap;

/// Everything the planner reads.
pub struct Input<'a> {
    pub intents: &'a [Intent],
    pub inventory: &'a Inventory,
    pub state: &'a State,
    pub config: &'a Config,
    /// Retry pairs that failed before with the same inputs (`--retry-failed`).
    pub retry_failed: bool,
    /// Also plan the pairs the state itself asks for: interrupted ones, failures that were not the
    /// module's (transient), and with `retry_failed` every failure. Once per finalize (its first
    /// round), so that a failure is not retried again in the same run.
    pub revisit: bool,
}

/// How hard a want pushes: merged wants keep the strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// Rebuild only what is built and whose inputs changed (toolchain events).
    RefreshStale,
    /// Build what is missing, rebuild what is stale (most events).
    Ensure,
    /// Rebuild even when up to date (same-version headers change, explicit rebuild).
    Force,
}

#[derive(Debug, Clone)]
struct Want {
    version: String,
    /// The version was named by the intent (module-changed, rebuild -m M/V), not picked as newest.
    explicit: bool,
    mode: Mode,
    class: EventClass,
    reasons: Vec<String>,
    intents: Vec<usize>,
    /// Retry a pair that failed before with the same inputs (events about this very pair).
    retry: bool,
}

/// Builds the plan.
pub fn plan(input: &Input) -> Plan {
    let mut p = Planner::new(input);
    for (idx, intent) in input.intents.iter().enumerate() {
        p.apply(idx, intent);
    }
    if input.revisit {
        p.interrupted_pairs();
        p.failed_pairs();
    }
    p.finish()
}

type Key = (String, String); // (kernel, module name)

struct Planner<'a> {
    input: &'a Input<'a>,
    inv: &'a Inventory,
    /// Module versions by name, oldest first.
    by_name: BTreeMap<&'a str, Vec<&'a Module>>,
    /// Kernels with usable headers, oldest first.
    with_headers: Vec<&'a str>,
    wants: BTreeMap<Key, Want>,
    notes: Vec<String>,
}

impl<'a> Planner<'a> {
    fn new(input: &'a Input<'a>) -> Self {
        let inv = input.inventory;
        let mut by_name: BTreeMap<&str, Vec<&Module>> = BTreeMap::new();
        for m in inv.modules.values() {
            by_name.entry(m.name.as_str()).or_default().push(m);
        }
        for v in by_name.values_mut() {
            v.sort_by(|a, b| version::cmp(&a.version, &b.version));
        }
        let mut with_headers: Vec<&str> =
            inv.kernels.values().filter(|k| k.headers.is_some()).map(|k| k.version.as_str()).collect();
        with_headers.sort_by(|a, b| version::cmp(a, b));
        Planner { input, inv, by_name, with_headers, wants: BTreeMap::new(), notes: Vec::new() }
    }

    fn note(&mut self, n: String) {
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    /// The version kernel events build: the newest one with a source.
    fn candidate(&self, name: &str) -> Option<&'a Module> {
        self.by_name.get(name)?.iter().rev().find(|m| m.source.is_some()).copied()
    }

    /// Whether a module is AUTOINSTALL (module docs of `dkmsconf::Autoinstall` and design.md).
    fn autoinstall(&self, m: &Module) -> bool {
        let Some(conf) = &m.conf else { return false };
        match &conf.generic.autoinstall {
            Autoinstall::Yes => true,
            Autoinstall::No => false,
            // dkms <= 3.1.6 (and Debian's common.postinst) take any non-empty value as yes;
            // 3.1.7 and later accept only yes/no/"". Unknown dkms version: the permissive reading.
            Autoinstall::Other(_) => {
                !self.inv.dkms_version.as_deref().is_some_and(|v| version::cmp(v, "3.1.7").is_ge())
            }
        }
    }

    /// Names of the AUTOINSTALL modules, each by its candidate version. Modules whose candidate
    /// cannot be evaluated are left out with a note: their AUTOINSTALL is unknown.
    fn autoinstall_names(&mut self) -> Vec<&'a str> {
        let mut out = Vec::new();
        let names: Vec<&'a str> = self.by_name.keys().copied().collect();
        for name in names {
            let Some(m) = self.candidate(name) else { continue };
            if m.conf.is_none() {
                let why = m.broken.clone().unwrap_or_else(|| "dkms.conf was not evaluated".into());
                self.note(format!("{}/{} is broken and is not built: {why}", m.name, m.version));
                continue;
            }
            if let Some(Autoinstall::Other(v)) = m.conf.as_ref().map(|c| &c.generic.autoinstall) {
                let taken = self.autoinstall(m);
                self.note(format!(
                    "{}/{}: AUTOINSTALL=\"{v}\" is not yes/no; {} (dkms {})",
                    m.name,
                    m.version,
                    if taken { "treated as yes" } else { "treated as no" },
                    self.inv.dkms_version.as_deref().unwrap_or("version unknown")
                ));
            }
            if self.autoinstall(m) {
                out.push(name);
            }
        }
        out
    }

    /// The kernels a module package's own change builds for (config `kernels`).
    fn configured_kernels(&self) -> Vec<&'a str> {
        match self.input.config.kernels {
            KernelSet::All => self.with_headers.clone(),
            KernelSet::RunningAndNewest => {
                let mut v: Vec<&str> = Vec::new();
                if let Some(r) = self.inv.running_kernel.as_deref() {
                    if let Some(k) = self.with_headers.iter().find(|k| **k == r) {
                        v.push(k);
                    }
                }
                if let Some(newest) = self.with_headers.last() {
                    if !v.contains(newest) {
                        v.push(newest);
                    }
                }
                v
            }
        }
    }

    fn known_kernel(&mut self, k: &str, intent: &Intent) -> bool {
        if self.inv.kernels.contains_key(k) {
            true
        } else {
            self.note(format!("{intent}: kernel {k} is not installed (any more); nothing to do for it"));
            false
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn want(
        &mut self,
        kernel: &str,
        name: &str,
        version: Option<&str>,
        mode: Mode,
        class: EventClass,
        reason: String,
        idx: Option<usize>,
        retry: bool,
    ) {
        let explicit = version.is_some();
        let version = match version {
            Some(v) => v.to_string(),
            None => match self.candidate(name) {
                Some(m) => m.version.clone(),
                None => return,
            },
        };
        let key = (kernel.to_string(), name.to_string());
        let w = self.wants.entry(key).or_insert_with(|| Want {
            version: version.clone(),
            explicit,
            mode,
            class,
            reasons: Vec::new(),
            intents: Vec::new(),
            retry,
        });
        if w.version != version && explicit {
            // An explicitly named version (the module package being installed) wins over the
            // newest-version pick of kernel events; between two explicit ones the later wins.
            w.version = version;
            w.explicit = true;
        }
        w.mode = w.mode.max(mode);
        w.class = w.class.max(class);
        w.retry |= retry;
        if !w.reasons.contains(&reason) {
            w.reasons.push(reason);
        }
        if let Some(i) = idx {
            if !w.intents.contains(&i) {
                w.intents.push(i);
            }
        }
    }

    fn is_built_or_installed(&self, name: &str, kernel: &str) -> bool {
        self.by_name.get(name).is_some_and(|vs| vs.iter().any(|m| m.builds.keys().any(|(k, _)| k == kernel)))
    }

    fn apply(&mut self, idx: usize, intent: &Intent) {
        let reason = intent.to_string();
        let i = Some(idx);
        match intent {
            Intent::KernelAdded { kernel } => {
                if self.known_kernel(kernel, intent) {
                    for name in self.autoinstall_names() {
                        self.want(kernel, name, None, Mode::Ensure, EventClass::Kernel, reason.clone(), i, false);
                    }
                }
            }
            Intent::HeadersChanged { kernel, force } => {
                if self.known_kernel(kernel, intent) {
                    for name in self.autoinstall_names() {
                        let mode =
                            if *force && self.is_built_or_installed(name, kernel) { Mode::Force } else { Mode::Ensure };
                        self.want(kernel, name, None, mode, EventClass::Kernel, reason.clone(), i, true);
                    }
                }
            }
            Intent::ModuleChanged { module, version } => {
                if !self.inv.modules.contains_key(&(module.clone(), version.clone())) {
                    self.note(format!(
                        "{intent}: {module}/{version} has no source and is not registered; nothing to do"
                    ));
                    return;
                }
                let kernels = self.configured_kernels();
                if kernels.is_empty() {
                    self.note(format!("{intent}: no installed kernel has headers; nothing can be built"));
                }
                for k in kernels {
                    self.want(k, module, Some(version), Mode::Ensure, EventClass::Module, reason.clone(), i, true);
                }
            }
            Intent::ToolchainChanged { kernels } => {
                let ks: Vec<String> = if kernels.is_empty() {
                    self.with_headers.iter().map(|s| s.to_string()).collect()
                } else {
                    kernels.iter().filter(|k| self.known_kernel(k, intent)).cloned().collect()
                };
                let names = self.autoinstall_names();
                for k in &ks {
                    for name in &names {
                        // Refresh whichever version is built or installed there.
                        let built: Vec<String> = self.by_name[name]
                            .iter()
                            .filter(|m| m.builds.keys().any(|(kk, _)| kk == k))
                            .map(|m| m.version.clone())
                            .collect();
                        for v in built {
                            self.want(
                                k,
                                name,
                                Some(&v),
                                Mode::RefreshStale,
                                EventClass::Kernel,
                                reason.clone(),
                                i,
                                false,
                            );
                        }
                    }
                }
            }
            Intent::Rescan => {
                // Sources nobody registered (installed while dkms's own autoinstall was taken
                // over, or before dkms-trigger existed) are handled like a module-changed.
                let unregistered: Vec<(String, String)> = self
                    .by_name
                    .keys()
                    .filter_map(|n| self.candidate(n))
                    .filter(|m| !m.registered && m.conf.is_some())
                    .map(|m| (m.name.clone(), m.version.clone()))
                    .collect();
                for (name, v) in unregistered {
                    for k in self.configured_kernels() {
                        let r = format!("rescan: {name}/{v} is not registered with DKMS");
                        self.want(k, &name, Some(&v), Mode::Ensure, EventClass::Kernel, r, i, false);
                    }
                }
                let names = self.autoinstall_names();
                let kernels = self.with_headers.clone();
                for k in kernels {
                    for name in &names {
                        self.want(k, name, None, Mode::Ensure, EventClass::Kernel, reason.clone(), i, false);
                    }
                }
            }
            Intent::Rebuild { kernels, modules } => {
                let ks: Vec<String> = if kernels.is_empty() {
                    self.with_headers.iter().map(|s| s.to_string()).collect()
                } else {
                    kernels.iter().filter(|k| self.known_kernel(k, intent)).cloned().collect()
                };
                let sels: Vec<(String, Option<String>)> = if modules.is_empty() {
                    self.autoinstall_names().into_iter().map(|n| (n.to_string(), None)).collect()
                } else {
                    modules.iter().map(|m| (m.name.clone(), m.version.clone())).collect()
                };
                for k in &ks {
                    for (name, v) in &sels {
                        if !self.by_name.contains_key(name.as_str()) {
                            self.note(format!("{intent}: module {name} is not known to DKMS"));
                            continue;
                        }
                        let v = v.clone().or_else(|| self.inv.installed_version(name, k).map(str::to_string));
                        self.want(k, name, v.as_deref(), Mode::Force, EventClass::Module, reason.clone(), i, true);
                    }
                }
            }
            Intent::Deferred { module, version, kernel, force, module_event } => {
                if self.known_kernel(kernel, intent)
                    && self.inv.modules.contains_key(&(module.clone(), version.clone()))
                {
                    let mode = if *force { Mode::Force } else { Mode::Ensure };
                    let class = if *module_event { EventClass::Module } else { EventClass::Kernel };
                    self.want(kernel, module, Some(version), mode, class, reason, i, true);
                }
            }
        }
    }

    /// Pairs a killed finalizer left marked in-progress: rebuilt whatever the intents say.
    fn interrupted_pairs(&mut self) {
        let pairs: Vec<_> = self
            .input
            .state
            .pairs
            .iter()
            .filter(|(_, s)| s.result == Outcome::InProgress)
            .map(|(k, s)| (k.clone(), s.run.clone().unwrap_or_default()))
            .collect();
        for (k, run) in pairs {
            if self.inv.kernels.contains_key(&k.kernel)
                && self.inv.modules.contains_key(&(k.module.clone(), k.version.clone()))
            {
                let reason = format!("interrupted during run {run}");
                self.want(&k.kernel, &k.module, Some(&k.version), Mode::Force, EventClass::Kernel, reason, None, true);
            }
        }
    }

    /// Pairs whose last attempt failed and that are tried again now: every one with
    /// `--retry-failed`, otherwise those whose failure was not the module's (a timeout, a signal,
    /// a full disk). A pair whose rebuild failed (its previous build is still there) is rebuilt.
    fn failed_pairs(&mut self) {
        let retry_all = self.input.retry_failed;
        let pairs: Vec<_> = self
            .input
            .state
            .pairs
            .iter()
            .filter(|(_, s)| s.result == Outcome::Failed && (retry_all || s.transient))
            .map(|(k, s)| (k.clone(), s.transient, s.reason.clone().unwrap_or_default()))
            .collect();
        for (k, transient, why) in pairs {
            let Some(m) = self.inv.modules.get(&(k.module.clone(), k.version.clone())) else { continue };
            if !self.inv.kernels.contains_key(&k.kernel) {
                continue;
            }
            let has_build = m.builds.contains_key(&(k.kernel.clone(), k.arch.clone()));
            let mode = if has_build { Mode::Force } else { Mode::Ensure };
            let (class, reason) = if transient {
                (EventClass::Kernel, format!("retry: the last attempt failed for a reason not the module's ({why})"))
            } else {
                (EventClass::Module, "retry of a failed pair (--retry-failed)".to_string())
            };
            self.want(&k.kernel, &k.module, Some(&k.version), mode, class, reason, None, true);
        }
    }

    /// Whether the pair's build inputs changed since it was built: the changed parts, or None.
    fn stale(&self, m: &Module, kernel: &str, arch: &str, print: Option<&Fingerprint>) -> Option<Vec<String>> {
        let cur = print?;
        let stored = self.input.state.get(&m.name, &m.version, kernel, arch);
        if let Some(fp) = stored.filter(|s| s.result == Outcome::Installed).and_then(|s| s.fingerprint.as_ref()) {
            let changed = fp.changed_parts(cur);
            return (!changed.is_empty()).then_some(changed);
        }
        // Built before dkms-trigger knew the pair: stale when an input is newer than the build.
        let b = m.builds.get(&(kernel.to_string(), arch.to_string()))?;
        (cur.newest_input_ms > b.built_ms).then(|| vec!["inputs newer than the build".to_string()])
    }

    /// A failure of a build ahead of the transaction's end (`finalize::early`, after every input
    /// of the pair was unpacked) that nothing has changed since: this finalize reports it under
    /// its own failure policy instead of building again (each pair at most once per
    /// transaction). Changed inputs (a compiler or kbuild unpacked later), a transient failure
    /// and `--retry-failed` build it again.
    fn carried_early_failure(&self, prev: Option<&PairState>, print: Option<&Fingerprint>) -> Option<String> {
        let ps = prev.filter(|s| s.result == Outcome::Failed && s.early && !s.transient)?;
        if self.input.retry_failed {
            return None;
        }
        let same = match (&ps.fingerprint, print) {
            (Some(a), Some(b)) => a.changed_parts(b).is_empty(),
            _ => false,
        };
        let why = ps.reason.as_deref().unwrap_or("failed");
        same.then(|| format!("{why} (built ahead of this transaction's end with the same inputs; not built again)"))
    }

    /// Turns a want into a job, or None when the pair is up to date (or must not be retried).
    fn resolve(&mut self, kernel: &str, name: &str, w: &Want) -> Option<Job> {
        let k = self.inv.kernels.get(kernel)?;
        let m = match self.inv.modules.get(&(name.to_string(), w.version.clone())) {
            Some(m) => m,
            None => {
                self.note(format!("{name}/{} is not known to DKMS; nothing to do for {kernel}", w.version));
                return None;
            }
        };
        let mut job = Job {
            module: name.to_string(),
            version: w.version.clone(),
            kernel: kernel.to_string(),
            arch: k.arch.clone(),
            action: Action::BuildInstall,
            reasons: w.reasons.clone(),
            class: w.class,
            register: !m.registered,
            after: Vec::new(),
            intents: w.intents.clone(),
            print: None,
        };
        let skip = |kind, detail: String| Action::Skip { kind, detail };
        if m.source.is_none() {
            job.action = skip(SkipKind::Obsolete, "registered in DKMS but its source is gone".into());
            return Some(job);
        }
        if let Some(why) = &m.broken {
            job.action = Action::Fail { reason: format!("broken: {why}") };
            return Some(job);
        }
        let conf: &ConfValues = match m.conf_for(kernel) {
            None => {
                job.action = Action::Fail { reason: "dkms.conf was not evaluated".into() };
                return Some(job);
            }
            Some(Err(e)) => {
                job.action = Action::Fail { reason: format!("dkms.conf: {e}") };
                return Some(job);
            }
            Some(Ok(c)) => c,
        };
        let installed = self.inv.installed_version(name, kernel).map(str::to_string);
        let honour_weak = w.mode != Mode::Force && self.input.config.weak_updates && !conf.no_weak_modules;
        if honour_weak && installed.is_none() {
            if let Some(from) = m.weak.get(kernel) {
                job.action = skip(SkipKind::Weak, format!("present through weak-updates links to the {from} build"));
                return Some(job);
            }
        }
        if k.headers.is_none() {
            job.action = skip(SkipKind::NoHeaders, format!("kernel {kernel} has no headers installed"));
            return Some(job);
        }
        if let Some(why) = &conf.excluded {
            job.action = skip(SkipKind::Unsupported, why.clone());
            return Some(job);
        }
        let print = self.inv.pair_print(m, kernel);
        let stale = self.stale(m, kernel, &k.arch, print.as_ref());
        job.print = print.clone();
        let prev = self.input.state.get(name, &w.version, kernel, &k.arch);
        if let Some(reason) = self.carried_early_failure(prev, print.as_ref()) {
            job.action = Action::Fail { reason };
            return Some(job);
        }
        if w.mode != Mode::Force && !w.retry && !self.input.retry_failed {
            if let Some(ps) = prev.filter(|s| s.result == Outcome::Failed && !s.transient) {
                let same = match (&ps.fingerprint, &print) {
                    (Some(a), Some(b)) => a.changed_parts(b).is_empty(),
                    _ => true,
                };
                if same {
                    self.note(format!(
                        "{name}/{} failed for {kernel} before with the same inputs; not retried (use --retry-failed)",
                        w.version
                    ));
                    return None;
                }
            }
        }
        let built_here = m.builds.contains_key(&(kernel.to_string(), k.arch.clone()));
        job.action = match installed.as_deref() {
            Some(v) if v == w.version => {
                if w.mode == Mode::Force {
                    Action::Rebuild
                } else if let Some(parts) = stale {
                    job.reasons.push(format!("inputs changed: {}", parts.join(", ")));
                    Action::Rebuild
                } else {
                    return None;
                }
            }
            Some(old) => {
                if w.mode == Mode::RefreshStale {
                    return None;
                }
                Action::ReplaceOldVersion { old: old.to_string() }
            }
            None if built_here => match (w.mode, stale) {
                (Mode::Force, _) => Action::Rebuild,
                (_, Some(parts)) => {
                    job.reasons.push(format!("inputs changed: {}", parts.join(", ")));
                    Action::Rebuild
                }
                (Mode::RefreshStale, None) => return None,
                (Mode::Ensure, None) => Action::BuildInstall,
            },
            None => {
                if w.mode == Mode::RefreshStale {
                    return None;
                }
                Action::BuildInstall
            }
        };
        Some(job)
    }

    fn finish(mut self) -> Plan {
        let mut jobs: BTreeMap<Key, Job> = BTreeMap::new();
        let mut considered = 0usize;
        let wants = std::mem::take(&mut self.wants);
        for ((kernel, name), w) in &wants {
            considered += 1;
            if let Some(j) = self.resolve(kernel, name, w) {
                jobs.insert((kernel.clone(), name.clone()), j);
            }
        }
        let mut up_to_date = considered - jobs.len();
        let mut all_wants = wants;
        self.pull_in_dependencies(&mut jobs, &mut all_wants, &mut up_to_date);
        self.fail_cycles(&mut jobs);
        self.propagate(&mut jobs);
        let ordered = self.order(jobs);
        let mut plan = Plan { up_to_date, notes: std::mem::take(&mut self.notes), ..Default::default() };
        for j in &ordered {
            if j.action.builds() {
                let has_initramfs = self.inv.kernels.get(&j.kernel).is_some_and(|k| k.initramfs.is_some());
                let initramfs = has_initramfs && self.input.config.initramfs != crate::config::InitramfsSetting::Never;
                plan.kernels.insert(j.kernel.clone(), KernelSteps { depmod: true, initramfs });
            }
        }
        plan.keep = self.keep(&ordered, &all_wants);
        plan.jobs = ordered;
        plan
    }
}

mod deps;
pub mod early;
#[cfg(test)]
mod tests;
