//! The intent spool, ROOT/var/lib/dkms-trigger/spool.toml: where hooks leave intents for the
//! finalizer. Every change is lock, read, merge, atomic replace; nothing in it is ever silently lost.

use crate::clock;
use crate::exit::{Code, Failure};
use crate::intent::Intent;
use crate::paths;
use crate::root::{File, Root};
use crate::ui;
use anyhow::{Context, Result};
use fs2::FileExt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

mod fast;

/// The spool format this version writes. Files of a newer format are moved aside like corrupt ones.
pub const FORMAT_VERSION: i64 = 1;
/// At most this many distinct `--source` texts are kept per intent (the first ones and the latest).
pub const MAX_SOURCES: usize = 8;
/// Spool keys that are bookkeeping, not part of an intent's identity.
const BOOKKEEPING: [&str; 5] = ["first", "last", "count", "seq", "sources"];

/// One pending intent with its bookkeeping. `fields` (kind and arguments) is kept exactly as read,
/// so that intents of a kind this version does not know survive a rewrite.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub fields: toml::Table,
    pub first_ms: u64,
    pub last_ms: u64,
    pub count: u64,
    /// Sequence number of the latest record of this intent; finalize removes an entry only when
    /// nothing re-recorded it after its snapshot.
    pub seq: u64,
    pub sources: Vec<String>,
}

impl Entry {
    /// The intent, or why it cannot be understood (kept and reported, never acted on).
    pub fn intent(&self) -> Result<Intent, String> {
        Intent::from_fields(&self.fields)
    }

    /// The kind as written, even when unknown.
    pub fn kind(&self) -> &str {
        self.fields.get("kind").and_then(|v| v.as_str()).unwrap_or("?")
    }
}

/// The spool's content.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolFile {
    pub next_seq: u64,
    pub entries: Vec<Entry>,
}

impl Default for SpoolFile {
    fn default() -> Self {
        SpoolFile { next_seq: 1, entries: Vec::new() }
    }
}

/// Why a spool file could not be used.
#[derive(Debug, Clone, PartialEq)]
pub enum Unreadable {
    Corrupt(String),
    Newer(i64),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Corrupt(why) => write!(f, "it does not parse: {why}"),
            Unreadable::Newer(v) => {
                write!(f, "its format version {v} is newer than this dkms-trigger's ({FORMAT_VERSION})")
            }
        }
    }
}

impl SpoolFile {
    /// Parses spool text: the canonical form `render` writes through a fast line parser (the hot
    /// path of every `record`), anything else (hand edits, newer fields) through the full TOML parser.
    pub fn parse(text: &str) -> Result<SpoolFile, Unreadable> {
        match fast::parse(text) {
            Some(s) => Ok(s),
            None => Self::parse_toml(text),
        }
    }

