//! The root handle, the one door to the filesystem: every file the tool reads, lists, stats or
//! writes is reached through a `Root` (`--root`, default `/`), and every write into the tool's own
//! directories goes through the safe helpers here.
//!
//! Paths given to a `Root` are either relative to it (`var/lib/dkms`, as spelled in `paths.rs`) or
//! absolute host paths that lie inside it (what `path` and symlink resolution return); an absolute
//! path outside the root is refused, so a stray host path cannot leak into a `--root` run.
//! `std::fs` is denied everywhere else by clippy's `disallowed_methods` (clippy.toml).
//!
//! Writing is where a root-run tool gets hurt, so the helpers refuse a symlink where the tool's own
//! directory or file must be, refuse parents that resolve outside the root, create directories 0700
//! and files 0600, and replace files atomically (temp file, fsync, rename, fsync of the directory).
//!
//! Reading is the other half: what root runs, sources or takes as configuration must be root's. The
//! trust rule (`open_trusted`, docs/design.md "Security") walks a path one descriptor at a time.
#![allow(clippy::disallowed_methods)]

use crate::exit::{Code, Failure};
use anyhow::{Context, Result};
use std::borrow::Cow;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

mod trust;
pub(crate) use trust::push_components;
pub use trust::{trust_problem, Distrust, Trusted};

