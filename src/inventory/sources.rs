//! Module sources: usr/src/M-V directories holding a dkms.conf, and whether a source tree can be
//! trusted to be built (and its dkms.conf run) as root (the rule itself is in `trust`).

use super::resolve::{resolve, resolve_host};
use super::sorted_names;
use crate::fingerprint::Entry;
use crate::paths::SOURCE_TREE;
use crate::root::Root;
use crate::validate::{literal_assignment, shown, split_source_dir};
use anyhow::Context;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A usr/src directory with a dkms.conf that no registered module points at.
pub(crate) struct Unregistered {
    /// The directory's name, which must be PACKAGE_NAME-PACKAGE_VERSION.
    pub dir_name: String,
    /// Name and version guessed from the directory name (checked against the evaluation later).
    pub name: String,
    pub version: String,
    /// Resolved directory (host path).
    pub dir: PathBuf,
}

/// The dkms.conf in `dir` (host path), resolved inside the root, when it is a file.
pub(crate) fn conf_file(root: &Root, dir: &Path) -> Option<PathBuf> {
    resolve_host(root, &dir.join("dkms.conf")).ok().filter(|p| root.is_file(p))
}

/// The usr/src directories with a dkms.conf, except those in `known` (resolved host paths of
/// registered modules' sources).
pub(crate) fn scan(
    root: &Root,
    known: &HashSet<PathBuf>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Unregistered>> {
    let Ok(tree) = resolve(root, Path::new(SOURCE_TREE)) else { return Ok(Vec::new()) };
    if !root.is_dir(&tree) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for dir_name in sorted_names(root, &tree).with_context(|| format!("reading {}", tree.display()))? {
        let Ok(dir) = resolve_host(root, &tree.join(&dir_name)) else { continue };
        if !root.is_dir(&dir) || known.contains(&dir) {
            continue;
        }
        let Some(conf) = conf_file(root, &dir) else { continue };
        let literal = root.read_to_string(&conf).ok().and_then(|t| literal_assignment(&t, "PACKAGE_NAME"));
        match split_source_dir(&dir_name, literal.as_deref()) {
            Ok((name, version)) => out.push(Unregistered { dir_name, name, version, dir }),
            Err(e) => notes.push(format!("{SOURCE_TREE}/{}: skipped: {e}", shown(&dir_name))),
        }
    }
    Ok(out)
}

/// Why the source tree dkms knows as `named` (inside the root: `usr/src/M-V` for a source it has
/// not registered, `var/lib/dkms/M/V/source` for one it has), resolved to `dir` and walked into
/// `entries`, must not be built (and its dkms.conf run) as root, if so: the trust rule
/// (`trust::tree`) on every directory from the root to the tree, every entry, and what its
/// symlinks lead to.
pub(crate) fn distrust(root: &Root, named: &Path, dir: &Path, entries: &[Entry]) -> Option<String> {
    super::trust::tree(root, named, dir, entries)
}