    /// Parses spool text with the full TOML parser.
    pub fn parse_toml(text: &str) -> Result<SpoolFile, Unreadable> {
        let doc: toml::Table =
            text.parse().map_err(|e: toml::de::Error| Unreadable::Corrupt(e.message().to_string()))?;
        let version = doc
            .get("version")
            .and_then(|v| v.as_integer())
            .ok_or_else(|| Unreadable::Corrupt("no integer 'version'".into()))?;
        if version > FORMAT_VERSION {
            return Err(Unreadable::Newer(version));
        }
        if version < 1 {
            return Err(Unreadable::Corrupt(format!("version {version} is not a spool format")));
        }
        let next_seq = doc.get("next_seq").and_then(|v| v.as_integer()).unwrap_or(1).max(1) as u64;
        let mut entries = Vec::new();
        match doc.get("intent") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let t = item
                        .as_table()
                        .ok_or_else(|| Unreadable::Corrupt(format!("intent #{} is not a table", i + 1)))?;
                    entries.push(
                        Entry::from_table(t).map_err(|e| Unreadable::Corrupt(format!("intent #{}: {e}", i + 1)))?,
                    );
                }
            }
            Some(_) => return Err(Unreadable::Corrupt("'intent' is not an array of tables".into())),
        }
        let max_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0);
        Ok(SpoolFile { next_seq: next_seq.max(max_seq + 1), entries })
    }

    /// The file text. Written by hand (kind first, bookkeeping last) so people can read it.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 + self.entries.len() * 200);
        let _ = writeln!(out, "# dkms-trigger intent spool: written by dkms-trigger, do not edit while it runs.");
        let _ = writeln!(out, "version = {FORMAT_VERSION}\nnext_seq = {}", self.next_seq);
        for e in &self.entries {
            out.push_str("\n[[intent]]\n");
            if let Some(kind) = e.fields.get("kind") {
                out.push_str("kind = ");
                inline(&mut out, kind);
                out.push('\n');
            }
            for (k, v) in e.fields.iter().filter(|(k, _)| k.as_str() != "kind") {
                key_repr(&mut out, k);
                out.push_str(" = ");
                inline(&mut out, v);
                out.push('\n');
            }
            let _ = writeln!(out, "first = {}", clock::rfc3339(e.first_ms));
            let _ = writeln!(out, "last = {}", clock::rfc3339(e.last_ms));
            let _ = writeln!(out, "count = {}", e.count);
            let _ = writeln!(out, "seq = {}", e.seq);
            out.push_str("sources = [");
            for (i, src) in e.sources.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                quote(&mut out, src);
            }
            out.push_str("]\n");
        }
        out
    }

    /// Records `intent`: an identical pending intent gets its count, last time and sequence number
    /// bumped (and the source added); otherwise a new entry is appended.
    pub fn add(&mut self, intent: &Intent, source: Option<&str>, now_ms: u64) {
        let fields = intent.to_fields();
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.entries.iter_mut().find(|e| e.fields == fields) {
            Some(e) => {
                e.last_ms = now_ms.max(e.last_ms);
                e.count += 1;
                e.seq = seq;
                if let Some(s) = source {
                    if !e.sources.iter().any(|x| x == s) {
                        if e.sources.len() >= MAX_SOURCES {
                            e.sources.pop();
                        }
                        e.sources.push(s.to_string());
                    }
                }
            }
            None => self.entries.push(Entry {
                fields,
                first_ms: now_ms,
                last_ms: now_ms,
                count: 1,
                seq,
                sources: source.map(|s| vec![s.to_string()]).unwrap_or_default(),
            }),
        }
    }

    /// Removes the entries a finalizer handled: those matching a snapshot entry that nobody
    /// re-recorded since (sequence number not newer than the snapshot's). Returns how many went.
    pub fn remove_handled(&mut self, handled: &[Entry]) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| !handled.iter().any(|h| h.fields == e.fields && e.seq <= h.seq));
        before - self.entries.len()
    }

    /// The known intents, in recording order.
    pub fn intents(&self) -> impl Iterator<Item = (&Entry, Intent)> {
        self.entries.iter().filter_map(|e| e.intent().ok().map(|i| (e, i)))
    }

    /// Entries this version cannot act on, with the reason.
    pub fn not_understood(&self) -> impl Iterator<Item = (&Entry, String)> {
        self.entries.iter().filter_map(|e| e.intent().err().map(|why| (e, why)))
    }
}

impl Entry {
    fn from_table(t: &toml::Table) -> Result<Entry, String> {
        let time = |key: &str| -> Result<u64, String> {
            match t.get(key) {
                None => Ok(0),
                Some(toml::Value::Datetime(dt)) => clock::from_datetime(dt).ok_or_else(|| format!("bad '{key}' time")),
                Some(_) => Err(format!("'{key}' is not a datetime")),
            }
        };
        let int = |key: &str, default: u64| -> Result<u64, String> {
            match t.get(key) {
                None => Ok(default),
                Some(toml::Value::Integer(n)) if *n >= 0 => Ok(*n as u64),
                Some(_) => Err(format!("'{key}' is not a non-negative integer")),
            }
        };
        if !matches!(t.get("kind"), Some(toml::Value::String(_))) {
            return Err("no 'kind' string".into());
        }
        let sources = match t.get("sources") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Some(_) => return Err("'sources' is not a list".into()),
        };
        let fields =
            t.iter().filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(Entry {
            fields,
            first_ms: time("first")?,
            last_ms: time("last")?,
            count: int("count", 1)?,
            seq: int("seq", 0)?,
            sources,
        })
    }
}

