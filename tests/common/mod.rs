//! Test support for the real-dkms tests: a throwaway DKMS [`World`] isolated from the host,
//! generated [`Module`] sources, the two test kernels ([`test_kernels`]), and readers for what dkms
//! leaves behind. Use it from an integration test with `mod common;`. Needs root; prepare a machine with
//! `tests/setup/install-deps.sh`. See docs/dkms-behaviour.md for what the real dkms does.
#![allow(dead_code, unused_imports)]

pub mod dkms;
pub mod kernels;
pub mod module;
pub mod world;

pub use dkms::{built_make_logs, count_builds, parse_status, vermagic, BuildRecord, State, StatusEntry};
pub use kernels::test_kernels;
pub use module::{Module, Outcome};
pub use world::{show, World, WorldBuilder, BIN_IN_WORLD, PACKAGE_BIN};

use std::path::Path;

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
