//! The plan as data: one job per (module, version, kernel, arch) with its action and reasons,
//! dependency edges, and per-kernel post-steps. Made by `planner`, run by the executor, shown by
//! `plan` and `status`.

use crate::fingerprint::Fingerprint;
use crate::intent::Intent;
use crate::state::PairKey;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Which failure policy a job falls under (config `on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventClass {
    /// Caused by a kernel, headers or toolchain event, or a rescan: failures are warnings by default.
    Kernel,
    /// Caused by the module package's own change or an explicit rebuild: failures are errors by default.
    Module,
}

/// Why a pair is skipped: never a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipKind {
    /// The kernel has no usable headers.
    NoHeaders,
    /// BUILD_EXCLUSIVE_* excludes this kernel/arch/config.
    Unsupported,
    /// The same module version reaches the kernel through weak-updates links.
    Weak,
    /// Registered in DKMS but its source is gone.
    Obsolete,
}

/// What to do with a pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Action {
    /// Build (unless already built from the same inputs) and install.
    BuildInstall,
    /// Unbuild, build and install: forced, or the inputs changed since the build.
    Rebuild,
    /// Another version of the module is installed for this kernel: build this one and install it in its place.
    ReplaceOldVersion { old: String },
    /// Nothing to do, for the given reason.
    Skip { kind: SkipKind, detail: String },
    /// A BUILD_DEPENDS dependency is not known to DKMS at all: not built, not a failure, kept pending.
    Deferred { waiting_for: Vec<String> },
    /// Cannot be done: a dependency is unavailable, a dependency cycle, a broken dkms.conf.
    Fail { reason: String },
}

impl Action {
    /// True for actions that run dkms and change what is installed.
    pub fn builds(&self) -> bool {
        matches!(self, Action::BuildInstall | Action::Rebuild | Action::ReplaceOldVersion { .. })
    }

    /// A short verb for listings.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::BuildInstall => "build",
            Action::Rebuild => "rebuild",
            Action::ReplaceOldVersion { .. } => "replace",
            Action::Skip { .. } => "skip",
            Action::Deferred { .. } => "defer",
            Action::Fail { .. } => "fail",
        }
    }
}

/// One (module, version, kernel, arch) pair and what to do with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
    pub action: Action,
    /// Why the pair is in the plan: one entry per intent or rule that touched it.
    pub reasons: Vec<String>,
    pub class: EventClass,
    /// `dkms add` is needed first (the source is not registered).
    pub register: bool,
    /// Indices (into `Plan::jobs`) of jobs that must succeed first (BUILD_DEPENDS on this kernel).
    pub after: Vec<usize>,
    /// Indices of the intents (as given to the planner) that asked for this pair.
    pub intents: Vec<usize>,
    /// The fingerprint of the inputs now: stored in the state when the job succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub print: Option<Fingerprint>,
}

impl Job {
    /// `M/V`.
    pub fn module_version(&self) -> String {
        format!("{}/{}", self.module, self.version)
    }

    /// The pair's identity in the state.
    pub fn key(&self) -> PairKey {
        PairKey {
            module: self.module.clone(),
            version: self.version.clone(),
            kernel: self.kernel.clone(),
            arch: self.arch.clone(),
        }
    }
}

/// What happens to a kernel after its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelSteps {
    pub depmod: bool,
    /// The kernel has an initramfs and the configuration allows updating it; the executor still
    /// skips it when every job of the kernel failed or no changed module is in the image.
    pub initramfs: bool,
}

/// The plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Jobs, grouped by kernel (version order) and within a kernel in dependency order.
    pub jobs: Vec<Job>,
    /// Post-steps of the kernels where something will be built.
    pub kernels: BTreeMap<String, KernelSteps>,
    /// Intents that must stay pending after this plan ran (narrowed to the deferred pairs).
    #[serde(serialize_with = "intents_as_text")]
    pub keep: Vec<Intent>,
    /// Things worth saying that are not jobs (broken modules, unknown kernels...).
    pub notes: Vec<String>,
    /// Pairs looked at and found up to date.
    pub up_to_date: usize,
}

fn intents_as_text<S: serde::Serializer>(v: &[Intent], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|i| i.to_string()))
}

impl Plan {
    /// True when executing the plan would run no dkms command.
    pub fn is_noop(&self) -> bool {
        !self.jobs.iter().any(|j| j.action.builds())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.jobs.is_empty() {
            write!(f, "nothing to do")?;
            if self.up_to_date > 0 {
                write!(f, " ({} pair(s) up to date)", self.up_to_date)?;
            }
            writeln!(f)?;
        }
        let width = self.jobs.iter().map(|j| j.module_version().len()).max().unwrap_or(0);
        let mut kernel: Option<&str> = None;
        for j in &self.jobs {
            if kernel != Some(&j.kernel) {
                if let Some(k) = kernel {
                    write_steps(f, self.kernels.get(k))?;
                }
                writeln!(f, "kernel {} ({}):", j.kernel, j.arch)?;
                kernel = Some(&j.kernel);
            }
            let detail = match &j.action {
                Action::ReplaceOldVersion { old } => format!("replaces {old}; "),
                Action::Skip { kind, detail } => format!("{}: {detail}; ", skip_word(*kind)),
                Action::Deferred { waiting_for } => format!("waiting for {}; ", waiting_for.join(", ")),
                Action::Fail { reason } => format!("{reason}; "),
                _ => String::new(),
            };
            let add = if j.register && j.action.builds() { "dkms add first; " } else { "" };
            writeln!(
                f,
                "  {:<7} {:<width$}  {add}{detail}{}",
                j.action.verb(),
                j.module_version(),
                j.reasons.join("; ")
            )?;
        }
        if let Some(k) = kernel {
            write_steps(f, self.kernels.get(k))?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        if !self.jobs.is_empty() && self.up_to_date > 0 {
            writeln!(f, "{} other pair(s) up to date", self.up_to_date)?;
        }
        for i in &self.keep {
            writeln!(f, "stays pending: {i}")?;
        }
        Ok(())
    }
}

fn write_steps(f: &mut fmt::Formatter<'_>, steps: Option<&KernelSteps>) -> fmt::Result {
    if let Some(s) = steps {
        let mut v = Vec::new();
        if s.depmod {
            v.push("depmod");
        }
        if s.initramfs {
            v.push("initramfs update if a changed module is in it");
        }
        if !v.is_empty() {
            writeln!(f, "  then: {}", v.join(", "))?;
        }
    }
    Ok(())
}

/// The word `status` and `plan` use for a skip.
pub fn skip_word(kind: SkipKind) -> &'static str {
    match kind {
        SkipKind::NoHeaders => "no headers",
        SkipKind::Unsupported => "unsupported",
        SkipKind::Weak => "weak",
        SkipKind::Obsolete => "obsolete",
    }
}