/// Appends a key as TOML: bare when possible, quoted otherwise (unknown future fields may need it).
fn key_repr(out: &mut String, k: &str) {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        out.push_str(k);
    } else {
        quote(out, k);
    }
}

/// Appends a TOML basic string: always double-quoted, `"` `\\` and control characters escaped, so
/// that the fast parser can read back everything `render` writes.
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a value as inline TOML (tables included, for fields of unknown future kinds). Written
/// into the caller's buffer: `record` renders every pending intent on each call.
fn inline(out: &mut String, v: &toml::Value) {
    match v {
        toml::Value::Table(t) => {
            out.push_str("{ ");
            for (i, (k, v)) in t.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                key_repr(out, k);
                out.push_str(" = ");
                inline(out, v);
            }
            out.push_str(" }");
        }
        toml::Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                inline(out, v);
            }
            out.push(']');
        }
        toml::Value::String(s) => quote(out, s),
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// The spool held under its exclusive lock. Dropping it releases the lock.
pub struct Locked {
    root: Root,
    dir: PathBuf,
    _lock: File,
}

/// Takes the spool lock (blocking), creating the state directory if needed.
fn lock(root: &Root) -> Result<Locked> {
    let dir = root.private_dir(paths::STATE_DIR)?;
    let lock = root.open_lock_file(dir.join(paths::SPOOL_LOCK))?;
    lock.lock_exclusive().with_context(|| format!("locking {}", dir.join(paths::SPOOL_LOCK).display()))?;
    Ok(Locked { root: root.clone(), dir, _lock: lock })
}

impl Locked {
    fn file(&self) -> PathBuf {
        self.dir.join(paths::SPOOL_FILE)
    }

    /// Loads the spool for an update. An unreadable spool is renamed to `spool.toml.corrupt-<time>`
    /// (or `.newer-<time>`) with a warning, and the returned spool holds a rescan intent so the
    /// full reconcile finds whatever it held; the flag says so (the spool must be stored again).
    fn load(&mut self) -> Result<(SpoolFile, bool)> {
        self.remove_stale_temp_files();
        let path = self.file();
        let bytes = match self.root.read_private(&path)? {
            None => return Ok((SpoolFile::default(), false)),
            Some(b) => b,
        };
        let parsed = match String::from_utf8(bytes) {
            Ok(text) => SpoolFile::parse(&text),
            Err(_) => Err(Unreadable::Corrupt("not UTF-8".into())),
        };
        match parsed {
            Ok(s) => Ok((s, false)),
            Err(why) => {
                let now = clock::now_ms();
                let suffix = match why {
                    Unreadable::Corrupt(_) => "corrupt",
                    Unreadable::Newer(_) => "newer",
                };
                let aside = self.dir.join(format!("{}.{suffix}-{}", paths::SPOOL_FILE, clock::compact(now)));
                self.root
                    .rename(&path, &aside)
                    .with_context(|| format!("moving unreadable {} aside", path.display()))?;
                self.root.prune(&self.dir, &format!("{}.{suffix}-", paths::SPOOL_FILE), crate::root::KEEP_SET_ASIDE);
                self.root.sync_dir(&self.dir)?;
                ui::warn(format!(
                    "{} was unusable ({why}); moved it to {} and scheduled a full rescan",
                    path.display(),
                    aside.display()
                ));
                let mut fresh = SpoolFile::default();
                let note = format!("dkms-trigger: replaces unreadable spool {}", aside.display());
                fresh.add(&Intent::Rescan, Some(&note), now);
                Ok((fresh, true))
            }
        }
    }

    /// Atomically replaces the spool with `spool`.
    fn store(&self, spool: &SpoolFile) -> Result<()> {
        self.root
            .write_atomic(&self.dir, paths::SPOOL_FILE, spool.render().as_bytes())
            .map_err(|e| e.context(format!("cannot update the spool {}; it was left unchanged", self.file().display())))
    }

