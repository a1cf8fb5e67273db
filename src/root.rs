//! The root handle: every file the tool reads or writes is reached through a `Root` plus a relative
//! path, and every write into the tool's own directories goes through the safe helpers here.
//!
//! Writing is where a root-run tool gets hurt, so the helpers refuse a symlink where the tool's own
//! directory or file must be, refuse parents that resolve outside the root, create directories 0700
//! and files 0600, and replace files atomically (temp file, fsync, rename, fsync of the directory).

use crate::exit::{Code, Failure};
use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// A filesystem root (`--root`, default `/`).
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// Opens `dir` as the root; it must exist and be a directory.
    pub fn open(dir: &Path) -> Result<Root> {
        let canonical =
            fs::canonicalize(dir).map_err(|e| Failure::err(Code::Usage, format!("--root {}: {e}", dir.display())))?;
        if !canonical.is_dir() {
            return Err(Failure::err(Code::Usage, format!("--root {}: not a directory", dir.display())));
        }
        Ok(Root { dir: canonical })
    }

    /// The root directory itself (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when the root is the running system's `/`.
    pub fn is_host(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// `rel` inside the root. Only normal components are kept: a leading `/` is ignored and a `..`
    /// is a programming error (names are validated before they become paths).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let mut out = self.dir.clone();
        for c in rel.as_ref().components() {
            match c {
                Component::Normal(part) => out.push(part),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    panic!("relative path {} climbs out of the root", rel.as_ref().display())
                }
            }
        }
        out
    }

    /// The path as seen from inside the root (`/var/lib/dkms` for `ROOT/var/lib/dkms`), for messages
    /// and for programs run chrooted; `None` when `p` is outside the root.
    pub fn inside(&self, p: &Path) -> Option<PathBuf> {
        let rest = p.strip_prefix(&self.dir).ok()?;
        Some(Path::new("/").join(rest))
    }

    /// Makes sure `rel` is a real directory of ours: parents may be symlinks that stay inside the
    /// root (merged /usr), the directory itself may not be a symlink; created 0700 when missing and
    /// reset to 0700 otherwise (when we may). Returns its path.
    pub fn private_dir(&self, rel: &str) -> Result<PathBuf> {
        let target = self.path(rel);
        let parent = target.parent().expect("private dir has a parent");
        self.ensure_parent_inside(parent)?;
        // Create first and inspect on EEXIST: hooks run concurrently, and a check-then-create
        // lets two of them race for the first creation (one would fail with "File exists").
        // mkdir never follows a symlink, so one in the way is caught by the inspection.
        match fs::DirBuilder::new().mode(0o700).create(&target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", target.display())),
        }
        let md = fs::symlink_metadata(&target).with_context(|| format!("inspecting {}", target.display()))?;
        if md.file_type().is_symlink() {
            return Err(Failure::err(
                Code::Unsafe,
                format!("{} is a symlink; refusing to write through it", target.display()),
            ));
        }
        if !md.is_dir() {
            return Err(Failure::err(Code::Unsafe, format!("{} exists and is not a directory", target.display())));
        }
        if md.permissions().mode() & 0o7777 != 0o700 && md.uid() == nix::unistd::geteuid().as_raw() {
            fs::set_permissions(&target, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting mode 0700 on {}", target.display()))?;
        }
        Ok(target)
    }

    /// Creates the parents of a private directory (0755, like the system's) and checks that they
    /// resolve inside the root.
    fn ensure_parent_inside(&self, parent: &Path) -> Result<()> {
        if !parent.exists() {
            // A dangling symlink among the parents would make create_dir_all write elsewhere.
            let mut cur = PathBuf::new();
            for c in parent.components() {
                cur.push(c);
                if let Ok(md) = fs::symlink_metadata(&cur) {
                    if md.file_type().is_symlink() && !cur.exists() {
                        return Err(Failure::err(Code::Unsafe, format!("{} is a dangling symlink", cur.display())));
                    }
                }
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let resolved = fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
        if !resolved.starts_with(&self.dir) {
            return Err(Failure::err(
                Code::Unsafe,
                format!(
                    "{} resolves to {}, outside the root {}",
                    parent.display(),
                    resolved.display(),
                    self.dir.display()
                ),
            ));
        }
        Ok(())
    }
}

/// Fails with `Code::Unsafe` when `path` is a symlink (a missing path is fine).
pub fn refuse_symlink(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => {
            Err(Failure::err(Code::Unsafe, format!("{} is a symlink; refusing to use it", path.display())))
        }
        _ => Ok(()),
    }
}

/// Opens (creating 0600) a lock file without following symlinks.
pub fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                Failure::err(Code::Unsafe, format!("{} is a symlink; refusing to use it", path.display()))
            } else {
                anyhow::Error::new(e).context(format!("opening lock file {}", path.display()))
            }
        })
}

