//! What root may build from and source: the trust rule (`Root::open_trusted`, `trust_problem`)
//! applied to module source trees as dkms names them (with the targets of their symlinks and the
//! contents of linked directories), the /etc/dkms files dkms sources, and kernel header trees.
//!
//! A tree is walked by path once its top passed `open_trusted`: every directory of it is then
//! judged in turn, and a directory that passed cannot have its entries replaced by another user,
//! so what the walk saw is what a build reads. Symlinks are followed with `open_trusted` (every
//! directory on the way to their target counts), and a linked directory outside the tree is
//! walked like the tree.

use super::prints::walk;
use crate::fingerprint::Entry;
use crate::paths::DKMS_ETC;
use crate::root::{trust_problem, Distrust, Root};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Why the tree dkms knows as `named` (a path inside the root: `usr/src/M-V`, or
/// `var/lib/dkms/M/V/source`), resolved to `dir` and walked into `entries`, must not be built as
/// root, if so.
pub(crate) fn tree(root: &Root, named: &Path, dir: &Path, entries: &[Entry]) -> Option<String> {
    match root.open_trusted(named) {
        Ok(_) | Err(Distrust::Missing) => {}
        Err(Distrust::Refused(why)) => return Some(why),
        Err(Distrust::Io(e)) => return Some(format!("{}: {e}", named.display())),
    }
    let mut seen = HashSet::from([dir.to_path_buf()]);
    judge_entries(root, dir, entries, &mut seen)
}

/// The entries of a walked tree at `dir`: each by `trust_problem`, each symlink by its target.
fn judge_entries(root: &Root, dir: &Path, entries: &[Entry], seen: &mut HashSet<PathBuf>) -> Option<String> {
    for e in entries {
        let path = dir.join(&e.rel);
        let why = if e.link.is_some() {
            linked(root, &path, dir, seen)
        } else {
            trust_problem(&e.md).map(|why| format!("{} {why}", root.shown(&path)))
        };
        if why.is_some() {
            return why;
        }
    }
    None
}

/// A symlink in the tree at `dir`: every directory on the way to its target, the target, and,
/// for a directory outside the tree (not seen yet), all it holds. A dangling link is not a trust
/// matter (the build fails on it).
fn linked(root: &Root, link: &Path, dir: &Path, seen: &mut HashSet<PathBuf>) -> Option<String> {
    match root.open_trusted(link) {
        Ok(t) if t.md.is_dir() && !t.path.starts_with(dir) && seen.insert(t.path.clone()) => {
            match walk(root, &t.path) {
                Ok(entries) => judge_entries(root, &t.path, &entries, seen),
                Err(e) => Some(format!("{}: {e}", root.shown(&t.path))),
            }
        }
        Ok(_) | Err(Distrust::Missing) | Err(Distrust::Io(_)) => None,
        Err(Distrust::Refused(why)) => Some(why),
    }
}

/// Why the headers a kernel's `build` link (host path) leads to must not be built against, if so:
/// every directory on the way, the build directory's own entries, the files its Makefile includes
/// (Debian's -common tree), and the whole trees of the programs the build runs (`scripts`,
/// `tools`: modpost, fixdep, objtool). The rest of the header files are not walked (ten thousand
/// of them per kernel, at every scan); a package never ships them writable by others, and their
/// directories are root's once the build directory is.
pub(crate) fn headers(root: &Root, build: &Path, trees: &mut HashMap<PathBuf, Option<String>>) -> Option<String> {
    let h = match root.open_trusted(build) {
        Ok(t) => t.path,
        Err(Distrust::Refused(why)) => return Some(why),
        Err(_) => return None, // no headers: reported elsewhere
    };
    for name in root.list(&h).unwrap_or_default() {
        let path = h.join(&name);
        let Ok(md) = root.lstat(&path) else { continue };
        if !md.file_type().is_symlink() {
            if let Some(why) = trust_problem(&md) {
                return Some(format!("{} {why}", root.shown(&path)));
            }
            if name != "scripts" && name != "tools" {
                continue;
            }
        }
        let program_tree = name == "scripts" || name == "tools";
        let target = match root.open_trusted(&path) {
            Ok(t) => t,
            Err(Distrust::Refused(why)) => return Some(why),
            Err(_) => continue,
        };
        if program_tree && target.md.is_dir() {
            let why = trees
                .entry(target.path.clone())
                .or_insert_with(|| match walk(root, &target.path) {
                    Ok(entries) => {
                        let mut seen = HashSet::from([target.path.clone()]);
                        judge_entries(root, &target.path, &entries, &mut seen)
                    }
                    Err(e) => Some(format!("{}: {e}", root.shown(&target.path))),
                })
                .clone();
            if why.is_some() {
                return why;
            }
        }
    }
    for included in super::prints::makefile_includes(root, &h.join("Makefile")) {
        if let Err(Distrust::Refused(why)) = root.open_trusted(root.path(&included)) {
            return Some(why);
        }
    }
    None
}

/// What the trust rule says of /etc/dkms, which dkms sources from: framework.conf and
/// framework.conf.d/ for every module, M.conf, M-V.conf, M-V-K*.conf and M/ for module M.
#[derive(Debug, Default)]
pub(crate) struct EtcDkms {
    /// A problem that concerns every module (etc/dkms itself, framework.conf*).
    global: Option<String>,
    /// Entry names of etc/dkms that failed, with why.
    entries: Vec<(String, String)>,
}

impl EtcDkms {
    pub(crate) fn check(root: &Root) -> EtcDkms {
        let mut out = EtcDkms::default();
        let dir = match root.open_trusted(DKMS_ETC) {
            Ok(t) => t.path,
            Err(Distrust::Refused(why)) => {
                out.global = Some(why);
                return out;
            }
            Err(_) => return out,
        };
        for name in root.list(&dir).unwrap_or_default() {
            let name = name.to_string_lossy().into_owned();
            let path = dir.join(&name);
            let why = match root.open_trusted(&path) {
                Ok(t) if t.md.is_dir() => match walk(root, &t.path) {
                    Ok(entries) => {
                        let mut seen = HashSet::from([t.path.clone()]);
                        judge_entries(root, &t.path, &entries, &mut seen)
                    }
                    Err(e) => Some(format!("{}: {e}", root.shown(&t.path))),
                },
                Ok(_) | Err(Distrust::Missing) | Err(Distrust::Io(_)) => None,
                Err(Distrust::Refused(why)) => Some(why),
            };
            if let Some(why) = why {
                if name.starts_with("framework.conf") {
                    out.global.get_or_insert(why);
                } else {
                    out.entries.push((name, why));
                }
            }
        }
        out
    }

    /// The problem that concerns every module, if any.
    pub(crate) fn global(&self) -> Option<&str> {
        self.global.as_deref()
    }

    /// Why module `name` must not be built: a problem for all, or one with a file dkms sources for
    /// it (`name.conf`, `name-*`, `name/`). Module names that extend another (`foo` and `foo-bar`)
    /// share the `foo-` files: such a file counts against both, on the safe side.
    pub(crate) fn against(&self, name: &str) -> Option<&str> {
        if let Some(g) = &self.global {
            return Some(g);
        }
        self.entries
            .iter()
            .find(|(entry, _)| {
                entry == name
                    || entry.strip_prefix(name).is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'))
            })
            .map(|(_, why)| why.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_files_count_against_the_modules_they_name() {
        let e = EtcDkms {
            global: None,
            entries: vec![("foo-1.0-6.1.0-1-amd64.conf".into(), "x".into()), ("bar".into(), "y".into())],
        };
        assert_eq!(e.against("foo"), Some("x"));
        assert_eq!(e.against("foo-1.0"), Some("x"), "a longer name shares the prefix: refused on the safe side");
        assert_eq!(e.against("fo"), None);
        assert_eq!(e.against("bar"), Some("y"));
        assert_eq!(e.against("baz"), None);
        let all = EtcDkms { global: Some("g".into()), entries: vec![] };
        assert_eq!(all.against("baz"), Some("g"));
    }
}