    /// Temp files of writers killed before their rename; safe to remove while we hold the lock.
    fn remove_stale_temp_files(&self) {
        self.root.remove_stale_temp_files(&self.dir, paths::SPOOL_FILE);
    }
}

/// Changes the spool under its lock: lock, load (replacing an unreadable spool), `change`, atomic
/// store. Every writer goes through here.
pub fn update<T>(root: &Root, change: impl FnOnce(&mut SpoolFile) -> T) -> Result<T> {
    let mut locked = lock(root)?;
    let (mut spool, _) = locked.load()?;
    let out = change(&mut spool);
    locked.store(&spool)?;
    Ok(out)
}

/// The spool's current content, read under its lock (a finalizer's snapshot): written back only
/// when an unreadable spool had to be replaced.
pub fn snapshot(root: &Root) -> Result<SpoolFile> {
    let mut locked = lock(root)?;
    let (spool, replaced) = locked.load()?;
    if replaced {
        locked.store(&spool)?;
    }
    Ok(spool)
}

/// Records intents: the hot path of every hook.
pub fn record(root: &Root, intents: &[Intent], source: Option<&str>) -> Result<()> {
    let now = clock::now_ms();
    update(root, |spool| {
        for i in intents {
            spool.add(i, source, now);
        }
    })
}

/// Reads the spool without locking or changing anything (the file is replaced atomically, so a
/// reader sees a whole version). An unreadable spool reads as empty plus the reason.
pub fn read(root: &Root) -> Result<(SpoolFile, Option<Unreadable>)> {
    let path = spool_path(root);
    let bytes = match root.read_private(&path) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok((SpoolFile::default(), None)),
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied) =>
        {
            return Err(Failure::err(
                Code::NotRoot,
                format!("cannot read {}: permission denied (run as root)", path.display()),
            ))
        }
        Err(e) => return Err(e),
    };
    match String::from_utf8(bytes)
        .map_err(|_| Unreadable::Corrupt("not UTF-8".into()))
        .and_then(|t| SpoolFile::parse(&t))
    {
        Ok(s) => Ok((s, None)),
        Err(why) => Ok((SpoolFile::default(), Some(why))),
    }
}

