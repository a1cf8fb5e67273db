//! The module x kernel status table: what dkms has on disk (inventory), what dkms-trigger recorded
//! (state), and what the pending spool would do (a plan), merged into one cell per pair. Pure.

use crate::inventory::Inventory;
use crate::plan::{Action, Plan, SkipKind};
use crate::secureboot::{PairSignature, Report, Signed};
use crate::state::{Outcome, PairState, State};
use crate::version;
use serde::Serialize;
use std::collections::BTreeMap;

/// The state of one (module, kernel) cell, most important first when several apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cell {
    /// The pending intents will build it.
    Pending,
    /// Waiting for a BUILD_DEPENDS dependency DKMS does not know yet.
    Deferred,
    /// The last attempt failed.
    Failed,
    /// Installed, but its inputs changed since (fingerprint drift), or the kernel's headers are
    /// gone (it stays usable with the kernel, and cannot be rebuilt until they return).
    Stale,
    Installed,
    /// Built, not installed.
    Built,
    /// Present through weak-updates links to another kernel's build.
    Weak,
    /// BUILD_EXCLUSIVE excludes this kernel.
    Unsupported,
    /// Registered in DKMS, source gone.
    Obsolete,
    /// Not built (for instance not AUTOINSTALL, or no headers).
    Absent,
}

impl Cell {
    pub fn word(self) -> &'static str {
        match self {
            Cell::Pending => "pending",
            Cell::Deferred => "deferred",
            Cell::Failed => "failed",
            Cell::Stale => "stale",
            Cell::Installed => "installed",
            Cell::Built => "built",
            Cell::Weak => "weak",
            Cell::Unsupported => "unsupported",
            Cell::Obsolete => "obsolete",
            Cell::Absent => "-",
        }
    }
}

/// One cell with its version and explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub kernel: String,
    pub cell: Cell,
    /// The module version concerned (installed, built, or about to be built).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why: a failure reason, what a deferral waits for, which inputs changed...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Root-relative log of the last job, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The signatures of the installed build's module files (`with_signatures`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<PairSignature>,
}

/// One module row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub module: String,
    /// Versions known (source or registered), oldest first.
    pub versions: Vec<String>,
    /// Why the module cannot be used at all, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
    pub pairs: Vec<Pair>,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    pub kernels: Vec<KernelInfo>,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelInfo {
    pub version: String,
    pub arch: String,
    pub headers: bool,
    pub running: bool,
}

