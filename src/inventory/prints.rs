//! Reads the build inputs under the root into fingerprints (data in `crate::fingerprint`).
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

use super::kernels::KConfig;
use super::resolve::{relative, resolve, resolve_host};
use crate::fingerprint::{Digest, Entry, Fingerprint, SourceDigest};
use crate::paths::{BIN_DIRS, GCC_LIB_DIRS};
use crate::root::{Metadata, Root};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// Adds a file named `label`, looked up inside the root: its resolved path and metadata, or "missing".
fn file(d: &mut Digest, root: &Root, label: &str, host: &Path) {
    d.text(label);
    match resolve_host(root, host).ok().and_then(|p| root.stat(&p).ok().map(|md| (p, md))) {
        Some((p, md)) => {
            d.text(&relative(root, &p));
            d.stat(&md);
        }
        None => d.text("missing"),
    }
}

/// Every entry under `dir` (the directory itself first), depth-first in name order, without
/// following symlinks.
pub(crate) fn walk(root: &Root, dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = vec![Entry { rel: PathBuf::new(), md: root.lstat(dir)?, link: None }];
    walk_into(root, dir, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_into(root: &Root, dir: &Path, rel: &Path, out: &mut Vec<Entry>) -> io::Result<()> {
    let names = root.list(dir)?;
    for name in names {
        let path = dir.join(&name);
        let md = root.lstat(&path)?;
        let rel = rel.join(&name);
        let link = if md.file_type().is_symlink() { Some(root.read_link(&path)?) } else { None };
        let is_dir = md.is_dir();
        out.push(Entry { rel: rel.clone(), md, link });
        if is_dir {
            walk_into(root, &path, &rel, out)?;
        }
    }
    Ok(())
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
        file(&mut h, root, name, &headers.join(name));
    }
    for included in makefile_includes(root, &headers.join("Makefile")) {
        file(&mut h, root, "include", &root.path(&included));
    }

    let mut kbuild = Digest::new();
    for sub in ["scripts", "tools"] {
        kbuild.text(sub);
        match resolve_host(root, &headers.join(sub)) {
            Ok(dir) => {
                kbuild.text(&relative(root, &dir));
                let tree = cache.trees.entry(dir).or_insert_with_key(|dir| {
                    let mut d = Digest::new();
                    match walk(root, dir) {
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
pub(crate) fn makefile_includes(root: &Root, makefile: &Path) -> Vec<String> {
    let Ok(text) = root.read_to_string(makefile) else { return Vec::new() };
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
        .find_map(|rel| resolve(root, Path::new(&rel)).ok().filter(|p| root.is_file(p)).map(|p| (rel, p)));
    match found {
        Some((rel, path)) => {
            d.text(&rel);
            file(&mut d, root, "binary", &path);
        }
        None => d.text("no compiler found"),
    }
    if let Some(major) = number(config, "CONFIG_GCC_VERSION").map(|v| v / 10000).filter(|m| *m > 0) {
        for base in GCC_LIB_DIRS {
            let Ok(dir) = resolve(root, Path::new(base)) else { continue };
            let Ok(triplets) = root.list(&dir) else { continue };
            for t in triplets {
                let cc1 = dir.join(&t).join(major.to_string()).join("cc1");
                if root.exists(&cc1) {
                    file(&mut d, root, "cc1", &cc1);
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
        let dir = resolve(root, Path::new(crate::paths::DKMS_ETC)).ok().filter(|d| root.is_dir(d));
        let names = dir
            .as_ref()
            .and_then(|d| root.list(d).ok())
            .map(|names| names.into_iter().map(|n| n.to_string_lossy().into_owned()).collect())
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
                if let Ok(entries) = walk(root, &dir.join(m)) {
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
                let md = root.stat(&p).ok().filter(Metadata::is_file)?;
                Some((root.read(&p).ok()?, md))
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
