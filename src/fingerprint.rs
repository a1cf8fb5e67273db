//! Build fingerprints: a digest of what a (module, version, kernel) build consumed, per component,
//! so that drift is detected and explained ("kbuild changed").
//!
//! Components and what goes into them:
//! - `headers`: the build directory's `.config`, `.kernelvariables`, `Module.symvers`, `Makefile`
//!   and the absolute `include`s it names (Debian's `-common` tree), `include/generated/autoconf.h`
//!   and `utsrelease.h`, `include/config/auto.conf` (dkms >= 3.1 reads it as `kernel_config`).
//!   A headers package replaces these on every upgrade, so a change anywhere in the tree shows here
//!   without walking its ten thousand files.
//! - `kbuild`: every entry of the trees the build directory's `scripts` and `tools` resolve to
//!   (Debian: linux-kbuild-X.Y): modpost, fixdep, objtool and the Makefile.* fragments.
//! - `compiler`: `CONFIG_CC_VERSION_TEXT` and the binary it names (found under the root's
//!   usr/local/bin, usr/bin, bin), plus gcc's `cc1` for that major version.
//! - `source`: every entry of the module's source tree.
//! - `overrides`: the /etc/dkms files dkms sources for that kernel, and /etc/dkms/M/ (dkms 3.4's
//!   override scripts and patches).
//!
//! Files and trees are recorded by metadata (resolved path, type, size, mtime and ctime in ns, link
//! target): reading the headers, compilers and sources on every scan would cost seconds. ctime is
//! included because dpkg and rpm restore the archive's mtimes: reinstalling a package of the same
//! version leaves mtimes alone but replaces the files, which moves ctime. Contents are hashed only
//! for small text that the build reads as values: the CC version text and the override files (an
//! edit that keeps size and mtime must still count, a `touch` or a copy must not).
//!
//! The digest is FNV-1a 128 over length-prefixed fields: stable across releases and platforms, no
//! dependency, and enough to detect drift (trust is checked separately; this is not a MAC). Each
//! digest is prefixed with `ALGORITHM`; change both together when the inputs or the hash change.