/// Builds the table. `pending` is the plan of the current spool (what a finalize would do now).
pub fn table(inv: &Inventory, state: &State, pending: &Plan) -> Table {
    let mut kernels: Vec<&str> = inv.kernels.keys().map(String::as_str).collect();
    kernels.sort_by(|a, b| version::cmp(a, b));
    let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in inv.modules.values() {
        names.entry(&m.name).or_default().push(&m.version);
    }
    for s in state.pairs.keys() {
        // A pair the state knows but dkms forgot (removed by hand) still deserves a row.
        names.entry(&s.module).or_default();
    }
    let mut rows = Vec::new();
    for (name, mut versions) in names {
        versions.sort_by(|a, b| version::cmp(a, b));
        versions.dedup();
        let broken = versions
            .iter()
            .rev()
            .filter_map(|v| inv.modules.get(&(name.to_string(), v.to_string())))
            .find_map(|m| m.broken.as_ref().map(|b| format!("{}/{}: {b}", m.name, m.version)));
        let pairs = kernels.iter().map(|k| pair(inv, state, pending, name, &versions, k)).collect();
        rows.push(Row {
            module: name.to_string(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            broken,
            pairs,
        });
    }
    let kernels = kernels
        .iter()
        .map(|k| {
            let kk = &inv.kernels[*k];
            KernelInfo {
                version: k.to_string(),
                arch: kk.arch.clone(),
                headers: kk.headers.is_some(),
                running: inv.running_kernel.as_deref() == Some(k),
            }
        })
        .collect();
    Table { kernels, rows }
}

fn pair(inv: &Inventory, state: &State, pending: &Plan, name: &str, versions: &[&str], k: &str) -> Pair {
    let mut p =
        Pair { kernel: k.to_string(), cell: Cell::Absent, version: None, detail: None, log: None, signature: None };
    let arch = inv.kernels.get(k).map(|kk| kk.arch.as_str()).unwrap_or("");
    if let Some(j) = pending.jobs.iter().find(|j| j.module == name && j.kernel == k) {
        p.version = Some(j.version.clone());
        match &j.action {
            a if a.builds() => {
                p.cell = Cell::Pending;
                p.detail = Some(format!("{}: {}", a.verb(), j.reasons.join("; ")));
                return p;
            }
            Action::Deferred { waiting_for } => {
                p.cell = Cell::Deferred;
                p.detail = Some(format!("waiting for {}", waiting_for.join(", ")));
                return p;
            }
            _ => {}
        }
    }
    // The latest recorded result for any version of the module on this kernel.
    let recorded =
        versions.iter().filter_map(|v| state.get(name, v, k, arch).map(|s| (*v, s))).max_by_key(|(_, s)| s.time_ms);
    let installed = inv.installed_version(name, k);
    if let Some(v) = installed {
        p.version = Some(v.to_string());
        p.cell = Cell::Installed;
        let m = &inv.modules[&(name.to_string(), v.to_string())];
        if m.source.is_none() {
            p.cell = Cell::Obsolete;
            p.detail = Some("installed, but its source is gone".into());
        } else if inv.kernels.get(k).is_some_and(|kk| kk.headers.is_none()) {
            p.cell = Cell::Stale;
            p.detail =
                Some("the kernel's headers were removed: it stays installed, and is rebuilt once they return".into());
        } else if let (Some(cur), Some(stored)) = (
            inv.pair_print(m, k),
            state.get(name, v, k, arch).filter(|s| s.result == Outcome::Installed).and_then(|s| s.fingerprint.as_ref()),
        ) {
            let changed = stored.changed_parts(&cur);
            if !changed.is_empty() {
                p.cell = Cell::Stale;
                p.detail = Some(format!("inputs changed since the build: {}", changed.join(", ")));
            }
        }
        if let Some((rv, s)) = recorded {
            if s.result == Outcome::Failed && rv == v {
                // Its own rebuild failed: the previous build is still the installed one.
                p.cell = Cell::Stale;
                p.detail = Some(format!(
                    "rebuild failed, previous build kept: {}; {}",
                    s.reason.clone().unwrap_or_default(),
                    retry_note(s)
                ));
                p.log = s.log.clone();
            } else if s.result == Outcome::Failed {
                // An older version still works but the newer one failed: say both.
                p.cell = Cell::Failed;
                p.detail = Some(format!(
                    "{name}/{rv}: {} (still installed: {v}); {}",
                    s.reason.clone().unwrap_or_default(),
                    retry_note(s)
                ));
                p.log = s.log.clone();
            } else if p.log.is_none() {
                p.log = s.log.clone();
            }
        }
        return p;
    }
    if let Some((v, s)) = recorded {
        p.version = Some(v.to_string());
        p.log = s.log.clone();
        p.detail = s.reason.clone();
        p.cell = match s.result {
            Outcome::Failed => {
                p.detail = Some(format!("{}; {}", s.reason.clone().unwrap_or_default(), retry_note(s)));
                Cell::Failed
            }
            Outcome::Unsupported => Cell::Unsupported,
            Outcome::Deferred => Cell::Deferred,
            Outcome::InProgress => {
                p.detail = Some("interrupted; the next finalize rebuilds it".into());
                Cell::Pending
            }
            Outcome::Skipped if s.reason.as_deref().is_some_and(|r| r.contains("weak")) => Cell::Weak,
            Outcome::Installed | Outcome::Skipped => Cell::Absent,
        };
        if p.cell != Cell::Absent {
            return p;
        }
        p.detail = None;
    }
    for v in versions.iter().rev() {
        let Some(m) = inv.modules.get(&(name.to_string(), v.to_string())) else { continue };
        if m.builds.contains_key(&(k.to_string(), arch.to_string())) {
            p.version = Some(v.to_string());
            p.cell = Cell::Built;
            return p;
        }
        if let Some(from) = m.weak.get(k) {
            p.version = Some(v.to_string());
            p.cell = Cell::Weak;
            p.detail = Some(format!("through weak-updates links to the {from} build"));
            return p;
        }
    }
    // Not built: say why when the plan knows (a skip it would make).
    if let Some(j) = pending.jobs.iter().find(|j| j.module == name && j.kernel == k) {
        if let Action::Skip { kind, detail } = &j.action {
            p.cell = match kind {
                SkipKind::Unsupported => Cell::Unsupported,
                SkipKind::Weak => Cell::Weak,
                SkipKind::Obsolete => Cell::Obsolete,
                SkipKind::NoHeaders => Cell::Absent,
            };
            p.detail = Some(detail.clone());
        }
    } else if let Some(m) = versions.iter().rev().find_map(|v| inv.modules.get(&(name.to_string(), v.to_string()))) {
        if let Some(Ok(c)) = m.conf_for(k) {
            if let Some(why) = &c.excluded {
                p.version = Some(m.version.clone());
                p.cell = Cell::Unsupported;
                p.detail = Some(why.clone());
            }
        }
    }
    p
}

impl Table {
    /// Adds the signatures of installed builds, keyed by (module, kernel).
    pub fn with_signatures(mut self, mut sigs: BTreeMap<(String, String), PairSignature>) -> Table {
        for r in &mut self.rows {
            for p in &mut r.pairs {
                p.signature = sigs.remove(&(r.module.clone(), p.kernel.clone()));
            }
        }
        self
    }

    /// The Secure Boot section of `status`: per kernel, who signed the installed DKMS modules;
    /// the certificate dkms signs with; the firmware's state and that certificate's enrolment.
    pub fn secure_boot_text(&self, sb: &Report) -> String {
        let mut out = String::from("Module signatures:\n");
        let mut any = false;
        for (i, k) in self.kernels.iter().enumerate() {
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in &self.rows {
                let Some(sig) = r.pairs.get(i).and_then(|p| p.signature.as_ref()) else { continue };
                let name = match &r.pairs[i].version {
                    Some(v) => format!("{}/{v}", r.module),
                    None => r.module.clone(),
                };
                groups.entry(signature_words(sig)).or_default().push(name);
            }
            if groups.is_empty() {
                continue;
            }
            any = true;
            let parts: Vec<String> = groups.iter().map(|(how, names)| format!("{how}: {}", names.join(", "))).collect();
            out.push_str(&format!("  {}: {}\n", k.version, parts.join("; ")));
        }
        if !any {
            out.push_str("  no installed DKMS module\n");
        }
        let c = &sb.certificate;
        match &c.path {
            Some(path) => {
                let serial = c.serial.as_deref().map(|s| format!(", key {s}")).unwrap_or_default();
                let made = if c.exists { "" } else { ", not made yet (dkms makes it at its first signed build)" };
                out.push_str(&format!("dkms signs with: {path} ({}{serial}{made})\n", c.from));
            }
            None => out.push_str("dkms signs with: unknown\n"),
        }
        if let Some(p) = &c.problem {
            out.push_str(&format!("  {p}\n"));
        }
        let fw = &sb.firmware;
        out.push_str(&format!("Secure Boot: {}", fw.state.words()));
        if let Some(d) = &fw.state_detail {
            let hint = if d.contains("not found") { "; install mokutil to see it" } else { "" };
            out.push_str(&format!(" ({d}{hint})"));
        }
        out.push('\n');
        if fw.state.enforcing() {
            out.push_str(&format!("  the dkms certificate is {}", fw.enrolment.words()));
            if let Some(d) = &fw.enrolment_detail {
                out.push_str(&format!(" ({d})"));
            }
            out.push('\n');
            if fw.enrolment == crate::backend::mokutil::Enrolment::NotEnrolled {
                let path = c.path.as_deref().unwrap_or_default();
                out.push_str(&format!(
                    "  a kernel that enforces signatures refuses the modules signed with it: run `mokutil --import {path}`, then confirm the key in \
                     MokManager at the next boot\n"
                ));
            }
        }
        out
    }
}

fn signature_words(s: &PairSignature) -> String {
    use crate::backend::modinfo::Signature;
    let signers = || {
        let mut v: Vec<String> = s
            .files
            .values()
            .filter_map(|f| match f {
                Signature::Signed { signer, key } => Some(format!("\"{signer}\" {key}")),
                _ => None,
            })
            .collect();
        v.dedup();
        v.join(", ")
    };
    match (s.state, s.by_dkms_key) {
        (Signed::Signed, Some(true)) => "signed by the dkms key".into(),
        (Signed::Signed, Some(false)) => format!("signed by another key ({})", signers()),
        (Signed::Signed, None) => format!("signed ({})", signers()),
        (Signed::Partly, _) => "PARTLY SIGNED".into(),
        (Signed::Unsigned, _) => "NOT SIGNED".into(),
        (Signed::Unknown, _) => {
            let why = s.files.values().find_map(|f| match f {
                Signature::Unknown { why } => Some(why.as_str()),
                _ => None,
            });
            format!("signature unknown ({})", why.unwrap_or("no module file"))
        }
    }
}

/// When a failed pair is tried again.
fn retry_note(s: &PairState) -> &'static str {
    if s.transient {
        "not the module's own failure: the next finalize retries it"
    } else if s.early {
        "failed ahead of its transaction's end; retried when its inputs change, or with `dkms-trigger finalize --retry-failed`"
    } else {
        "retried when its inputs change, or with `dkms-trigger finalize --retry-failed`"
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.rows.is_empty() {
            return writeln!(f, "no DKMS modules");
        }
        let head: Vec<String> = self
            .kernels
            .iter()
            .map(|k| {
                format!(
                    "{}{}{}",
                    k.version,
                    if k.running { " (running)" } else { "" },
                    if k.headers { "" } else { " (no headers)" }
                )
            })
            .collect();
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                r.pairs
                    .iter()
                    .map(|p| match (&p.version, p.cell) {
                        (Some(v), c) if c != Cell::Absent && r.versions.len() > 1 => format!("{} {v}", c.word()),
                        (_, c) => c.word().to_string(),
                    })
                    .collect()
            })
            .collect();
        let first = self.rows.iter().map(|r| display_name(r).len()).max().unwrap_or(6).max(6);
        let widths: Vec<usize> = (0..head.len())
            .map(|i| cells.iter().map(|c| c[i].len()).chain([head[i].len()]).max().unwrap_or(1))
            .collect();
        write!(f, "{:<first$}", "module")?;
        for (h, w) in head.iter().zip(&widths) {
            write!(f, "  {h:<w$}")?;
        }
        writeln!(f)?;
        for (r, c) in self.rows.iter().zip(&cells) {
            write!(f, "{:<first$}", display_name(r))?;
            for (cell, w) in c.iter().zip(&widths) {
                write!(f, "  {cell:<w$}")?;
            }
            writeln!(f)?;
        }
        let mut details = Vec::new();
        for r in &self.rows {
            if let Some(b) = &r.broken {
                details.push(format!("broken: {b}"));
            }
            for p in &r.pairs {
                if let Some(d) = &p.detail {
                    if matches!(p.cell, Cell::Absent | Cell::Installed | Cell::Built) {
                        continue;
                    }
                    let v = p.version.as_deref().map(|v| format!("/{v}")).unwrap_or_default();
                    let log = p.log.as_deref().map(|l| format!(", log: /{l}")).unwrap_or_default();
                    details.push(format!("{} {}{v} on {}: {d}{log}", p.cell.word(), r.module, p.kernel));
                }
            }
        }
        if !details.is_empty() {
            writeln!(f)?;
            for d in details {
                writeln!(f, "{d}")?;
            }
        }
        Ok(())
    }
}