/// File metadata and the types that go with it, re-exported so that the rest of the crate names
/// them without reaching for `std::fs`.
pub use std::fs::{File, FileType, Metadata};
pub use std::os::unix::fs::{FileExt, MetadataExt};

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

    /// The running system's `/`: for what belongs to the host whatever `--root` says (`/proc`, a
    /// `--config` file named on the command line).
    pub fn host() -> Root {
        Root { dir: PathBuf::from("/") }
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

    /// The host path for `p`: relative paths are joined onto the root; absolute ones must already
    /// lie inside it (and contain no `..`, which could climb out).
    fn at<'p>(&self, p: &'p Path) -> io::Result<Cow<'p, Path>> {
        if !p.is_absolute() {
            if p.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} climbs out", p.display())));
            }
            return Ok(Cow::Owned(self.path(p)));
        }
        if p.starts_with(&self.dir) && !p.components().any(|c| matches!(c, Component::ParentDir)) {
            Ok(Cow::Borrowed(p))
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is outside the root {}", p.display(), self.dir.display()),
            ))
        }
    }

    // --- Reading -------------------------------------------------------------------------------

    /// The whole file.
    pub fn read(&self, p: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        fs::read(self.at(p.as_ref())?)
    }

    /// The whole file as UTF-8 text.
    pub fn read_to_string(&self, p: impl AsRef<Path>) -> io::Result<String> {
        fs::read_to_string(self.at(p.as_ref())?)
    }

    /// At most `max` bytes from the end of a file (all of it when shorter), without following a
    /// final symlink. For the tails of logs whose size a build decides.
    pub fn read_tail(&self, p: impl AsRef<Path>, max: u64) -> io::Result<Vec<u8>> {
        let f = self.open_nofollow(p.as_ref())?;
        read_tail_of(&f, 0, max)
    }

    /// Opens a file for reading without following a final symlink.
    pub fn open_nofollow(&self, p: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(self.at(p.as_ref())?)
    }

    /// The entry names of a directory, sorted.
    pub fn list(&self, p: impl AsRef<Path>) -> io::Result<Vec<OsString>> {
        let mut names =
            fs::read_dir(self.at(p.as_ref())?)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    /// The entries of a directory with their types (symlinks not followed), sorted by name.
    pub fn list_typed(&self, p: impl AsRef<Path>) -> io::Result<Vec<(OsString, FileType)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.at(p.as_ref())?)? {
            let e = e?;
            out.push((e.file_name(), e.file_type()?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Metadata, following symlinks.
    pub fn stat(&self, p: impl AsRef<Path>) -> io::Result<Metadata> {
        fs::metadata(self.at(p.as_ref())?)
    }

    /// Metadata of the entry itself (a symlink is not followed).
    pub fn lstat(&self, p: impl AsRef<Path>) -> io::Result<Metadata> {
        fs::symlink_metadata(self.at(p.as_ref())?)
    }

    /// A symlink's target, as written.
    pub fn read_link(&self, p: impl AsRef<Path>) -> io::Result<PathBuf> {
        fs::read_link(self.at(p.as_ref())?)
    }

    /// Something is there (following symlinks, as `test -e`).
    pub fn exists(&self, p: impl AsRef<Path>) -> bool {
        self.stat(p).is_ok()
    }

    /// A directory is there (following symlinks).
    pub fn is_dir(&self, p: impl AsRef<Path>) -> bool {
        self.stat(p).is_ok_and(|m| m.is_dir())
    }

    /// A regular file is there (following symlinks).
    pub fn is_file(&self, p: impl AsRef<Path>) -> bool {
        self.stat(p).is_ok_and(|m| m.is_file())
    }

    /// A host path as people know it: as seen inside the root, or the root itself by its name.
    pub fn shown(&self, p: &Path) -> String {
        if p == self.dir && !self.is_host() {
            return format!("the root {}", self.dir.display());
        }
        self.inside(p).unwrap_or_else(|| p.to_path_buf()).display().to_string()
    }

    // --- Writing -------------------------------------------------------------------------------

    /// Renames within the root (never across it).
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        fs::rename(self.at(from.as_ref())?, self.at(to.as_ref())?)
    }

    /// Removes a file (or a symlink itself).
    pub fn remove_file(&self, p: impl AsRef<Path>) -> io::Result<()> {
        fs::remove_file(self.at(p.as_ref())?)
    }

    /// Removes a directory tree (symlinks inside are removed, not followed).
    pub fn remove_dir_all(&self, p: impl AsRef<Path>) -> io::Result<()> {
        fs::remove_dir_all(self.at(p.as_ref())?)
    }

    /// Creates the symbolic link `link` (inside the root) pointing at `target`, as given.
    pub fn symlink(&self, target: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
        std::os::unix::fs::symlink(target.as_ref(), self.at(link.as_ref())?)
    }

    /// Creates one directory, mode 0700 (the parent must exist).
    pub fn create_private_dir(&self, p: impl AsRef<Path>) -> io::Result<()> {
        fs::DirBuilder::new().mode(0o700).create(self.at(p.as_ref())?)
    }

    /// Opens a log of ours for appending (and reading back its tail): created 0600, never through
    /// a symlink.
    pub fn open_append(&self, p: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(self.at(p.as_ref())?)
    }

    /// Makes sure `rel` is a real directory of ours: parents may be symlinks that stay inside the
    /// root (merged /usr), the directory itself may not be a symlink; created 0700 when missing and
    /// reset to 0700 otherwise (when we may). It and every directory above it must pass the trust
    /// rule (`open_trusted`): a state directory another user owns or may write to could hold
    /// whatever that user planted, so it is refused (`Code::Unsafe`), never repaired. Returns its
    /// path.
    pub fn private_dir(&self, rel: &str) -> Result<PathBuf> {
        let target = self.path(rel);
        let parent = target.parent().expect("private dir has a parent");
        self.ensure_parent_inside(parent)?;
        // Create first and inspect on EEXIST: hooks run concurrently, and a check-then-create
        // lets two of them race for the first creation (one would fail with "File exists").
        // mkdir never follows a symlink, so one in the way is caught by the inspection.
        match fs::DirBuilder::new().mode(0o700).create(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let md = fs::symlink_metadata(&target).with_context(|| format!("inspecting {}", target.display()))?;
                if md.file_type().is_symlink() {
                    return Err(Failure::err(
                        Code::Unsafe,
                        format!("{} is a symlink; refusing to write through it", target.display()),
                    ));
                }
                if !md.is_dir() {
                    return Err(Failure::err(
                        Code::Unsafe,
                        format!("{} exists and is not a directory", target.display()),
                    ));
                }
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", target.display())),
        }
        let md = match self.open_trusted(&target) {
            Ok(t) => t.md,
            Err(Distrust::Refused(why)) => {
                return Err(Failure::err(
                    Code::Unsafe,
                    format!("{why}; refusing to use {} (it must be root's, writable by root only)", target.display()),
                ))
            }
            Err(e) => return Err(anyhow::anyhow!("{e}")).with_context(|| format!("checking {}", target.display())),
        };
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

    /// Fails with `Code::Unsafe` when `p` is a symlink (a missing path is fine).
    pub fn refuse_symlink(&self, p: impl AsRef<Path>) -> Result<()> {
        let p = p.as_ref();
        match self.lstat(p) {
            Ok(md) if md.file_type().is_symlink() => {
                Err(Failure::err(Code::Unsafe, format!("{} is a symlink; refusing to use it", p.display())))
            }
            _ => Ok(()),
        }
    }

    /// Opens (creating 0600) a lock file without following symlinks.
    pub fn open_lock_file(&self, p: impl AsRef<Path>) -> Result<File> {
        let path = p.as_ref();
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(self.at(path)?)
            .map_err(|e| {
                if e.raw_os_error() == Some(nix::libc::ELOOP) {
                    Failure::err(Code::Unsafe, format!("{} is a symlink; refusing to use it", path.display()))
                } else {
                    anyhow::Error::new(e).context(format!("opening lock file {}", path.display()))
                }
            })
    }

    /// Reads a file of ours, refusing a symlink. `Ok(None)` when it does not exist.
    pub fn read_private(&self, p: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
        let path = p.as_ref();
        let mut file = match self.open_nofollow(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(Failure::err(Code::Unsafe, format!("{} is a symlink; refusing to use it", path.display())))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut file, &mut buf).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(buf))
    }

    /// Replaces `dir/name` with `data` atomically: a 0600 temp file in `dir`, fsync, rename over the
    /// target (a symlink target is replaced, never followed), fsync of `dir`. A crash at any point
    /// leaves either the old or the new content.
    pub fn write_atomic(&self, dir: impl AsRef<Path>, name: &str, data: &[u8]) -> Result<()> {
        let dir = self.at(dir.as_ref())?;
        let target = dir.join(name);
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        tmp.write_all(data)
            .and_then(|_| tmp.as_file().sync_all())
            .with_context(|| format!("writing {}", target.display()))?;
        tmp.persist(&target)
            .map_err(|e| anyhow::Error::new(e.error))
            .with_context(|| format!("replacing {}", target.display()))?;
        self.sync_dir(&dir)
    }

    /// Removes the temp files `.NAME.*.tmp` that `write_atomic` writers killed before their rename
    /// left in `dir`. Only safe under the lock that serialises the writers of `NAME`.
    pub fn remove_stale_temp_files(&self, dir: impl AsRef<Path>, name: &str) {
        let dir = dir.as_ref();
        let prefix = format!(".{name}.");
        for entry in self.list(dir).unwrap_or_default() {
            let entry = entry.to_string_lossy();
            if entry.starts_with(&prefix) && entry.ends_with(".tmp") {
                let _ = self.remove_file(dir.join(entry.as_ref()));
            }
        }
    }

    /// Keeps the newest `keep` files of `dir` whose names start with `prefix` and removes the
    /// others: for files set aside with a time in their name (`spool.toml.corrupt-<time>`), whose
    /// names sort by age. Returns how many went.
    pub fn prune(&self, dir: impl AsRef<Path>, prefix: &str, keep: usize) -> usize {
        let dir = dir.as_ref();
        let mut names: Vec<String> = self
            .list(dir)
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        let extra = names.len().saturating_sub(keep);
        names[..extra].iter().filter(|n| self.remove_file(dir.join(n)).is_ok()).count()
    }

    /// fsyncs a directory so a rename inside it is durable.
    pub fn sync_dir(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        File::open(self.at(dir)?)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))
    }
}

