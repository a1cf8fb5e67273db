//! The environment every program runs with, whatever the caller's, and the programs themselves:
//! found once in a fixed PATH, and run only when the trust rule accepts them.
//!
//! The caller's environment reaches no program: dkms reads `sign_file`, `mok_signing_key`,
//! `parallel_jobs`, `ADDON_MODULES_DIR` and `TMPDIR` from it, make reads `CC`, `ARCH`,
//! `CROSS_COMPILE`, `KBUILD_*`, `MAKEFLAGS`, bash runs `BASH_ENV`, and a `PATH` entry picks the
//! programs. What dkms 3.0.10 to 3.4 need from the environment is a PATH (they append
//! /usr/lib/dkms themselves) and nothing else: `TMPDIR` falls back to /tmp, and neither they nor
//! make, depmod or the initramfs tools need `HOME`. The configuration's `pass_environment` names
//! the variables to let through anyway (a proxy for a PRE_BUILD script, a `TMPDIR`).
//! dpkg's own context (the maintainer script's package and name) passes when it is plain text.

use crate::root::{Distrust, Root};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// The PATH every program gets, and where program names are looked up.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables let through from the caller's environment (config `pass_environment`).
static PASSED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Programs already looked up: name (or absolute path) -> path to run, or why not.
static PROGRAMS: Mutex<BTreeMap<OsString, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());

/// Lets the named variables through to every program from now on (the configuration's
/// `pass_environment`, validated names).
pub fn pass_through(names: &[String]) {
    *PASSED.write().unwrap_or_else(|e| e.into_inner()) = names.to_vec();
}

/// dpkg's description of the maintainer script running (the package and the script's name), let
/// through when it is plain package-name text: the programs then know, as under stock dkms, which
/// package's script runs them (update-initramfs and dkms's own scripts read it; a build log can
/// say who built a module). A name, never a path or code.
const DPKG_CONTEXT: [&str; 2] = ["DPKG_MAINTSCRIPT_PACKAGE", "DPKG_MAINTSCRIPT_NAME"];

/// The whole environment of a program: PATH, LC_ALL=C (messages and sorting that parsers can
/// rely on), dpkg's context, then the variables let through that are set.
pub(super) fn base() -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![("PATH".into(), PATH.into()), ("LC_ALL".into(), "C".into())];
    for name in DPKG_CONTEXT {
        if let Some(value) = std::env::var_os(name).filter(|v| is_package_name(v)) {
            env.push((name.into(), value));
        }
    }
    for name in PASSED.read().unwrap_or_else(|e| e.into_inner()).iter() {
        if let Some(value) = std::env::var_os(name) {
            env.push((name.into(), value));
        }
    }
    env
}

/// Debian package (and maintainer script) name characters, at most 128 of them.
fn is_package_name(v: &OsStr) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".+-:".contains(c))
}

/// The path to run for `name`: an absolute path as it is, a bare name from the first PATH
/// directory that has it, looked up once per process. Refused when the trust rule refuses the
/// program (a program named by the configuration runs as root), or when a relative path is given.
pub(super) fn program(name: &OsStr) -> Result<PathBuf, String> {
    let mut cache = PROGRAMS.lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(name.to_os_string()).or_insert_with(|| find(name)).clone()
}

fn find(name: &OsStr) -> Result<PathBuf, String> {
    let shown = name.to_string_lossy();
    let candidates: Vec<PathBuf> = if Path::new(name).is_absolute() {
        vec![PathBuf::from(name)]
    } else if name.is_empty() || name.as_bytes().contains(&b'/') {
        return Err(format!("{shown}: a program must be an absolute path or a name looked up in PATH"));
    } else {
        PATH.split(':').map(|dir| Path::new(dir).join(name)).collect()
    };
    let host = Root::host();
    for candidate in candidates {
        match host.open_trusted(&candidate) {
            Ok(t) if t.md.is_file() && crate::root::MetadataExt::mode(&t.md) & 0o111 != 0 => return Ok(candidate),
            // A directory or a file without execute permission: the next one, as a shell does.
            Ok(_) | Err(Distrust::Missing) => {}
            Err(Distrust::Refused(why)) => return Err(format!("refusing to run {}: {why}", candidate.display())),
            Err(Distrust::Io(e)) => log::info!("{}: {e}", candidate.display()),
        }
    }
    Err(format!("{shown}: not found in {PATH}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_are_found_in_the_fixed_path_and_paths_are_checked() {
        let sh = program(OsStr::new("sh")).unwrap();
        assert!(PATH.split(':').any(|d| sh.starts_with(d)), "{}", sh.display());
        assert!(program(OsStr::new("no-such-program-here")).unwrap_err().contains("not found in /usr/local/sbin"));
        assert!(program(OsStr::new("bin/sh")).unwrap_err().contains("absolute path"));

        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("prog");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o757)).unwrap();
        let why = program(p.as_os_str()).unwrap_err();
        assert!(why.contains("refusing to run") && why.contains("is writable by group or others (mode 0757)"), "{why}");
        let q = t.path().join("fine");
        std::fs::write(&q, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(program(q.as_os_str()).unwrap(), q);
    }
}
