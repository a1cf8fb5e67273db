//! `dkms`: the commands dkms-trigger runs (always with explicit `-m -v -k -a`, never the default
//! kernel, always `--no-depmod`) and the mapping of dkms's exit codes to results.

use super::Deadline;
use crate::paths;
use crate::root::Root;
use crate::runner::{Cmd, Log, Ran};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// What one dkms step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Ok,
    /// Exit 77: BUILD_EXCLUSIVE does not match this kernel/arch/config. A skip, not an error.
    Unsupported(String),
    /// Exit 21 (3.1.5+), or 1 from a build on a kernel without headers (3.0.10): a skip.
    NoHeaders(String),
    /// Exit 13 (3.1.4+): a BUILD_DEPENDS dependency is not installed for this kernel.
    DependencyMissing(String),
    /// Exit 10 (make failed) or 7 (no .ko after make); `make_log` is dkms's make.log, when it exists.
    BuildFailed {
        reason: String,
        make_log: Option<PathBuf>,
    },
    /// Anything else, with the code and the output's last lines.
    Failed(String),
    /// The step did not fail because of the module: a timeout, a signal, a full disk. Not held
    /// against the module's inputs: the next finalize tries again by itself.
    Transient(String),
}

impl Step {
    pub fn is_ok(&self) -> bool {
        matches!(self, Step::Ok)
    }

    /// What happened, for people.
    pub fn text(&self) -> String {
        match self {
            Step::Ok => "ok".into(),
            Step::Unsupported(w)
            | Step::NoHeaders(w)
            | Step::DependencyMissing(w)
            | Step::Failed(w)
            | Step::Transient(w) => w.clone(),
            Step::BuildFailed { reason, .. } => reason.clone(),
        }
    }
}

/// How to run dkms.
#[derive(Debug, Clone)]
pub struct Dkms {
    pub program: String,
    pub root: Root,
    /// A dkms tree of its own (`--dkmstree`) instead of the root's var/lib/dkms: where rebuilds are
    /// staged so that the installed build stays until the new one exists.
    tree: Option<PathBuf>,
}

/// A (module, version, kernel, arch) as dkms arguments.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub module: &'a str,
    pub version: &'a str,
    pub kernel: &'a str,
    pub arch: &'a str,
    /// The kernel's headers as found by the inventory (passed to dkms when the root is not `/`).
    pub headers: Option<&'a Path>,
}

impl Dkms {
    pub fn new(program: &str, root: &Root) -> Dkms {
        Dkms { program: program.to_string(), root: root.clone(), tree: None }
    }

    /// The same dkms working on the dkms tree `tree` (a host path inside the root); sources and
    /// installed modules stay the root's.
    pub fn staged(&self, tree: &Path) -> Dkms {
        Dkms { tree: Some(tree.to_path_buf()), ..self.clone() }
    }

    /// The dkms tree this dkms works on.
    pub fn tree(&self) -> PathBuf {
        self.tree.clone().unwrap_or_else(|| self.root.path(paths::DKMS_TREE))
    }

    fn cmd(&self, action: &str) -> Cmd {
        let mut c = Cmd::new(&self.program).arg(action);
        if !self.root.is_host() || self.tree.is_some() {
            c = c.arg(format!("--dkmstree={}", self.tree().display()));
        }
        if !self.root.is_host() {
            // An alternate root: point dkms's trees into it (dkms has no --root of its own).
            c = c
                .arg(format!("--sourcetree={}", self.root.path(paths::SOURCE_TREE).display()))
                .arg(format!("--installtree={}", self.root.path(paths::MODULE_DIRS[0]).display()));
        }
        c
    }

    fn mvka(&self, c: Cmd, t: &Target) -> Cmd {
        let c = c.args(["-m", t.module, "-v", t.version, "-k", t.kernel, "-a", t.arch]);
        match (self.root.is_host(), t.headers) {
            (false, Some(h)) => c.arg(format!("--kernelsourcedir={}", h.display())),
            _ => c,
        }
    }

    /// `dkms add -m M -v V`; "already added" (3) counts as done.
    pub fn add(&self, module: &str, version: &str, log: &Log, d: Deadline) -> Result<Step> {
        let ran = self.cmd("add").args(["-m", module, "-v", version]).timeout(d.remaining()).run(log)?;
        Ok(match ran.code {
            Some(0) | Some(3) if !ran.timed_out => Step::Ok,
            _ => failure(&ran),
        })
    }

    /// `dkms unbuild` (removes the build and the installed copy for one kernel).
    pub fn unbuild(&self, t: &Target, log: &Log, d: Deadline) -> Result<Step> {
        let ran = self.mvka(self.cmd("unbuild"), t).arg("--no-depmod").timeout(d.remaining()).run(log)?;
        Ok(if ran.ok() || not_there(&ran) { Step::Ok } else { failure(&ran) })
    }