use crate::inventory::kernels::KConfig;
use crate::inventory::resolve::{relative, resolve, resolve_host};
use crate::root::Root;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    fn from_parts(parts: &[(&str, &Digest)]) -> Fingerprint {
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
    fn new() -> Digest {
        Digest { state: FNV_OFFSET, newest_ms: 0 }
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.state ^= u128::from(*b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// One length-prefixed field, so that ("ab", "c") and ("a", "bc") differ.
    fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    fn text(&mut self, s: &str) {
        self.field(s.as_bytes());
    }

    fn number(&mut self, n: i64) {
        self.write(&n.to_le_bytes());
    }

    /// Type, size (not for directories, whose size is a filesystem detail), mtime and ctime.
    fn stat(&mut self, md: &Metadata) {
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
    fn saw(&mut self, md: &Metadata) {
        let ms = |s: i64, ns: i64| (s.max(0) as u64) * 1000 + (ns.max(0) as u64) / 1_000_000;
        self.newest_ms = self.newest_ms.max(ms(md.mtime(), md.mtime_nsec())).max(ms(md.ctime(), md.ctime_nsec()));
    }

    /// A digest folded into another (a cached tree), keeping its newest time.
    fn nested(&mut self, other: &Digest) {
        self.write(&other.state.to_le_bytes());
        self.newest_ms = self.newest_ms.max(other.newest_ms);
    }

    /// A file named `label`, looked up inside the root: its resolved path and metadata, or "missing".
    fn file(&mut self, root: &Root, label: &str, host: &Path) {
        self.text(label);
        match resolve_host(root, host).ok().and_then(|p| fs::metadata(&p).ok().map(|md| (p, md))) {
            Some((p, md)) => {
                self.text(&relative(root, &p));
                self.stat(&md);
            }
            None => self.text("missing"),
        }
    }

    /// Every entry of a walked tree, by relative path.
    fn tree(&mut self, entries: &[Entry]) {
        for e in entries {
            self.field(e.rel.as_os_str().as_encoded_bytes());
            self.stat(&e.md);
            if let Some(target) = &e.link {
                self.field(target.as_os_str().as_encoded_bytes());
            }
        }
    }

    fn finish(&self) -> String {
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

/// Every entry under `dir` (the directory itself first), depth-first in name order, without
/// following symlinks.
pub(crate) fn walk(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = vec![Entry { rel: PathBuf::new(), md: fs::symlink_metadata(dir)?, link: None }];
    walk_into(dir, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_into(dir: &Path, rel: &Path, out: &mut Vec<Entry>) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let md = fs::symlink_metadata(&path)?;
        let rel = rel.join(&name);
        let link = if md.file_type().is_symlink() { Some(fs::read_link(&path)?) } else { None };
        let is_dir = md.is_dir();
        out.push(Entry { rel: rel.clone(), md, link });
        if is_dir {
            walk_into(&path, &rel, out)?;
        }
    }
    Ok(())
}

/// The digest of a module's source tree (from its `walk`).
#[derive(Debug, Clone)]
pub(crate) struct SourceDigest(Digest);

impl SourceDigest {
    pub(crate) fn of(entries: &[Entry]) -> SourceDigest {
        let mut d = Digest::new();
        d.tree(entries);
        SourceDigest(d)
    }
}

/// Files in the headers' build directory that every module build reads.
const HEADER_FILES: [&str; 7] = [
    ".config",
    ".kernelvariables",
    "Module.symvers",
    "Makefile",
    "include/generated/autoconf.h",
    "include/generated/utsrelease.h",
    "include/config/auto.conf",
];

/// Where the compiler a kernel config names is looked for, in root's PATH order.
const BIN_DIRS: [&str; 3] = ["usr/local/bin", "usr/bin", "bin"];

/// Work shared between kernels: Debian kernels of one X.Y share one kbuild tree and one compiler.
#[derive(Default)]
pub(crate) struct KernelCache {
    trees: HashMap<PathBuf, Digest>,
    compilers: HashMap<String, Digest>,
}

/// The kernel side of the fingerprint (`headers`, `kbuild`, `compiler`) for the build directory
/// `headers` (host path, resolved) whose configuration is `config`.
pub(crate) fn kernel_side(root: &Root, headers: &Path, config: &KConfig, cache: &mut KernelCache) -> Fingerprint {
    let mut h = Digest::new();
    for name in HEADER_FILES {
        h.file(root, name, &headers.join(name));
    }
    for included in makefile_includes(&headers.join("Makefile")) {
        h.file(root, "include", &root.path(&included));
    }

    let mut kbuild = Digest::new();
    for sub in ["scripts", "tools"] {
        kbuild.text(sub);
        match resolve_host(root, &headers.join(sub)) {
            Ok(dir) => {
                kbuild.text(&relative(root, &dir));
                let tree = cache.trees.entry(dir).or_insert_with_key(|dir| {
                    let mut d = Digest::new();
                    match walk(dir) {
                        Ok(entries) => d.tree(&entries),
                        Err(e) => d.text(&format!("unreadable: {e}")),
                    }
                    d
                });
                kbuild.nested(tree);
            }
            Err(_) => kbuild.text("missing"),
        }
    }

    let key = format!(
        "{}\0{}\0{}\0{}",
        config.get("CONFIG_CC_VERSION_TEXT").unwrap_or(""),
        config.get("CONFIG_CC_IS_CLANG").unwrap_or(""),
        config.get("CONFIG_GCC_VERSION").unwrap_or(""),
        config.get("CONFIG_CLANG_VERSION").unwrap_or("")
    );
    let compiler = cache.compilers.entry(key).or_insert_with(|| compiler_digest(root, config)).clone();
    Fingerprint::from_parts(&[("headers", &h), ("kbuild", &kbuild), ("compiler", &compiler)])
}

/// Absolute, variable-free `include` lines of a Makefile: Debian's build directory Makefile is one
/// line including the `-common` tree's.
fn makefile_includes(makefile: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(makefile) else { return Vec::new() };
    text.lines()
        .filter_map(|l| l.strip_prefix("include ").or_else(|| l.strip_prefix("-include ")))
        .flat_map(str::split_whitespace)
        .filter(|p| p.starts_with('/') && !p.contains('$'))
        .map(str::to_string)
        .collect()
}

/// The compiler component: the version text the kernel was built with (content), the binary that
/// text names as found under the root (metadata), and gcc's cc1 (metadata).
fn compiler_digest(root: &Root, config: &KConfig) -> Digest {
    let mut d = Digest::new();
    d.text(config.get("CONFIG_CC_VERSION_TEXT").unwrap_or(""));
    let found = compiler_names(config)
        .into_iter()
        .flat_map(|name| BIN_DIRS.iter().map(move |dir| format!("{dir}/{name}")))
        .find_map(|rel| resolve(root, Path::new(&rel)).ok().filter(|p| p.is_file()).map(|p| (rel, p)));
    match found {
        Some((rel, path)) => {
            d.text(&rel);
            d.file(root, "binary", &path);
        }
        None => d.text("no compiler found"),
    }
    if let Some(major) = number(config, "CONFIG_GCC_VERSION").map(|v| v / 10000).filter(|m| *m > 0) {
        for base in ["usr/lib/gcc", "usr/libexec/gcc"] {
            let Ok(dir) = resolve(root, Path::new(base)) else { continue };
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut triplets: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
            triplets.sort();
            for t in triplets {
                let cc1 = dir.join(&t).join(major.to_string()).join("cc1");
                if cc1.exists() {
                    d.file(root, "cc1", &cc1);
                }
            }
        }
    }
    d
}

/// Candidate compiler program names for a kernel config, best first: the first word of
/// CONFIG_CC_VERSION_TEXT when it is a program name (Debian: `gcc-12`, Fedora: `gcc`), then
/// `gcc-N`/`clang-N` from the version numbers, then `gcc`/`clang`.
fn compiler_names(config: &KConfig) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(first) = config.get("CONFIG_CC_VERSION_TEXT").and_then(|t| t.split_whitespace().next()) {
        let is_program = first.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
        if is_program && (first.contains("gcc") || first.contains("clang") || first.contains("cc")) {
            names.push(first.to_string());
        }
    }
    let (family, version) = if config.get("CONFIG_CC_IS_CLANG") == Some("y") {
        ("clang", number(config, "CONFIG_CLANG_VERSION"))
    } else {
        ("gcc", number(config, "CONFIG_GCC_VERSION"))
    };
    if let Some(major) = version.map(|v| v / 10000).filter(|m| *m > 0) {
        names.push(format!("{family}-{major}"));
    }
    names.push(family.to_string());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn number(config: &KConfig, key: &str) -> Option<u64> {
    config.get(key)?.parse().ok()
}

/// The /etc/dkms override files, listed once per scan and read once each.
pub(crate) struct Overrides {
    /// Host path of the resolved etc/dkms, when it exists.
    dir: Option<PathBuf>,
    /// Its entries: most candidate names (M-V-K.conf for every kernel) do not exist.
    names: HashSet<String>,
    /// Contents of the files read so far (None: absent or unreadable).
    files: HashMap<String, Option<(Vec<u8>, Metadata)>>,
    /// Digest of etc/dkms/M/ per module name.
    module_dirs: HashMap<String, Digest>,
}

impl Overrides {
    pub(crate) fn load(root: &Root) -> Overrides {
        let dir = resolve(root, Path::new(crate::paths::DKMS_ETC)).ok().filter(|d| d.is_dir());
        let names = dir
            .as_ref()
            .and_then(|d| fs::read_dir(d).ok())
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        Overrides { dir, names, files: HashMap::new(), module_dirs: HashMap::new() }
    }

    /// The module side of the fingerprint (`source`, `overrides`) of module `m` version `v` built
    /// for kernel `k` on `arch`. Names are validated, so they are safe as file names.
    pub(crate) fn module_side(
        &mut self,
        root: &Root,
        source: &SourceDigest,
        m: &str,
        v: &str,
        k: &str,
        arch: &str,
    ) -> Fingerprint {
        let mut d = Digest::new();
        // dkms's order: M, M-V, M-V-K, M-V-K-A; 3.1.6+ also M--K, M--K-A.
        let names = [
            format!("{m}.conf"),
            format!("{m}-{v}.conf"),
            format!("{m}-{v}-{k}.conf"),
            format!("{m}-{v}-{k}-{arch}.conf"),
            format!("{m}--{k}.conf"),
            format!("{m}--{k}-{arch}.conf"),
        ];
        for name in names {
            if let Some((content, md)) = self.file(root, &name) {
                d.text(&name);
                d.field(content);
                d.saw(md);
            }
        }
        if let Some(dir) = self.dir.clone().filter(|_| self.names.contains(m)) {
            let module_dir = self.module_dirs.entry(m.to_string()).or_insert_with(|| {
                let mut md = Digest::new();
                if let Ok(entries) = walk(&dir.join(m)) {
                    md.tree(&entries);
                }
                md
            });
            d.nested(module_dir);
        }
        Fingerprint::from_parts(&[("source", &source.0), ("overrides", &d)])
    }

    fn file(&mut self, root: &Root, name: &str) -> Option<&(Vec<u8>, Metadata)> {
        let dir = self.dir.as_ref().filter(|_| self.names.contains(name))?;
        self.files
            .entry(name.to_string())
            .or_insert_with(|| {
                let p = resolve_host(root, &dir.join(name)).ok()?;
                let md = fs::metadata(&p).ok().filter(Metadata::is_file)?;
                Some((fs::read(&p).ok()?, md))
            })
            .as_ref()
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

    #[test]
    fn compiler_names_follow_the_config() {
        let cfg = |pairs: &[(&str, &str)]| KConfig::from_pairs(pairs);
        let debian =
            cfg(&[("CONFIG_CC_VERSION_TEXT", "gcc-12 (Debian 12.2.0-14) 12.2.0"), ("CONFIG_GCC_VERSION", "120200")]);
        assert_eq!(compiler_names(&debian), vec!["gcc-12", "gcc"]);
        let fedora = cfg(&[("CONFIG_CC_VERSION_TEXT", "gcc (GCC) 13.2.1 20231011"), ("CONFIG_GCC_VERSION", "130201")]);
        assert_eq!(compiler_names(&fedora), vec!["gcc", "gcc-13"]);
        let clang = cfg(&[
            ("CONFIG_CC_VERSION_TEXT", "Debian clang version 14.0.6"),
            ("CONFIG_CC_IS_CLANG", "y"),
            ("CONFIG_CLANG_VERSION", "140006"),
        ]);
        assert_eq!(compiler_names(&clang), vec!["clang-14", "clang"]);
    }
}