/// How many unreadable spool or state files set aside (`*.corrupt-<time>`, `*.newer-<time>`) are
/// kept, newest first, for people to look at; older ones are removed (`Root::prune`).
pub const KEEP_SET_ASIDE: usize = 5;

/// At most `max` bytes from the end of an open file, starting no earlier than `from`.
pub fn read_tail_of(f: &File, from: u64, max: u64) -> io::Result<Vec<u8>> {
    let end = f.metadata()?.len();
    let start = from.max(end.saturating_sub(max));
    let mut buf = vec![0u8; end.saturating_sub(start) as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], start + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// A scratch directory private to this process (0700), removed when dropped. It is made in
/// /dev/shm, else /tmp, never under `$TMPDIR`: files are written there and read back as root, so
/// its parent must be one no user can rename entries in. Scratch directories left by killed
/// processes are removed first. Their name carries the process id, but /dev/shm is shared with
/// chroots and containers whose pids mean nothing here, so the owner also holds a lock on the
/// directory while it lives: one is removed only when its pid is gone and its lock is free.
pub fn scratch_dir(prefix: &str) -> io::Result<Scratch> {
    let host = Root::host();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no scratch directory");
    for base in crate::paths::SCRATCH_DIRS {
        match host.open_trusted(base) {
            Ok(t) if t.md.is_dir() => {}
            Ok(_) | Err(Distrust::Missing) => continue,
            Err(e) => {
                log::info!("not using {base} for scratch files: {e}");
                continue;
            }
        }
        prune_scratch(&host, Path::new(base), prefix);
        let name = format!("{prefix}{}.", std::process::id());
        let private = fs::Permissions::from_mode(0o700);
        // Another process's prune can take the directory between its creation and the lock:
        // then it is gone (or replaced) by the time the lock is held, and another is made.
        for _ in 0..3 {
            let dir = match tempfile::Builder::new().prefix(&name).permissions(private.clone()).tempdir_in(base) {
                Ok(t) => t,
                Err(e) => {
                    last = e;
                    break;
                }
            };
            match lock_dir(dir.path()) {
                Ok(Some(lock)) => return Ok(Scratch { dir, _lock: lock }),
                Ok(None) => last = io::Error::other(format!("{} was removed as it was made", dir.path().display())),
                Err(e) => last = e,
            }
        }
    }
    Err(last)
}

/// A private scratch directory (`scratch_dir`), locked while it lives.
#[derive(Debug)]
pub struct Scratch {
    // Declared first: dropped (removed) while the lock below is still held.
    dir: tempfile::TempDir,
    _lock: fs::File,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Takes the lock of scratch directory `path`; None when someone else holds it or `path` is no
/// longer the directory that was locked.
fn lock_dir(path: &Path) -> io::Result<Option<fs::File>> {
    use fs2::FileExt;
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    if dir.try_lock_exclusive().is_err() {
        return Ok(None);
    }
    let held = dir.metadata()?;
    let now = fs::symlink_metadata(path);
    Ok(now.is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino()).then_some(dir))
}

/// Removes `base/PREFIX<pid>.*` directories of ours whose process is gone and whose lock is free.
fn prune_scratch(host: &Root, base: &Path, prefix: &str) {
    let euid = nix::unistd::geteuid().as_raw();
    for name in host.list(base).unwrap_or_default() {
        let name = name.to_string_lossy();
        let pid = name.strip_prefix(prefix).and_then(|r| r.split('.').next()).and_then(|p| p.parse::<i32>().ok());
        let Some(pid) = pid.filter(|p| *p > 0) else { continue };
        let path = base.join(name.as_ref());
        let ours = host.lstat(&path).is_ok_and(|md| md.is_dir() && md.uid() == euid);
        if !ours || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH) {
            continue;
        }
        // Removed while locked, so that nobody can take it in between.
        if let Ok(Some(_held)) = lock_dir(&path) {
            let _ = host.remove_dir_all(&path);
        }
    }
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
    fn paths_outside_the_root_are_refused_by_every_door() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"x").unwrap();
        fs::write(t.path().join("mine"), b"y").unwrap();
        let r = Root::open(t.path()).unwrap();
        assert_eq!(r.read("mine").unwrap(), b"y", "relative paths are inside");
        assert_eq!(r.read(r.path("mine")).unwrap(), b"y", "absolute paths inside are accepted");
        let err = r.read(outside.path().join("secret")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        let dotdot = r.path("x").join("..").join("..").join("etc");
        assert!(r.stat(&dotdot).is_err(), "no climbing out with ..");
        assert!(r.read("x/../../etc/passwd").is_err());
        assert!(!r.exists(outside.path().join("secret")));
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
    fn the_trust_rule_follows_links_inside_the_root_and_judges_every_directory() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        let mk = |rel: &str, mode: u32| {
            let p = t.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, rel).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        mk("usr/lib/os-release", 0o644);
        symlink("usr/lib", t.path().join("lib")).unwrap();
        symlink("../lib/os-release", t.path().join("usr/os")).unwrap();
        let ok = r.open_trusted("usr/os").unwrap();
        assert_eq!(ok.path, r.path("usr/lib/os-release"), "resolved, symlink-free");
        assert_eq!(io::read_to_string(ok.file).unwrap(), "usr/lib/os-release", "the file opened is the one checked");
        // An absolute target and a `..` past the top stay inside the root.
        symlink("/../../../lib/os-release", t.path().join("abs")).unwrap();
        assert_eq!(r.open_trusted("abs").unwrap().path, r.path("usr/lib/os-release"));
        assert!(matches!(r.open_trusted("usr/none"), Err(Distrust::Missing)));
        assert!(matches!(r.open_trusted("usr/lib/os-release/x"), Err(Distrust::Missing)));

        mk("srv/open/x", 0o644);
        fs::set_permissions(t.path().join("srv/open"), fs::Permissions::from_mode(0o777)).unwrap();
        symlink("/srv/open/x", t.path().join("via")).unwrap();
        let why = |p: &str| match r.open_trusted(p) {
            Err(Distrust::Refused(why)) => why,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(why("via"), "/srv/open is writable by group or others (mode 0777)");
        mk("srv/file", 0o646);
        assert_eq!(why("srv/file"), "/srv/file is writable by group or others (mode 0646)");
        // A sticky world-writable directory is passed; what is in it is judged in turn.
        mk("tmp/mine", 0o600);
        fs::set_permissions(t.path().join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(r.open_trusted("tmp/mine").is_ok());
        symlink("a", t.path().join("loop")).unwrap();
        symlink("loop", t.path().join("a")).unwrap();
        assert!(why("loop").contains("too many levels of symbolic links"));
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(why("fifo").contains("is not a regular file or a directory"), "never opened: it could block");
    }

    #[test]
    fn private_dirs_others_may_write_to_are_refused_not_repaired() {
        for (rel, mode, named) in [("var/lib/x", 0o777, "/var/lib/x"), ("var/lib", 0o775, "/var/lib")] {
            let t = tempfile::tempdir().unwrap();
            let r = Root::open(t.path()).unwrap();
            r.private_dir("var/lib/x").unwrap();
            fs::set_permissions(t.path().join(rel), fs::Permissions::from_mode(mode)).unwrap();
            let err = r.private_dir("var/lib/x").unwrap_err();
            assert_eq!(crate::exit::exit_code(&err), Code::Unsafe);
            let msg = format!("{err:#}");
            assert!(msg.contains(&format!("{named} is writable by group or others (mode {mode:04o})")), "{msg}");
            assert_eq!(fs::metadata(t.path().join(rel)).unwrap().permissions().mode() & 0o777, mode, "not repaired");
        }
        // Readable by others is only reset.
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        fs::create_dir_all(t.path().join("var/lib/x")).unwrap();
        fs::set_permissions(t.path().join("var/lib/x"), fs::Permissions::from_mode(0o755)).unwrap();
        r.private_dir("var/lib/x").unwrap();
        assert_eq!(fs::metadata(t.path().join("var/lib/x")).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn set_aside_files_are_pruned_to_the_newest_and_stale_temp_files_removed() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        for i in 1..=7 {
            fs::write(t.path().join(format!("spool.toml.corrupt-2026010{i}T000000Z")), "x").unwrap();
        }
        fs::write(t.path().join("spool.toml"), "keep").unwrap();
        fs::write(t.path().join(".state.toml.abc.tmp"), "left by a killed writer").unwrap();
        fs::write(t.path().join(".spool.toml.def.tmp"), "another writer's").unwrap();
        assert_eq!(r.prune(t.path(), "spool.toml.corrupt-", KEEP_SET_ASIDE), 2);
        r.remove_stale_temp_files(t.path(), "state.toml");
        let mut left: Vec<String> =
            fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left[0], ".spool.toml.def.tmp", "only the named writer's temp files go");
        assert_eq!(left[1], "spool.toml");
        assert_eq!(left[2], "spool.toml.corrupt-20260103T000000Z", "the two oldest went: {left:?}");
        assert_eq!(left.len(), 2 + KEEP_SET_ASIDE);
    }

    #[test]
    fn scratch_dirs_of_processes_that_are_gone_are_removed() {
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let prefix = "dkms-trigger-unit-scratch.";
        let base = crate::paths::SCRATCH_DIRS.iter().find(|b| Path::new(b).is_dir()).unwrap();
        let left = Path::new(base).join(format!("{prefix}{}.leftover", gone.id()));
        let alive = Path::new(base).join(format!("{prefix}{}.alive", std::process::id()));
        fs::create_dir_all(left.join("sub")).unwrap();
        fs::create_dir_all(&alive).unwrap();
        let fresh = scratch_dir(prefix).unwrap();
        assert!(!left.exists(), "the dead process's scratch directory was removed");
        assert!(alive.exists(), "a live process's is kept");
        assert!(fresh.path().starts_with(base) && fresh.path().is_dir());
        assert_eq!(fs::metadata(fresh.path()).unwrap().permissions().mode() & 0o777, 0o700);
        fs::remove_dir_all(&alive).unwrap();
    }

    /// /dev/shm is shared with chroots and containers that have their own PID namespace: a live
    /// process there has a pid that means nothing here. Its scratch directory is locked while it
    /// lives and must survive another process's pruning (the CI failure of 2026-11-30: trixie's
    /// finalizer removed bookworm's while its dkms.conf evaluation ran, which then read nothing).
    #[test]
    fn a_locked_scratch_dir_of_another_pid_namespace_is_kept() {
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let prefix = "dkms-trigger-unit-scratch-ns.";
        let other = scratch_dir(prefix).unwrap();
        // The same directory, named as the other namespace's process would have named it.
        let base = other.path().parent().unwrap();
        let foreign = base.join(format!("{prefix}{}.foreign", gone.id()));
        fs::rename(other.path(), &foreign).unwrap();
        let mine = scratch_dir(prefix).unwrap();
        assert!(foreign.is_dir(), "a scratch directory whose lock is held is kept");
        drop(mine);
        drop(other);
        let after = scratch_dir(prefix).unwrap();
        assert!(!foreign.exists(), "once its holder is gone it is removed");
        drop(after);
    }

    #[test]
    fn write_atomic_replaces_and_is_private() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        r.write_atomic(r.dir(), "f", b"one").unwrap();
        r.write_atomic(r.dir(), "f", b"two").unwrap();
        assert_eq!(fs::read(t.path().join("f")).unwrap(), b"two");
        assert_eq!(fs::metadata(t.path().join("f")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn read_private_refuses_symlink() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        fs::write(t.path().join("real"), b"x").unwrap();
        symlink(r.path("real"), t.path().join("link")).unwrap();
        assert!(r.read_private("link").is_err());
        assert_eq!(r.read_private("real").unwrap().unwrap(), b"x");
        assert!(r.read_private("none").unwrap().is_none());
    }

    #[test]
    fn open_append_appends_and_refuses_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        r.open_append("log").unwrap().write_all(b"one\n").unwrap();
        r.open_append("log").unwrap().write_all(b"two\n").unwrap();
        assert_eq!(fs::read(t.path().join("log")).unwrap(), b"one\ntwo\n", "append, never truncate");
        symlink(r.path("log"), t.path().join("link")).unwrap();
        assert!(r.open_append("link").is_err(), "O_NOFOLLOW");
        assert_eq!(r.read_tail("log", 4).unwrap(), b"two\n");
    }
}