    /// `dkms build ... -j N`.
    pub fn build(&self, t: &Target, make_jobs: u32, log: &Log, d: Deadline) -> Result<Step> {
        let ran =
            self.mvka(self.cmd("build"), t).args(["-j", &make_jobs.to_string()]).timeout(d.remaining()).run(log)?;
        let make_log = self.tree().join(format!("{}/{}/build/make.log", t.module, t.version));
        let make_log = self.root.exists(&make_log).then_some(make_log);
        Ok(classify_build(&ran, t.headers.is_some(), make_log))
    }

    /// `dkms install ... --no-depmod` (depmod runs once per kernel afterwards).
    pub fn install(&self, t: &Target, log: &Log, d: Deadline) -> Result<Step> {
        let ran = self.mvka(self.cmd("install"), t).arg("--no-depmod").timeout(d.remaining()).run(log)?;
        Ok(match ran.code {
            Some(0) if !ran.timed_out => Step::Ok,
            Some(77) => Step::Unsupported(last_line(&ran)),
            _ => failure(&ran),
        })
    }

    /// `dkms uninstall` of one version for one kernel (before installing another version).
    pub fn uninstall(&self, t: &Target, log: &Log, d: Deadline) -> Result<Step> {
        let ran = self.mvka(self.cmd("uninstall"), t).arg("--no-depmod").timeout(d.remaining()).run(log)?;
        Ok(if ran.ok() || not_there(&ran) { Step::Ok } else { failure(&ran) })
    }

    /// `dkms remove -m M -v V --all`: every build of a module version and its registration.
    pub fn remove_all(&self, module: &str, version: &str, log: &Log, d: Deadline) -> Result<Step> {
        let ran = self
            .cmd("remove")
            .args(["-m", module, "-v", version, "--all", "--no-depmod"])
            .timeout(d.remaining())
            .run(log)?;
        Ok(if ran.ok() || not_there(&ran) { Step::Ok } else { failure(&ran) })
    }

    /// Whether `M/V` is registered now (an earlier job of the same module may have added it since
    /// the inventory was read).
    pub fn is_registered(&self, module: &str, version: &str) -> bool {
        self.root.exists(self.tree().join(format!("{module}/{version}/source")))
    }

    /// Where dkms keeps the build of a target: `TREE/M/V/K/A`.
    pub fn build_dir(&self, t: &Target) -> PathBuf {
        self.tree().join(format!("{}/{}/{}/{}", t.module, t.version, t.kernel, t.arch))
    }
}

/// The dkms `program` (the configuration's `dkms`) as `--version` reports it: its version and
/// where it is, or why it cannot run. Never an error: a missing dkms is what this answers.
pub fn describe(program: &str) -> String {
    let who = if program == "dkms" { "dkms".to_string() } else { format!("dkms ({program})") };
    let path = match crate::runner::locate(program) {
        Ok(path) => path,
        Err(why) => {
            let why = why.strip_prefix(&format!("{program}: ")).unwrap_or(&why);
            return format!("{who}: {why}");
        }
    };
    match Cmd::new(&path).arg("--version").timeout(std::time::Duration::from_secs(10)).output() {
        Ok(c) if c.ok() => match parse_version_output(&c.stdout) {
            Some(v) => format!("dkms {v} ({})", path.display()),
            None => format!("{who}: {}: version not recognised in {:?}", path.display(), c.stdout.trim()),
        },
        Ok(c) => format!("{who}: {}", c.explain()),
        Err(e) => format!("{who}: {e:#}"),
    }
}

/// The version in `dkms --version`'s output: `dkms-3.0.10` (Debian 12), `dkms-3.2.2` and later
/// the same form (the script prints `dkms-@RELEASE_STRING@`).
pub fn parse_version_output(out: &str) -> Option<String> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let v = line.strip_prefix("dkms-").or_else(|| line.strip_prefix("dkms "))?;
    let ok = v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c));
    ok.then(|| v.to_string())
}

/// What programs print when a write fails for lack of space (ENOSPC's strerror).
pub const DISK_FULL: &str = "No space left on device";

/// dkms exits 3 for "not added / not built / not installed": nothing to undo.
fn not_there(ran: &Ran) -> bool {
    ran.code == Some(3) && !ran.timed_out
}

/// A step that did not succeed: transient when it was cut short (a timeout, a signal) or the disk
/// was full, a failure otherwise.
fn failure(ran: &Ran) -> Step {
    if ran.timed_out || ran.code.is_none() || ran.output_tail(16 * 1024).contains(DISK_FULL) {
        Step::Transient(ran.explain())
    } else {
        Step::Failed(ran.explain())
    }
}

fn last_line(ran: &Ran) -> String {
    ran.last_lines(1).pop().unwrap_or_default()
}

