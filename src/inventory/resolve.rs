//! Symlink resolution inside a root, as a chroot would see it: `/usr/src/x` in a link found under
//! `--root /mnt` means `/mnt/usr/src/x`, never the host's.

use crate::root::{push_components, Root};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Links followed before giving up, as Linux does (MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// Why a path does not lead anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// Nothing at this path (as seen from inside the root).
    Missing(PathBuf),
    /// A component that is not a directory has more components after it.
    NotDir(PathBuf),
    /// More than `MAX_LINKS` links.
    Loop,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresolved::Missing(p) => write!(f, "{} does not exist", p.display()),
            Unresolved::NotDir(p) => write!(f, "{} is not a directory", p.display()),
            Unresolved::Loop => write!(f, "too many levels of symbolic links"),
        }
    }
}

/// Follows `inside` (a path as seen from inside the root, absolute or relative to it) component by
/// component: absolute link targets restart at the root and `..` stops there. Returns the host
/// path of what it names, free of symlinks.
pub fn resolve(root: &Root, inside: &Path) -> Result<PathBuf, Unresolved> {
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, inside);
    let mut done = root.dir().to_path_buf();
    let mut depth = 0usize;
    let mut links = 0usize;
    while let Some(part) = todo.pop() {
        if part == ".." {
            if depth > 0 {
                done.pop();
                depth -= 1;
            }
            continue;
        }
        done.push(&part);
        let md = match root.lstat(&done) {
            Ok(md) => md,
            Err(_) => return Err(Unresolved::Missing(seen(root, &done))),
        };
        if md.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(Unresolved::Loop);
            }
            let target = root.read_link(&done).map_err(|_| Unresolved::Missing(seen(root, &done)))?;
            done.pop();
            if target.is_absolute() {
                done = root.dir().to_path_buf();
                depth = 0;
            }
            push_components(&mut todo, &target);
        } else {
            if !md.is_dir() && !todo.is_empty() {
                return Err(Unresolved::NotDir(seen(root, &done)));
            }
            depth += 1;
        }
    }
    Ok(done)
}

/// Like `resolve`, for a host path that lies inside the root (a path this module returned, joined
/// with more components).
pub fn resolve_host(root: &Root, host: &Path) -> Result<PathBuf, Unresolved> {
    match root.inside(host) {
        Some(inside) => resolve(root, &inside),
        None => Err(Unresolved::Missing(host.to_path_buf())),
    }
}

/// The root-relative form of a host path inside the root (`usr/src/x`), for reports.
pub fn relative(root: &Root, host: &Path) -> String {
    host.strip_prefix(root.dir()).unwrap_or(host).to_string_lossy().into_owned()
}

fn seen(root: &Root, host: &Path) -> PathBuf {
    root.inside(host).unwrap_or_else(|| host.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_targets_and_dotdot_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        fs::create_dir_all(t.path().join("usr/src/h")).unwrap();
        fs::create_dir_all(t.path().join("usr/lib/modules/k")).unwrap();
        symlink("usr/lib", t.path().join("lib")).unwrap();
        symlink("/usr/src/h", t.path().join("usr/lib/modules/k/build")).unwrap();
        symlink("../../../../../../../usr/src/h", t.path().join("usr/lib/modules/k/up")).unwrap();
        let h = r.dir().join("usr/src/h");
        assert_eq!(resolve(&r, Path::new("/lib/modules/k/build")), Ok(h.clone()));
        assert_eq!(resolve(&r, Path::new("lib/modules/k/up")), Ok(h));
        assert_eq!(
            resolve(&r, Path::new("lib/modules/k/nothing")),
            Err(Unresolved::Missing(PathBuf::from("/usr/lib/modules/k/nothing")))
        );
    }

    #[test]
    fn loops_and_files_in_the_middle_fail() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        symlink("b", t.path().join("a")).unwrap();
        symlink("/a", t.path().join("b")).unwrap();
        fs::write(t.path().join("f"), "").unwrap();
        assert_eq!(resolve(&r, Path::new("a")), Err(Unresolved::Loop));
        assert_eq!(resolve(&r, Path::new("f/x")), Err(Unresolved::NotDir(PathBuf::from("/f"))));
    }
}
