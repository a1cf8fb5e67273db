//! Module sources: usr/src/M-V directories holding a dkms.conf, and whether a source tree can be
//! trusted to be built (and its dkms.conf run) as root.

use super::resolve::{relative, resolve, resolve_host};
use super::sorted_names;
use crate::fingerprint::Entry;
use crate::paths::SOURCE_TREE;
use crate::root::Root;
use crate::validate::{check, shown, What};
use anyhow::Context;
use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
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
    resolve_host(root, &dir.join("dkms.conf")).ok().filter(|p| p.is_file())
}

/// The usr/src directories with a dkms.conf, except those in `known` (resolved host paths of
/// registered modules' sources).
pub(crate) fn scan(
    root: &Root,
    known: &HashSet<PathBuf>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Unregistered>> {
    let Ok(tree) = resolve(root, Path::new(SOURCE_TREE)) else { return Ok(Vec::new()) };
    if !tree.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for dir_name in sorted_names(&tree).with_context(|| format!("reading {}", tree.display()))? {
        let Ok(dir) = resolve_host(root, &tree.join(&dir_name)) else { continue };
        if !dir.is_dir() || known.contains(&dir) {
            continue;
        }
        let Some(conf) = conf_file(root, &dir) else { continue };
        let literal = fs::read_to_string(&conf).ok().and_then(|t| literal_package_name(&t));
        let checked = split(&dir_name, literal.as_deref())
            .ok_or_else(|| "not of the form NAME-VERSION".to_string())
            .and_then(|(n, v)| {
                check(What::ModuleName, &n)?;
                check(What::ModuleVersion, &v)?;
                Ok((n, v))
            });
        match checked {
            Ok((name, version)) => out.push(Unregistered { dir_name, name, version, dir }),
            Err(e) => notes.push(format!("{SOURCE_TREE}/{}: skipped: {e}", shown(&dir_name))),
        }
    }
    Ok(out)
}

/// A `PACKAGE_NAME=` assignment without expansions, to split `M-V` directory names where both
/// parts contain dashes; the evaluation has the last word.
fn literal_package_name(conf: &str) -> Option<String> {
    conf.lines().find_map(|l| {
        let value = l.trim().strip_prefix("PACKAGE_NAME=")?;
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty() && !value.contains(['$', '`', '"', '\'', ' ', '\t'])).then(|| value.to_string())
    })
}

/// Splits `M-V`: after the literal PACKAGE_NAME when there is one, else at the first dash followed
/// by a digit (`nvidia-fs-2.17.5`), else at the last dash.
fn split(dir_name: &str, name: Option<&str>) -> Option<(String, String)> {
    let at = |i: usize| Some((dir_name[..i].to_string(), dir_name[i + 1..].to_string()));
    if let Some(v) = name.and_then(|n| dir_name.strip_prefix(n)).and_then(|r| r.strip_prefix('-')) {
        if !v.is_empty() {
            return at(dir_name.len() - v.len() - 1);
        }
    }
    let digit = dir_name
        .match_indices('-')
        .map(|(i, _)| i)
        .find(|&i| i > 0 && dir_name[i + 1..].starts_with(|c: char| c.is_ascii_digit()));
    match digit.or_else(|| dir_name.rfind('-').filter(|&i| i > 0 && i + 1 < dir_name.len())) {
        Some(i) => at(i),
        None => None,
    }
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
        if let Some(why) = fs::symlink_metadata(above).ok().and_then(|md| complaint(above, &md)) {
            return Some(why);
        }
    }
    for e in entries {
        let path = dir.join(&e.rel);
        let why = if e.link.is_some() {
            // The link itself is protected by its directory; what it leads to may not be.
            match resolve_host(root, &path) {
                Ok(target) if !target.starts_with(dir) => {
                    fs::metadata(&target).ok().and_then(|md| complaint(&target, &md))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_directory_names() {
        let s = |d: &str, n: Option<&str>| split(d, n).map(|(a, b)| format!("{a}|{b}"));
        assert_eq!(s("nvidia-fs-2.17.5", None).as_deref(), Some("nvidia-fs|2.17.5"));
        assert_eq!(s("foo-bar-1.0-2", None).as_deref(), Some("foo-bar|1.0-2"));
        assert_eq!(s("v4l2-loop-git-abc", Some("v4l2-loop")).as_deref(), Some("v4l2-loop|git-abc"));
        assert_eq!(s("zfs-rc-x", None).as_deref(), Some("zfs-rc|x"));
        assert_eq!(s("nodash", None), None);
        assert_eq!(literal_package_name("# c\nPACKAGE_NAME=\"nvidia-fs\"\n").as_deref(), Some("nvidia-fs"));
        assert_eq!(literal_package_name("PACKAGE_NAME=$(echo x)\n"), None);
    }
}
