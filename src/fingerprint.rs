//! Build fingerprints as data: the digest of what a (module, version, kernel) build consumed, per
//! component, so that drift is detected and explained ("kbuild changed"). No I/O here: the inputs
//! are read by the inventory (inventory/prints.rs, which says what goes into each component); the
//! plan and the state only carry and compare these values.
//!
//! The digest is FNV-1a 128 over length-prefixed fields: stable across releases and platforms, no
//! dependency, and enough to detect drift (trust is checked separately; this is not a MAC). Each
//! digest is prefixed with `ALGORITHM`; change both together when the inputs or the hash change.

use crate::root::{Metadata, MetadataExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Version tag of the digest algorithm; a stored fingerprint with another tag counts as unknown.
pub const ALGORITHM: &str = "v1";

/// Digests of the build inputs, one per component (`headers`, `kbuild`, `compiler`, `source`,
/// `overrides`), plus the newest modification time among the inputs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    pub algorithm: String,
    pub parts: BTreeMap<String, String>,
    /// Newest change (ms since the epoch) of any input: the later of mtime and ctime, so that a
    /// package reinstalled with its archive's old mtimes still counts as newer than a build. For
    /// pairs built before dkms-trigger knew them.
    #[serde(default)]
    pub newest_input_ms: u64,
}

impl Fingerprint {
    /// Components whose digest differs between `self` (stored) and `current`; all of them when the
    /// algorithms differ.
    pub fn changed_parts(&self, current: &Fingerprint) -> Vec<String> {
        if self.algorithm != current.algorithm {
            return current.parts.keys().cloned().collect();
        }
        let mut keys: Vec<&String> = self.parts.keys().chain(current.parts.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().filter(|k| self.parts.get(*k) != current.parts.get(*k)).cloned().collect()
    }

    /// Merges the parts of two fingerprints (kernel side and module side).
    pub fn combine(&self, other: &Fingerprint) -> Fingerprint {
        let mut parts = self.parts.clone();
        parts.extend(other.parts.iter().map(|(k, v)| (k.clone(), v.clone())));
        Fingerprint {
            algorithm: ALGORITHM.to_string(),
            parts,
            newest_input_ms: self.newest_input_ms.max(other.newest_input_ms),
        }
    }

    /// A fingerprint made of finished component digests.
    pub(crate) fn from_parts(parts: &[(&str, &Digest)]) -> Fingerprint {
        Fingerprint {
            algorithm: ALGORITHM.to_string(),
            parts: parts.iter().map(|(name, d)| (name.to_string(), d.finish())).collect(),
            newest_input_ms: parts.iter().map(|(_, d)| d.newest_ms).max().unwrap_or(0),
        }
    }
}

/// One component's digest under construction: FNV-1a 128 plus the newest input time seen.
#[derive(Debug, Clone)]
pub(crate) struct Digest {
    state: u128,
    newest_ms: u64,
}

const FNV_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const FNV_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

impl Digest {
    pub(crate) fn new() -> Digest {
        Digest { state: FNV_OFFSET, newest_ms: 0 }
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.state ^= u128::from(*b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// One length-prefixed field, so that ("ab", "c") and ("a", "bc") differ.
    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    pub(crate) fn text(&mut self, s: &str) {
        self.field(s.as_bytes());
    }

    pub(crate) fn number(&mut self, n: i64) {
        self.write(&n.to_le_bytes());
    }

    /// Type, size (not for directories, whose size is a filesystem detail), mtime and ctime.
    pub(crate) fn stat(&mut self, md: &Metadata) {
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "d"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_file() {
            "f"
        } else {
            "o"
        };
        self.text(kind);
        if !ft.is_dir() {
            self.number(md.size() as i64);
        }
        for n in [md.mtime(), md.mtime_nsec(), md.ctime(), md.ctime_nsec()] {
            self.number(n);
        }
        self.saw(md);
    }

    /// Counts `md` for `newest_input_ms` without adding it to the digest.
    pub(crate) fn saw(&mut self, md: &Metadata) {
        let ms = |s: i64, ns: i64| (s.max(0) as u64) * 1000 + (ns.max(0) as u64) / 1_000_000;
        self.newest_ms = self.newest_ms.max(ms(md.mtime(), md.mtime_nsec())).max(ms(md.ctime(), md.ctime_nsec()));
    }

    /// A digest folded into another (a cached tree), keeping its newest time.
    pub(crate) fn nested(&mut self, other: &Digest) {
        self.write(&other.state.to_le_bytes());
        self.newest_ms = self.newest_ms.max(other.newest_ms);
    }

    /// Every entry of a walked tree, by relative path.
    pub(crate) fn tree(&mut self, entries: &[Entry]) {
        for e in entries {
            self.field(e.rel.as_os_str().as_encoded_bytes());
            self.stat(&e.md);
            if let Some(target) = &e.link {
                self.field(target.as_os_str().as_encoded_bytes());
            }
        }
    }

    pub(crate) fn finish(&self) -> String {
        format!("{ALGORITHM}:{:032x}", self.state)
    }
}

/// One entry of a walked tree.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Path relative to the walked directory ("" for the directory itself).
    pub rel: PathBuf,
    /// Metadata of the entry itself (links are not followed).
    pub md: Metadata,
    /// The link target, for symlinks.
    pub link: Option<PathBuf>,
}

/// The digest of a module's source tree (from its `walk`).
#[derive(Debug, Clone)]
pub(crate) struct SourceDigest(pub(crate) Digest);

impl SourceDigest {
    pub(crate) fn of(entries: &[Entry]) -> SourceDigest {
        let mut d = Digest::new();
        d.tree(entries);
        SourceDigest(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_128_matches_the_published_vectors() {
        let mut d = Digest::new();
        assert_eq!(d.state, FNV_OFFSET);
        d.write(b"a");
        assert_eq!(d.state, 0xd228cb696f1a8caf78912b704e4a8964);
    }

    #[test]
    fn fields_are_length_prefixed() {
        let (mut a, mut b) = (Digest::new(), Digest::new());
        a.text("ab");
        a.text("c");
        b.text("a");
        b.text("bc");
        assert_ne!(a.finish(), b.finish());
        assert!(a.finish().starts_with("v1:"));
    }

    #[test]
    fn changed_parts_names_differences_and_algorithm_changes() {
        let mk = |alg: &str, parts: &[(&str, &str)]| Fingerprint {
            algorithm: alg.into(),
            parts: parts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            newest_input_ms: 0,
        };
        let old = mk("v1", &[("headers", "a"), ("kbuild", "b")]);
        assert_eq!(old.changed_parts(&mk("v1", &[("headers", "a"), ("kbuild", "c")])), vec!["kbuild"]);
        assert_eq!(old.changed_parts(&mk("v0", &[("headers", "a"), ("kbuild", "b")])), vec!["headers", "kbuild"]);
    }
}