/// ROOT/var/lib/dkms-trigger/spool.toml.
pub fn spool_path(root: &Root) -> PathBuf {
    root.path(Path::new(paths::STATE_DIR).join(paths::SPOOL_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &str) -> Intent {
        Intent::KernelAdded { kernel: v.into() }
    }

    #[test]
    fn identical_intents_merge_keeping_first_last_count() {
        let mut s = SpoolFile::default();
        s.add(&k("a1"), Some("dpkg:x"), 1000);
        s.add(&k("b1"), None, 1500);
        s.add(&k("a1"), Some("dpkg:y"), 2000);
        s.add(&k("a1"), Some("dpkg:x"), 3000);
        assert_eq!(s.entries.len(), 2);
        let e = &s.entries[0];
        assert_eq!((e.first_ms, e.last_ms, e.count, e.seq), (1000, 3000, 3, 4));
        assert_eq!(e.sources, vec!["dpkg:x", "dpkg:y"]);
        assert_eq!(s.next_seq, 5);
    }

    #[test]
    fn different_arguments_do_not_merge() {
        let mut s = SpoolFile::default();
        s.add(&Intent::HeadersChanged { kernel: "a".into(), force: false }, None, 1);
        s.add(&Intent::HeadersChanged { kernel: "a".into(), force: true }, None, 1);
        s.add(&Intent::HeadersChanged { kernel: "b".into(), force: true }, None, 1);
        assert_eq!(s.entries.len(), 3);
    }

    #[test]
    fn sources_are_capped() {
        let mut s = SpoolFile::default();
        for i in 0..20 {
            s.add(&Intent::Rescan, Some(&format!("src{i}")), i);
        }
        let e = &s.entries[0];
        assert_eq!(e.sources.len(), MAX_SOURCES);
        assert_eq!(e.sources[0], "src0");
        assert_eq!(e.sources.last().unwrap(), "src19");
    }

    #[test]
    fn render_parse_round_trip() {
        let mut s = SpoolFile::default();
        s.add(&k("6.1.0-47-amd64"), Some("dpkg:linux-image-6.1.0-47-amd64 \"quoted\""), 1_795_219_200_123);
        s.add(&Intent::Rebuild { kernels: vec![], modules: vec!["m/1".parse().unwrap()] }, None, 5);
        s.add(&Intent::ToolchainChanged { kernels: vec!["x".into()] }, None, 6);
        let back = SpoolFile::parse(&s.render()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn unknown_kinds_survive_a_rewrite() {
        let text = "version = 1\nnext_seq = 7\n\n[[intent]]\nkind = \"kernel-signed\"\nkernel = \"x\"\nextra = { a = 1, \"b c\" = [1, 2] }\ncount = 2\nseq = 6\n";
        let mut s = SpoolFile::parse(text).unwrap();
        s.add(&Intent::Rescan, None, 1);
        let back = SpoolFile::parse(&s.render()).unwrap();
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.entries[0].kind(), "kernel-signed");
        assert_eq!(back.entries[0].fields, s.entries[0].fields);
        assert_eq!(back.entries[0].count, 2);
        assert_eq!(back.not_understood().count(), 1);
        assert_eq!(back.intents().count(), 1);
    }

    #[test]
    fn format_versions() {
        assert!(matches!(SpoolFile::parse("version = 2\n"), Err(Unreadable::Newer(2))));
        assert!(matches!(SpoolFile::parse("version = 0\n"), Err(Unreadable::Corrupt(_))));
        assert!(matches!(SpoolFile::parse("next_seq = 1\n"), Err(Unreadable::Corrupt(_))));
        assert!(matches!(SpoolFile::parse("version = 1\nintent = 3\n"), Err(Unreadable::Corrupt(_))));
        assert!(matches!(SpoolFile::parse("version = 1\n[[intent]]\nkernel = \"x\"\n"), Err(Unreadable::Corrupt(_))));
        // version 1 written with only the required keys is readable
        let s = SpoolFile::parse("version = 1\n[[intent]]\nkind = \"rescan\"\n").unwrap();
        assert_eq!(s.entries[0].count, 1);
        assert_eq!(s.next_seq, 1);
    }

    #[test]
    fn next_seq_never_goes_backwards() {
        let s = SpoolFile::parse("version = 1\nnext_seq = 2\n[[intent]]\nkind = \"rescan\"\nseq = 9\n").unwrap();
        assert_eq!(s.next_seq, 10);
    }

    #[test]
    fn remove_handled_keeps_rerecorded_intents() {
        let mut s = SpoolFile::default();
        s.add(&k("a"), None, 1);
        s.add(&k("b"), None, 1);
        let snapshot = s.entries.clone();
        s.add(&k("b"), None, 2); // re-recorded while the finalizer ran
        s.add(&k("c"), None, 2); // new while the finalizer ran
        assert_eq!(s.remove_handled(&snapshot), 1);
        let left: Vec<&str> = s.entries.iter().map(|e| e.fields["kernel"].as_str().unwrap()).collect();
        assert_eq!(left, vec!["b", "c"]);
    }

    #[test]
    fn corrupt_spool_is_moved_aside_with_rescan() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let dir = root.private_dir(paths::STATE_DIR).unwrap();
        std::fs::write(dir.join(paths::SPOOL_FILE), "version = 1\n[[intent]\n").unwrap();
        crate::ui::take_warnings();
        record(&root, &[k("a1")], None).unwrap();
        let warnings = crate::ui::take_warnings();
        assert_eq!(warnings.len(), 1);
        let aside: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("spool.toml.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read_to_string(aside[0].path()).unwrap(), "version = 1\n[[intent]\n");
        let (s, problem) = read(&root).unwrap();
        assert!(problem.is_none());
        let kinds: Vec<&str> = s.entries.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, vec!["rescan", "kernel-added"]);
    }
}
