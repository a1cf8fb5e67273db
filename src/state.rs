//! The persistent state as data: the last result of every (module, version, kernel, arch) pair
//! dkms-trigger handled, with the fingerprint of what it was built from, and its file format. No
//! I/O here: statefile.rs reads and writes it.

use crate::fingerprint::Fingerprint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The state format this version writes.
pub const FORMAT_VERSION: u32 = 1;

/// What happened to a pair the last time dkms-trigger handled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Built and installed; `fingerprint` is what it was built from.
    Installed,
    /// The build or install failed; `fingerprint` is what the attempt used.
    Failed,
    /// dkms skipped it: BUILD_EXCLUSIVE does not match this kernel.
    Unsupported,
    /// Not built for another reason (no headers, weak-updates, obsolete): see `reason`.
    Skipped,
    /// Waiting for a BUILD_DEPENDS dependency that DKMS does not know yet.
    Deferred,
    /// A job started and has not finished: if found at the next run, it was interrupted.
    InProgress,
}

/// Identity of a pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PairKey {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
}

/// The recorded result of one pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairState {
    pub result: Outcome,
    /// Why (failure reason, skip reason), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the result was recorded (ms since the epoch).
    pub time_ms: u64,
    /// Run id of the finalize that recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Root-relative path of the job's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// A failure that was not the module's (a timeout, a signal, a full disk, a log that could not
    /// be written): the next finalize retries it by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
    /// A failure of a build ahead of its transaction's end (`finalize::early`): that transaction's
    /// finalize reports it, and builds the pair again only if its inputs changed since.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub early: bool,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default, rename = "pair")]
    pairs: Vec<PairRecord>,
}

#[derive(Serialize, Deserialize)]
struct PairRecord {
    #[serde(flatten)]
    key: PairKey,
    #[serde(flatten)]
    state: PairState,
}

/// All recorded pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub pairs: BTreeMap<PairKey, PairState>,
}

impl State {
    /// Parses state text; `Err` says why it is unusable.
    pub fn parse(text: &str) -> Result<State, String> {
        let file: StateFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        if file.version > FORMAT_VERSION {
            return Err(format!(
                "format version {} is newer than this dkms-trigger's ({FORMAT_VERSION})",
                file.version
            ));
        }
        Ok(State { pairs: file.pairs.into_iter().map(|r| (r.key, r.state)).collect() })
    }

    /// The file text.
    pub fn render(&self) -> String {
        let file = StateFile {
            version: FORMAT_VERSION,
            pairs: self.pairs.iter().map(|(k, s)| PairRecord { key: k.clone(), state: s.clone() }).collect(),
        };
        let body = toml::to_string(&file).expect("state serialises");
        format!("# dkms-trigger state: the last result of every module/kernel pair. Written by dkms-trigger.\n{body}")
    }

    /// Records `state` for `key`.
    pub fn set(&mut self, key: PairKey, state: PairState) {
        self.pairs.insert(key, state);
    }

    /// The recorded state of a pair.
    pub fn get(&self, module: &str, version: &str, kernel: &str, arch: &str) -> Option<&PairState> {
        self.pairs.get(&PairKey {
            module: module.into(),
            version: version.into(),
            kernel: kernel.into(),
            arch: arch.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: &str, k: &str) -> PairKey {
        PairKey { module: m.into(), version: "1.0".into(), kernel: k.into(), arch: "x86_64".into() }
    }

    #[test]
    fn round_trip() {
        let mut s = State::default();
        let mut fp = Fingerprint { algorithm: "v1".into(), ..Default::default() };
        fp.parts.insert("headers".into(), "fnv:1234".into());
        s.pairs.insert(
            key("hello", "6.1.0-47-amd64"),
            PairState {
                result: Outcome::Installed,
                reason: None,
                time_ms: 5,
                run: Some("r1".into()),
                log: None,
                fingerprint: Some(fp),
                transient: false,
                early: false,
            },
        );
        s.pairs.insert(
            key("bad", "6.1.0-47-amd64"),
            PairState {
                result: Outcome::Failed,
                reason: Some("make failed \"quoted\"\nline".into()),
                time_ms: 6,
                run: None,
                log: Some("var/log/dkms-trigger/r1/bad.log".into()),
                fingerprint: None,
                transient: false,
                early: false,
            },
        );
        let text = s.render();
        assert_eq!(State::parse(&text).unwrap(), s, "{text}");
    }

    #[test]
    fn versions() {
        assert!(State::parse("version = 2\n").unwrap_err().contains("newer"));
        assert_eq!(State::parse("version = 1\n").unwrap(), State::default());
        assert!(State::parse("version = 1\n[[pair]]\nmodule = \"x\"\n").is_err());
    }
}