fn display_name(r: &Row) -> String {
    if r.versions.len() == 1 {
        format!("{}/{}", r.module, r.versions[0])
    } else {
        r.module.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Build, Kernel, Module};

    #[test]
    fn installed_modules_of_a_kernel_whose_headers_went_are_stale() {
        let k = "6.1.0-1-amd64";
        let mut inv = Inventory::default();
        inv.kernels.insert(
            k.into(),
            Kernel {
                version: k.into(),
                modules_dir: format!("lib/modules/{k}"),
                headers: None,
                image: true,
                arch: "x86_64".into(),
                initramfs: None,
                print: Default::default(),
            },
        );
        inv.modules.insert(
            ("hello".into(), "1.0".into()),
            Module {
                name: "hello".into(),
                version: "1.0".into(),
                source: Some("usr/src/hello-1.0".into()),
                registered: true,
                broken: None,
                builds: [((k.to_string(), "x86_64".to_string()), Build { installed: true, built_ms: 1 })].into(),
                weak: Default::default(),
                conf: None,
                prints: Default::default(),
                source_bytes: 0,
                source_digest: None,
            },
        );
        let t = table(&inv, &State::default(), &Plan::default());
        let p = &t.rows[0].pairs[0];
        assert_eq!((p.cell, p.version.as_deref()), (Cell::Stale, Some("1.0")));
        assert!(p.detail.as_deref().unwrap_or("").contains("headers were removed"), "{p:?}");
        assert!(t.to_string().contains("stale hello/1.0 on 6.1.0-1-amd64: the kernel's headers were removed"), "{t}");
    }
}
