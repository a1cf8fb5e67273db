//! Module sources: usr/src/M-V directories holding a dkms.conf, and whether a source tree can be
//! trusted to be built (and its dkms.conf run) as root.

use super::resolve::{relative, resolve, resolve_host};
use super::sorted_names;
use crate::fingerprint::Entry;
use crate::paths::SOURCE_TREE;
use crate::root::{Metadata, MetadataExt, Root};
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

/// Why the source tree at `dir` (resolved host path, walked into `entries`) must not be built as
/// root, if so: an entry, a symlink's target outside the tree, or a directory above it inside the
/// root that is owned by another user or writable by group or others (a directory with the sticky
/// bit may be world-writable, like /tmp). The scanning user counts as trusted besides root: a user
/// cannot escalate through their own files, and a non-root scan only reports.
pub(crate) fn distrust(root: &Root, dir: &Path, entries: &[Entry]) -> Option<String> {
    let euid = nix::unistd::geteuid().as_raw();
    let complaint = |p: &Path, md: &Metadata| problem(md, euid).map(|why| format!("{} {why}", inside(root, p)));
    for above in dir.ancestors().skip(1).take_while(|a| a.starts_with(root.dir()) && *a != root.dir()) {
        if let Some(why) = root.lstat(above).ok().and_then(|md| complaint(above, &md)) {
            return Some(why);
        }
    }
    for e in entries {
        let path = dir.join(&e.rel);
        let why = if e.link.is_some() {
            // The link itself is protected by its directory; what it leads to may not be.
            match resolve_host(root, &path) {
                Ok(target) if !target.starts_with(dir) => {
                    root.stat(&target).ok().and_then(|md| complaint(&target, &md))
                }
                _ => None,
            }
        } else {
            complaint(&path, &e.md)
        };
        if why.is_some() {
            return why;
        }
    }
    None
}

fn problem(md: &Metadata, euid: u32) -> Option<String> {
    let uid = md.uid();
    if uid != 0 && uid != euid {
        return Some(format!("is owned by uid {uid}, not root"));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 && !(md.is_dir() && mode & 0o1000 != 0) {
        return Some(format!("is writable by group or others (mode {mode:04o})"));
    }
    None
}

fn inside(root: &Root, p: &Path) -> String {
    format!("/{}", relative(root, p))
}
