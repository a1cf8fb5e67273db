//! Build fingerprints: a digest of what a (module, version, kernel) build consumed, per component,
//! so that drift is detected and explained ("kbuild changed").
//!
//! SKELETON: types are fixed; the helper fills in the functions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version tag of the digest algorithm; a stored fingerprint with another tag counts as unknown.
pub const ALGORITHM: &str = "v1";

/// Digests of the build inputs, one per component (`headers`, `kbuild`, `compiler`, `source`,
/// `overrides`), plus the newest modification time among the inputs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    pub algorithm: String,
    pub parts: BTreeMap<String, String>,
    /// Newest mtime (ms since the epoch) of any input, for pairs built before dkms-trigger knew them.
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
}
