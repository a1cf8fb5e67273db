//! Test support for the real-dkms tests: a throwaway DKMS [`World`] isolated from the host,
//! generated [`Module`] sources, the host's usable header kernels, and readers for what dkms leaves
//! behind. Use it from an integration test with `mod common;`. Needs root; prepare a machine with
//! `tests/setup/install-deps.sh`. See docs/dkms-behaviour.md for what the real dkms does.
#![allow(dead_code, unused_imports)]

pub mod dkms;
pub mod module;
pub mod world;

pub use dkms::{built_make_logs, count_builds, parse_status, vermagic, BuildRecord, State, StatusEntry};
pub use module::{Module, Outcome};
pub use world::{show, World, WorldBuilder, BIN_IN_WORLD, PACKAGE_BIN};

use std::path::Path;

/// Installed kernel versions whose headers are usable (`/lib/modules/K/build` has `include/` and a
/// `Makefile`), oldest first, newest last. Panics when there are fewer than two: the real-dkms tests
/// need two kernels.
pub fn kernels_with_headers() -> Vec<String> {
    let ks = kernels_with_headers_in(Path::new("/lib/modules"));
    assert!(
        ks.len() >= 2,
        "need at least two kernels with headers, found {ks:?}: run tests/setup/install-deps.sh (as root)"
    );
    ks
}

/// As [`kernels_with_headers`] for a modules directory, without the minimum.
pub fn kernels_with_headers_in(modules_dir: &Path) -> Vec<String> {
    let mut ks: Vec<String> = std::fs::read_dir(modules_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let b = e.path().join("build");
                    b.join("include").is_dir() && b.join("Makefile").is_file()
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ks.sort_by(|a, b| version_cmp(a, b));
    ks
}

/// Orders version strings like `sort -V` (the crate's own ordering).
pub use dkms_trigger::version::cmp as version_cmp;

/// Quotes a string for bash (single quotes).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Lists a host directory tree as `path type size mtime` lines (symlinks not followed), for
/// before/after comparisons proving the host was not touched. A missing directory lists as empty.
pub fn tree_listing(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
            let kind = if md.is_dir() {
                "d"
            } else if md.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            out.push(format!("{} {kind} {} {}.{}", p.display(), md.size(), md.mtime(), md.mtime_nsec()));
            if md.is_dir() {
                walk(&p, out);
            }
        }
    }
    walk(dir, &mut out);
    out.sort();
    out
}
