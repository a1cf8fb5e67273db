//! Reading what dkms left behind: `dkms status` lines (3.0.10 and 3.4 wordings), a module's
//! vermagic, make.log files, and the build recorder that generated modules write to.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory of the build recorder inside the world (a fresh dir in every [`World`](super::World)).
pub const BUILD_LOG_DIR: &str = "/var/log/dkms-world";
/// Every build of a generated module appends `start|end M V K EPOCH` lines here.
pub const BUILD_LOG: &str = "/var/log/dkms-world/builds.log";

/// The state word of a `dkms status` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Added,
    Built,
    Installed,
    /// `installed-weak from K2` (old-style line).
    InstalledWeak {
        from: String,
    },
    /// 3.4 prints `broken` for a module whose source is gone.
    Broken,
    Other(String),
}

/// One `dkms status` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    pub module: String,
    pub version: String,
    pub kernel: Option<String>,
    pub arch: Option<String>,
    pub state: State,
    /// Parenthesised remarks after the state, e.g. `WARNING! Diff between built and installed module!`.
    pub notes: Vec<String>,
}

/// Parses `dkms status` output. Understands `M/V: added`, `M/V, K, A: built|installed (note)...`,
/// the old `M, V, K, A: installed-weak from K2` and 3.4's `M/V: broken`. Lines that are not status
/// lines (warnings, `Error!` text) are skipped.
pub fn parse_status(text: &str) -> Vec<StatusEntry> {
    text.lines().filter_map(parse_status_line).collect()
}

fn parse_status_line(line: &str) -> Option<StatusEntry> {
    let line = line.trim_end();
    let (head, tail) = line.split_once(": ")?;
    let tail = tail.trim();
    let (word, rest) = match tail.split_once(' ') {
        Some((w, r)) => (w, r.trim()),
        None => (tail, ""),
    };
    let fields: Vec<&str> = head.split(", ").collect();
    let (module, version, kernel, arch) = match fields.as_slice() {
        [mv] => {
            let (m, v) = mv.split_once('/')?;
            (m, v, None, None)
        }
        [mv, k, a] => {
            let (m, v) = mv.split_once('/')?;
            (m, v, Some(*k), Some(*a))
        }
        [m, v, k, a] => (*m, *v, Some(*k), Some(*a)),
        _ => return None,
    };
    if module.is_empty() || version.is_empty() || module.contains(' ') || version.contains(' ') {
        return None;
    }
    let mut notes = Vec::new();
    let state = match word {
        "added" => State::Added,
        "built" => State::Built,
        "installed" => State::Installed,
        "broken" => State::Broken,
        "installed-weak" => {
            let from = rest.strip_prefix("from ").unwrap_or(rest).to_string();
            return Some(StatusEntry {
                module: module.into(),
                version: version.into(),
                kernel: kernel.map(Into::into),
                arch: arch.map(Into::into),
                state: State::InstalledWeak { from },
                notes,
            });
        }
        w if w.chars().all(|c| c.is_ascii_lowercase() || c == '-') => State::Other(w.to_string()),
        _ => return None,
    };
    // Remarks: `(a) (b)`; keep the text between the outermost parentheses of each group.
    let mut depth = 0;
    let mut cur = String::new();
    for ch in rest.chars() {
        match ch {
            '(' => {
                if depth > 0 {
                    cur.push(ch);
                }
                depth += 1;
            }
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    notes.push(std::mem::take(&mut cur));
                } else {
                    cur.push(ch);
                }
            }
            _ if depth > 0 => cur.push(ch),
            _ => {}
        }
    }
    Some(StatusEntry {
        module: module.into(),
        version: version.into(),
        kernel: kernel.map(Into::into),
        arch: arch.map(Into::into),
        state,
        notes,
    })
}

/// `modinfo -F vermagic FILE` of a module file on the host (e.g. [`World::installed_ko`]).
///
/// [`World::installed_ko`]: super::World::installed_ko
pub fn vermagic(ko: &Path) -> String {
    let out = Command::new("modinfo").args(["-F", "vermagic"]).arg(ko).output().expect("run modinfo (kmod)");
    assert!(out.status.success(), "modinfo {}: {}", ko.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The make.log files of successful builds below a dkms tree (`M/V/K/A/log/make.log`), e.g.
/// `world.upper("/var/lib/dkms")`. One per (module, version, kernel, arch) currently built; a
/// rebuild replaces it, so count builds with [`BuildRecord`] instead.
pub fn built_make_logs(dkms_tree: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in read_dirs(dkms_tree) {
        for v in read_dirs(&m) {
            for k in read_dirs(&v) {
                for a in read_dirs(&k) {
                    let log = a.join("log/make.log");
                    if log.is_file() {
                        out.push(log);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

fn read_dirs(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(d)
        .map(|rd| {
            rd.flatten().filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false)).map(|e| e.path()).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// One build of a generated module, from the build recorder: it starts when make reaches the
/// module's object (after dkms prepared the build dir) and, for slow modules, ends after the sleep.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRecord {
    pub module: String,
    pub version: String,
    pub kernel: String,
    /// Seconds since the epoch.
    pub start: f64,
    /// `None` while running, or when the build was killed.
    pub end: Option<f64>,
}

impl BuildRecord {
    /// Parses the recorder log, pairing each `end` with the earliest open `start` of the same
    /// (module, version, kernel).
    pub fn parse_log(text: &str) -> Vec<BuildRecord> {
        let mut out: Vec<BuildRecord> = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [ev, m, v, k, t] = f.as_slice() else { continue };
            let Ok(t) = t.parse::<f64>() else { continue };
            match *ev {
                "start" => out.push(BuildRecord {
                    module: m.to_string(),
                    version: v.to_string(),
                    kernel: k.to_string(),
                    start: t,
                    end: None,
                }),
                "end" => {
                    if let Some(r) =
                        out.iter_mut().find(|r| r.end.is_none() && r.module == *m && r.version == *v && r.kernel == *k)
                    {
                        r.end = Some(t);
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// True when the two builds ran at the same time (both must have ended).
    pub fn overlaps(&self, other: &BuildRecord) -> bool {
        match (self.end, other.end) {
            (Some(a_end), Some(b_end)) => self.start < b_end && other.start < a_end,
            _ => false,
        }
    }
}

/// How many builds of `module` for `kernel` the records show.
pub fn count_builds(records: &[BuildRecord], module: &str, kernel: &str) -> usize {
    records.iter().filter(|r| r.module == module && r.kernel == kernel).count()
}