/// Maps `dkms build`'s exit status (dkms.md, "Exit codes").
pub fn classify_build(ran: &Ran, has_headers: bool, make_log: Option<PathBuf>) -> Step {
    if ran.timed_out || ran.code.is_none() {
        return Step::Transient(ran.explain());
    }
    if ran.output_tail(64 * 1024).contains(DISK_FULL) {
        return Step::Transient(format!("{} (the disk is full)", ran.explain()));
    }
    match ran.code {
        Some(0) => Step::Ok,
        Some(77) => Step::Unsupported(
            ran.last_lines(4).into_iter().find(|l| l.contains("BUILD_EXCLUSIVE")).unwrap_or_else(|| last_line(ran)),
        ),
        Some(21) => Step::NoHeaders(last_line(ran)),
        Some(1) if !has_headers => Step::NoHeaders(last_line(ran)),
        Some(13) => Step::DependencyMissing(last_line(ran)),
        Some(10) | Some(7) => {
            let what = if ran.code == Some(10) { "make failed" } else { "make produced no module file" };
            Step::BuildFailed {
                reason: format!("build failed ({what}, dkms exit {})", ran.code.unwrap_or(0)),
                make_log,
            }
        }
        _ => Step::Failed(ran.explain()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran_with(code: i32, output: &str) -> (tempfile::TempDir, Ran) {
        let t = tempfile::tempdir().unwrap();
        let script = format!("printf '%s\\n' \"$1\"; exit {code}");
        let log = Log::open(&Root::open(t.path()).unwrap(), "log").unwrap();
        let ran = Cmd::new("sh").args(["-c", &script, "sh", output]).run(&log).unwrap();
        (t, ran)
    }

    #[test]
    fn build_exit_codes_map_as_documented() {
        type Case = (i32, bool, &'static str, fn(&Step) -> bool);
        let cases: &[Case] = &[
            (0, true, "ok", |s| *s == Step::Ok),
            (
                77,
                true,
                "Error! ... includes a BUILD_EXCLUSIVE directive which does not match",
                |s| matches!(s, Step::Unsupported(m) if m.contains("BUILD_EXCLUSIVE")),
            ),
            (21, true, "headers missing", |s| matches!(s, Step::NoHeaders(_))),
            (1, false, "Error! Your kernel headers for kernel X cannot be found", |s| matches!(s, Step::NoHeaders(_))),
            (1, true, "Error! something else", |s| matches!(s, Step::Failed(m) if m.contains("status 1"))),
            (
                13,
                true,
                "missing dependencies: nvidia",
                |s| matches!(s, Step::DependencyMissing(m) if m.contains("nvidia")),
            ),
            (
                10,
                true,
                "Bad return status for module build",
                |s| matches!(s, Step::BuildFailed { reason, .. } if reason.contains("make failed")),
            ),
            (7, true, "no .ko", |s| matches!(s, Step::BuildFailed { reason, .. } if reason.contains("no module file"))),
            (4, true, "broken", |s| matches!(s, Step::Failed(m) if m.contains("status 4: broken"))),
        ];
        for (code, headers, out, check) in cases {
            let (_t, ran) = ran_with(*code, out);
            let step = classify_build(&ran, *headers, None);
            assert!(check(&step), "exit {code} (headers {headers}) -> {step:?}");
        }
    }

    #[test]
    fn version_output_of_every_dkms_wording() {
        assert_eq!(parse_version_output("dkms-3.0.10\n").as_deref(), Some("3.0.10"));
        assert_eq!(parse_version_output("dkms-3.2.2\n").as_deref(), Some("3.2.2"));
        assert_eq!(parse_version_output("\ndkms-3.4.3~rc1\n").as_deref(), Some("3.4.3~rc1"));
        // An unsubstituted script, another program, nothing at all.
        for bad in ["dkms-@RELEASE_STRING@\n", "Usage: foo\n", "", "dkms-\n"] {
            assert_eq!(parse_version_output(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn describe_never_fails_and_says_what_is_missing() {
        let said = describe("no-such-dkms-here");
        assert!(said.starts_with("dkms (no-such-dkms-here): not found in /usr/local/sbin:"), "{said}");
        let t = tempfile::tempdir().unwrap();
        let fake = t.path().join("dkms");
        std::fs::write(&fake, "#!/bin/sh\necho dkms-3.2.2\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert_eq!(describe(fake.to_str().unwrap()), format!("dkms 3.2.2 ({})", fake.display()));
    }

    #[test]
    fn alternate_root_points_dkms_trees_into_it() {
        let t = tempfile::tempdir().unwrap();
        let d = Dkms::new("dkms", &Root::open(t.path()).unwrap());
        let target =
            Target { module: "m", version: "1", kernel: "k", arch: "x86_64", headers: Some(Path::new("/r/usr/src/h")) };
        let shown = d.mvka(d.cmd("build"), &target).display();
        assert!(
            shown.contains(&format!("--dkmstree={}/var/lib/dkms", t.path().canonicalize().unwrap().display())),
            "{shown}"
        );
        assert!(shown.ends_with("-m m -v 1 -k k -a x86_64 --kernelsourcedir=/r/usr/src/h"), "{shown}");
        let host = Dkms::new("dkms", &Root::open(Path::new("/")).unwrap());
        assert_eq!(host.mvka(host.cmd("build"), &target).display(), "dkms build -m m -v 1 -k k -a x86_64");
    }
}