/// Reads a file of ours, refusing a symlink. `Ok(None)` when it does not exist.
pub fn read_private(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC).open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Failure::err(Code::Unsafe, format!("{} is a symlink; refusing to use it", path.display())))
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut buf).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(buf))
}

/// Replaces `dir/name` with `data` atomically: a 0600 temp file in `dir`, fsync, rename over the
/// target (a symlink target is replaced, never followed), fsync of `dir`. A crash at any point
/// leaves either the old or the new content.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let target = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", target.display()))?;
    tmp.persist(&target)
        .map_err(|e| anyhow::Error::new(e.error))
        .with_context(|| format!("replacing {}", target.display()))?;
    sync_dir(dir)
}

/// fsyncs a directory so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}

/// True when the effective user is root.
pub fn is_root_user() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails with `Code::NotRoot` unless running as root; `what` names the refused action.
pub fn require_root(what: &str) -> Result<()> {
    if is_root_user() {
        Ok(())
    } else {
        Err(Failure::err(Code::NotRoot, format!("{what} changes system state and must be run as root")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn concurrent_first_creation_of_a_private_dir_succeeds_everywhere() {
        // Many hooks may record at once on a fresh system: every one must get the directory.
        for _ in 0..50 {
            let t = tempfile::tempdir().unwrap();
            let r = Root { dir: t.path().to_path_buf() };
            let results: Vec<bool> = std::thread::scope(|sc| {
                let handles: Vec<_> = (0..8).map(|_| sc.spawn(|| r.private_dir("var/lib/x").is_ok())).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(results.iter().all(|ok| *ok), "{results:?}");
            let md = fs::symlink_metadata(t.path().join("var/lib/x")).unwrap();
            assert!(md.is_dir() && md.permissions().mode() & 0o777 == 0o700);
        }
    }

    #[test]
    fn path_joins_relative_and_strips_leading_slash() {
        let r = Root { dir: PathBuf::from("/r") };
        assert_eq!(r.path("var/lib/x"), PathBuf::from("/r/var/lib/x"));
        assert_eq!(r.path("/lib/modules"), PathBuf::from("/r/lib/modules"));
        assert_eq!(r.inside(Path::new("/r/usr/src")), Some(PathBuf::from("/usr/src")));
        assert_eq!(r.inside(Path::new("/elsewhere")), None);
    }

    #[test]
    #[should_panic(expected = "relative path var/../../etc climbs out of the root")]
    fn path_refuses_parent_components() {
        Root { dir: PathBuf::from("/r") }.path("var/../../etc");
    }

    #[test]
    fn private_dir_is_created_0700_and_symlinks_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let d = root.private_dir("var/lib/dkms-trigger").unwrap();
        assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);

        let t2 = tempfile::tempdir().unwrap();
        fs::create_dir_all(t2.path().join("var/lib")).unwrap();
        symlink("/tmp", t2.path().join("var/lib/dkms-trigger")).unwrap();
        let root2 = Root::open(t2.path()).unwrap();
        let err = root2.private_dir("var/lib/dkms-trigger").unwrap_err();
        assert_eq!(crate::exit::exit_code(&err), Code::Unsafe);
    }

    #[test]
    fn parents_resolving_outside_root_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), t.path().join("var")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let err = root.private_dir("var/lib/dkms-trigger").unwrap_err();
        assert_eq!(crate::exit::exit_code(&err), Code::Unsafe, "{err:#}");
    }

    #[test]
    fn write_atomic_replaces_and_is_private() {
        let t = tempfile::tempdir().unwrap();
        write_atomic(t.path(), "f", b"one").unwrap();
        write_atomic(t.path(), "f", b"two").unwrap();
        assert_eq!(fs::read(t.path().join("f")).unwrap(), b"two");
        assert_eq!(fs::metadata(t.path().join("f")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn read_private_refuses_symlink() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("real"), b"x").unwrap();
        symlink(t.path().join("real"), t.path().join("link")).unwrap();
        assert!(read_private(&t.path().join("link")).is_err());
        assert_eq!(read_private(&t.path().join("real")).unwrap().unwrap(), b"x");
        assert!(read_private(&t.path().join("none")).unwrap().is_none());
    }
}
