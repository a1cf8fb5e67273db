//! The trust rule (docs/design.md, "Security"): what root runs, sources or reads as configuration
//! is opened one descriptor at a time, each step judged by `trust_problem`.

use super::{File, Metadata, Root};
use nix::fcntl::OFlag;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

impl Root {
    // --- Trust ---------------------------------------------------------------------------------

    /// Opens `p` (relative to the root, or an absolute path inside it) only if root may trust it:
    /// the root directory, every directory the path resolves through (symlinks are followed as a
    /// chroot would, inside the root) and the entry itself pass `trust_problem`, and none is on a
    /// FUSE file system (whose owner serves its content at will). Each step is an `openat` with
    /// `O_NOFOLLOW` relative to the directory just checked, and each check an `fstat` of what was
    /// opened, so a user renaming or exchanging entries cannot slip another file in between; a
    /// regular file is reopened for reading from its checked directory and must be the inode that
    /// was checked. Symlinks themselves are not judged: they live in directories that were.
    pub fn open_trusted(&self, p: impl AsRef<Path>) -> Result<Trusted, Distrust> {
        let host = self.at(p.as_ref()).map_err(Distrust::Io)?;
        let inside = self.inside(&host).unwrap_or_default();
        let top = open_at(None, &self.dir, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(Distrust::Io)?;
        let md = top.metadata().map_err(Distrust::Io)?;
        self.judge(&top, &md, &self.dir)?;
        let mut stack = vec![(top, self.dir.clone(), md)];
        let mut todo: Vec<OsString> = Vec::new();
        push_components(&mut todo, &inside);
        let mut links = 0;
        while let Some(part) = todo.pop() {
            if part == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let (dir, dir_path, _) = stack.last().expect("the root stays on the stack");
            let f = match open_at(Some(dir), &part, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
                Ok(f) => f,
                Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ENOENT) | Some(nix::libc::ENOTDIR)) => {
                    return Err(Distrust::Missing)
                }
                Err(e) => return Err(Distrust::Io(e)),
            };
            let md = f.metadata().map_err(Distrust::Io)?;
            if md.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Distrust::Refused(format!("{}: too many levels of symbolic links", self.shown(&host))));
                }
                let target = PathBuf::from(
                    nix::fcntl::readlinkat(Some(dir.as_raw_fd()), part.as_os_str())
                        .map_err(|e| Distrust::Io(e.into()))?,
                );
                if target.is_absolute() {
                    stack.truncate(1);
                }
                push_components(&mut todo, &target);
                continue;
            }
            let path = dir_path.join(&part);
            self.judge(&f, &md, &path)?;
            if !todo.is_empty() && !md.is_dir() {
                return Err(Distrust::Missing);
            }
            stack.push((f, path, md));
        }
        let (f, path, md) = stack.pop().expect("the root stays on the stack");
        if md.is_dir() {
            return Ok(Trusted { file: f, path, md });
        }
        if !md.is_file() {
            return Err(Distrust::Refused(format!("{} is not a regular file or a directory", self.shown(&path))));
        }
        let (dir, _, _) = stack.last().expect("a file has a directory");
        let name = path.file_name().expect("a checked file has a name");
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let opened = open_at(Some(dir), name, flags).map_err(Distrust::Io)?;
        let now = opened.metadata().map_err(Distrust::Io)?;
        if (now.dev(), now.ino()) != (md.dev(), md.ino()) {
            return Err(Distrust::Refused(format!("{} changed while it was being checked", self.shown(&path))));
        }
        Ok(Trusted { file: opened, path, md: now })
    }

    /// `trust_problem` and the FUSE test for one opened entry; the refusal names it.
    fn judge(&self, f: &File, md: &Metadata, path: &Path) -> Result<(), Distrust> {
        let why = trust_problem(md).or_else(|| {
            let fuse =
                nix::sys::statfs::fstatfs(f).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC);
            fuse.then(|| "is on a FUSE file system, whose owner serves its content".to_string())
        });
        match why {
            Some(why) => Err(Distrust::Refused(format!("{} {why}", self.shown(path)))),
            None => Ok(()),
        }
    }
}

/// Links followed before giving up, as Linux does (MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// A path that passed the trust rule (`Root::open_trusted`).
#[derive(Debug)]
pub struct Trusted {
    /// A regular file opened for reading, or a directory opened as a path only (`O_PATH`).
    pub file: File,
    /// The host path it resolved to, free of symlinks. Every directory on it passed the rule, so
    /// no other user can change what this path names: handing it to bash or dkms afterwards
    /// gives them the file that was checked.
    pub path: PathBuf,
    pub md: Metadata,
}

/// Why a path did not pass the trust rule.
#[derive(Debug)]
pub enum Distrust {
    /// Nothing there: a component is missing, or a file stands where a directory must be.
    Missing,
    /// A component breaks the rule; the text names it and says why ("/usr/src/x is owned by uid
    /// 1000, not root").
    Refused(String),
    /// Any other error on the way.
    Io(io::Error),
}

impl fmt::Display for Distrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distrust::Missing => f.write_str("does not exist"),
            Distrust::Refused(why) => f.write_str(why),
            Distrust::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Why an entry may not be run, sourced or read as configuration by root, if so: owned by a user
/// other than root and the one running this (who gains nothing through their own files, and whose
/// non-root runs only report), or writable by group or others, except a directory with the sticky
/// bit (like /tmp: others may add entries but not replace the ones that are judged in turn).
pub fn trust_problem(md: &Metadata) -> Option<String> {
    let uid = md.uid();
    if uid != 0 && uid != nix::unistd::geteuid().as_raw() {
        return Some(format!("is owned by uid {uid}, not root"));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 && !(md.is_dir() && mode & 0o1000 != 0) {
        return Some(format!("is writable by group or others (mode {mode:04o})"));
    }
    None
}

/// `openat(dir, name, flags | O_CLOEXEC)` as a `File` (`dir` None: `name` is absolute).
fn open_at(dir: Option<&File>, name: impl AsRef<OsStr>, flags: OFlag) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        dir.map(|d| d.as_raw_fd()),
        name.as_ref(),
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor, and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Pushes the components of `p` onto the stack so that the first one is popped first (the walks
/// of `open_trusted` and `inventory::resolve`).
pub(crate) fn push_components(todo: &mut Vec<OsString>, p: &Path) {
    let start = todo.len();
    for c in p.components() {
        match c {
            Component::Normal(s) => todo.push(s.to_os_string()),
            Component::ParentDir => todo.push("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    todo[start..].reverse();
}
