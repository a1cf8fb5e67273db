//! Hardening of a root-run tool, through the real binary on fake roots (issue 13): stop signals
//! and SIGKILL with real child processes (no survivors, a free lock), the finalize lock's holder
//! and bound, the environment programs get, files root may not trust (with a real unprivileged
//! user racing renames), hostile package file lists, a headers removal on rpm and Arch, bounded
//! logs. dkms is a stand-in script here: the conditions tested (a build that hangs, what a build
//! sees) are the runner's and the finalizer's, and the real dkms suites (finalize_real) run the
//! same code. Needs root, as CI runs it: every test fails loudly otherwise.
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dkms-trigger");
const K: &str = "6.1.0-99-amd64";
/// The unprivileged user the races run as.
const NOBODY: u32 = 65534;

fn need_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/hardening.rs runs finalize, chown and setuid: run it as root (CI does)"
    );
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A fake root in `T/root`, a stand-in dkms in `T/bin/dkms` that logs to `T/log`.
struct Fake {
    _t: tempfile::TempDir,
    top: PathBuf,
    root: PathBuf,
}

impl Fake {
    fn new() -> Fake {
        need_root();
        let t = tempfile::tempdir().unwrap();
        let top = t.path().to_path_buf();
        // Traversable by the unprivileged user of the race test; writable by root only.
        fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
        let root = top.join("root");
        for d in [&root, &top.join("bin"), &top.join("log")] {
            fs::create_dir_all(d).unwrap();
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let f = Fake { _t: t, top, root };
        f.stand_in_dkms();
        f.file(
            "etc/dkms-trigger/config.d/10-test.toml",
            &format!("dkms = \"{}\"\ndepmod = \"true\"\ninitramfs = \"never\"\n", f.top.join("bin/dkms").display()),
        );
        f
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.top.join("log").join(name)
    }

    fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        p
    }

    fn link(&self, rel: &str, target: &str) {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    /// dkms: logs its arguments and environment; `build` hangs (with a child of its own) while
    /// T/log/hang exists, ignoring SIGTERM so that it outlives a stop by the second before
    /// SIGKILL, and reports any process of an earlier hang still alive.
    fn stand_in_dkms(&self) {
        let l = self.top.join("log").display().to_string();
        let script = format!(
            r#"#!/bin/sh
echo "$*" >> {l}/calls
env > {l}/env.$1
if [ "$1" = build ]; then
    for p in $(cat {l}/pids 2>/dev/null); do
        s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null)
        [ -n "$s" ] && [ "$s" != Z ] && echo "$p alive during a new build" >> {l}/overlap
    done
    if [ -e {l}/hang ]; then
        trap '' TERM
        sleep 300 &
        echo $! >> {l}/pids
        echo $$ >> {l}/pids
        : > {l}/started
        wait
    fi
fi
exit 0
"#
        );
        let p = self.top.join("bin/dkms");
        fs::write(&p, script).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A kernel with an image, a modules directory and headers (a Makefile is enough here).
    fn kernel(&self) {
        self.file(&format!("lib/modules/{K}/modules.order"), "");
        self.file(&format!("lib/modules/{K}/modules.dep"), "");
        self.file(&format!("boot/vmlinuz-{K}"), "image");
        self.file(&format!("usr/src/linux-headers-{K}/Makefile"), "# headers\n");
        self.file(&format!("usr/src/linux-headers-{K}/include/generated/autoconf.h"), "");
        self.link(&format!("lib/modules/{K}/build"), &format!("/usr/src/linux-headers-{K}"));
    }

    fn module(&self, name: &str) {
        self.file(
            &format!("usr/src/{name}-1.0/dkms.conf"),
            &format!(
                "PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"1.0\"\nBUILT_MODULE_NAME[0]=\"{name}\"\n\
                 DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"yes\"\n"
            ),
        );
        self.file(&format!("usr/src/{name}-1.0/{name}.c"), "int x;\n");
        self.file(&format!("usr/src/{name}-1.0/Makefile"), &format!("obj-m := {name}.o\n"));
    }

    /// `name` 1.0 registered with dkms and installed for K, as dkms 3.0.10 lays it out.
    fn installed(&self, name: &str) {
        self.module(name);
        self.link(&format!("var/lib/dkms/{name}/1.0/source"), &format!("/usr/src/{name}-1.0"));
        self.file(&format!("var/lib/dkms/{name}/1.0/{K}/{}/module/{name}.ko", std::env::consts::ARCH), "");
        self.link(
            &format!("var/lib/dkms/{name}/kernel-{K}-{}", std::env::consts::ARCH),
            &format!("1.0/{K}/{}", std::env::consts::ARCH),
        );
        self.file(&format!("lib/modules/{K}/updates/dkms/{name}.ko"), "");
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    fn dt(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run dkms-trigger")
    }

    fn dt_ok(&self, args: &[&str]) -> String {
        let o = self.dt(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        text(&o)
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    fn calls(&self) -> String {
        fs::read_to_string(self.log("calls")).unwrap_or_default()
    }

    /// Waits until the stand-in's build hangs.
    fn wait_started(&self, child: &mut Child) {
        let t = Instant::now();
        while !self.log("started").exists() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("finalize ended ({st}) before the build started: {}", self.calls());
            }
            assert!(t.elapsed() < Duration::from_secs(120), "the build never started: {}", self.calls());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The processes of the hung build (its dkms and the child it started).
    fn hung_pids(&self) -> Vec<i32> {
        fs::read_to_string(self.log("pids")).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect()
    }

    /// The state records every pair as installed, none in progress (the stand-in builds nothing
    /// that the inventory would see, so `status` cannot say it).
    fn assert_state_installed(&self) {
        let state = fs::read_to_string(self.p("var/lib/dkms-trigger/state.toml")).unwrap();
        assert!(state.contains("result = \"installed\"") && !state.contains("in-progress"), "{state}");
    }

    fn status_pair(&self, module: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.dt_ok(&["status", "--json"])).unwrap();
        v["modules"].as_array().unwrap().iter().find(|m| m["module"] == module).unwrap_or_else(|| panic!("{v:#}"))
            ["pairs"][0]
            .clone()
    }
}

/// A process that exists and is not a zombie.
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}

/// Waits up to `limit` for every pid to be gone; the survivors.
fn survivors(pids: &[i32], limit: Duration) -> Vec<i32> {
    let t = Instant::now();
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || t.elapsed() >= limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_with_limit(child: Child, limit: Duration) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            panic!("dkms-trigger did not end within {limit:?}");
        }
    }
}

// --- 1. Interruptions -------------------------------------------------------------------------

#[test]
fn a_stop_signal_stops_the_jobs_records_them_interrupted_and_frees_the_lock() {
    use nix::sys::signal::Signal;
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let f = Fake::new();
        f.kernel();
        f.module("hang");
        f.dt_ok(&["record", "module-changed", "hang/1.0"]);
        fs::write(f.log("hang"), "").unwrap();
        let mut child = f.spawn(&["finalize"]);
        f.wait_started(&mut child);
        let pids = f.hung_pids();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let out = wait_with_limit(child, Duration::from_secs(30));
        let said = text(&out);
        assert_eq!(out.status.code(), Some(7), "{sig}: the documented exit code: {said}");
        assert!(said.contains(&format!("interrupted by {sig}")) && said.contains("... interrupted"), "{said}");
        assert_eq!(
            survivors(&pids, Duration::from_secs(3)),
            Vec::<i32>::new(),
            "{sig}: the build's processes are gone"
        );
        // Recorded as interrupted (rebuilt next time, not failed), the intent kept, the lock free.
        let pair = f.status_pair("hang");
        assert_eq!(pair["cell"], "pending", "{sig}: {pair}");
        assert!(pair["detail"].as_str().unwrap_or("").contains("interrupted"), "{pair}");
        let spool: serde_json::Value = serde_json::from_str(&f.dt_ok(&["spool", "--json"])).unwrap();
        assert_eq!(spool["intents"][0]["kind"], "module-changed", "{spool}");
        fs::remove_file(f.log("hang")).unwrap();
        let next = f.dt(&["finalize", "--no-wait"]);
        assert_eq!(
            next.status.code(),
            Some(0),
            "{sig}: the lock is free and the next finalize builds: {}",
            text(&next)
        );
        assert!(text(&next).contains("build hang/1.0") && text(&next).contains("... ok"), "{}", text(&next));
        f.assert_state_installed();
    }
}

#[test]
fn a_finalize_killed_with_sigkill_leaves_no_job_running_and_no_lock_held() {
    let f = Fake::new();
    f.kernel();
    f.module("hang");
    f.dt_ok(&["record", "module-changed", "hang/1.0"]);
    fs::write(f.log("hang"), "").unwrap();
    let mut child = f.spawn(&["finalize"]);
    f.wait_started(&mut child);
    let pids = f.hung_pids();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(f.dt_ok(&["plan"]).contains("interrupted during run"), "the killed job is planned again");
    // The next finalize may start at once: it waits for what the killed one left, never beside it.
    fs::remove_file(f.log("hang")).unwrap();
    let next = f.dt(&["finalize", "--no-wait"]);
    assert_eq!(next.status.code(), Some(0), "no process keeps the lock: {}", text(&next));
    assert_eq!(survivors(&pids, Duration::from_secs(5)), Vec::<i32>::new(), "no job survives its finalize");
    assert!(
        !f.log("overlap").exists(),
        "a build of the killed finalize still ran: {:?}",
        fs::read_to_string(f.log("overlap"))
    );
    assert!(f.calls().matches("build --dkmstree").count() == 2, "the interrupted build ran again: {}", f.calls());
    f.assert_state_installed();
}

#[test]
fn lock_waits_name_the_holder_and_are_bounded() {
    let f = Fake::new();
    f.kernel();
    f.module("hang");
    f.dt_ok(&["record", "module-changed", "hang/1.0"]);
    fs::write(f.log("hang"), "").unwrap();
    let mut holder = f.spawn(&["finalize"]);
    f.wait_started(&mut holder);
    let pid = holder.id();
    let lock = fs::read_to_string(f.p("var/lib/dkms-trigger/finalize.lock")).unwrap();
    assert!(lock.contains(&format!("pid {pid}\ncommand finalize\nsince ")), "{lock}");
    assert!(lock.lines().any(|l| l.starts_with("group ")), "the running job's group is recorded: {lock}");

    let busy = f.dt(&["finalize", "--no-wait"]);
    assert_eq!(busy.status.code(), Some(3), "{}", text(&busy));
    assert!(text(&busy).contains("another finalizer holds"), "{}", text(&busy));
    assert!(text(&busy).contains(&format!(": pid {pid} (dkms-trigger finalize, since ")), "{}", text(&busy));

    // A removal in a package manager's hook waits at most lock_timeout.
    f.file("etc/dkms-trigger/config.d/50-wait.toml", "lock_timeout = 2\n");
    let t = Instant::now();
    let gave_up = wait_with_limit(f.spawn(&["remove-kernel", K]), Duration::from_secs(30));
    assert!(t.elapsed() >= Duration::from_secs(2), "it waited the bound first");
    assert_eq!(gave_up.status.code(), Some(3), "{}", text(&gave_up));
    assert!(text(&gave_up).contains("gave up after 2 s waiting for another finalizer"), "{}", text(&gave_up));
    assert!(text(&gave_up).contains(&format!("pid {pid} (dkms-trigger finalize")), "{}", text(&gave_up));

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(wait_with_limit(holder, Duration::from_secs(30)).status.code(), Some(7));
    let lock = fs::read_to_string(f.p("var/lib/dkms-trigger/finalize.lock")).unwrap();
    assert_eq!(lock, "", "a holder that ended names nobody");
}

// --- 3. The environment ----------------------------------------------------------------------

#[test]
fn the_callers_environment_does_not_reach_programs() {
    let f = Fake::new();
    f.kernel();
    f.module("envy");
    let evil = f.top.join("evil");
    fs::create_dir_all(&evil).unwrap();
    let marker = f.log("bash_env_ran");
    fs::write(evil.join("bash_env"), format!(": > {}\n", marker.display())).unwrap();
    // A program by that name in an injected PATH directory must not be the one run.
    fs::write(evil.join("evil-depmod"), format!("#!/bin/sh\n: > {}\n", f.log("evil_ran").display())).unwrap();
    fs::set_permissions(evil.join("evil-depmod"), fs::Permissions::from_mode(0o755)).unwrap();
    f.file("etc/dkms-trigger/config.d/20-env.toml", "depmod = \"evil-depmod\"\npass_environment = [\"DT_PASSED\"]\n");
    f.dt_ok(&["record", "module-changed", "envy/1.0"]);
    let out = f
        .cmd(&["finalize"])
        .env("BASH_ENV", evil.join("bash_env"))
        .env("ENV", evil.join("bash_env"))
        .env("CC", "clang")
        .env("ARCH", "arm64")
        .env("sign_file", evil.join("sign"))
        .env("MAKEFLAGS", "-j99")
        .env("TMPDIR", &evil)
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", evil.display()))
        .env("DT_PASSED", "yes")
        .env("DPKG_MAINTSCRIPT_PACKAGE", "linux-image-6.1.0-57-amd64")
        .env("DPKG_MAINTSCRIPT_NAME", "postinst; reboot")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let env = fs::read_to_string(f.log("env.build")).unwrap();
    let vars: Vec<&str> = env.lines().map(|l| l.split('=').next().unwrap()).collect();
    for banned in ["BASH_ENV", "ENV", "CC", "ARCH", "sign_file", "MAKEFLAGS", "TMPDIR", "HOME"] {
        assert!(!vars.contains(&banned), "{banned} reached dkms:\n{env}");
    }
    assert!(env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"), "{env}");
    assert!(env.contains("LC_ALL=C\n") && env.contains("DT_PASSED=yes\n"), "{env}");
    // dpkg's context passes as a plain package name, nothing else.
    assert!(env.contains("DPKG_MAINTSCRIPT_PACKAGE=linux-image-6.1.0-57-amd64\n"), "{env}");
    assert!(!vars.contains(&"DPKG_MAINTSCRIPT_NAME"), "not a name: {env}");
    assert!(!marker.exists(), "BASH_ENV was sourced by a program (dkms.conf evaluation or dkms)");
    assert!(!f.log("evil_ran").exists(), "a program was found through the caller's PATH");
    assert!(text(&out).contains("evil-depmod: not found in /usr/local/sbin:"), "{}", text(&out));
}

// --- 2. Trust ----------------------------------------------------------------------------------

/// The race of the review: usr/src/evil-1.0/dkms.conf links into a directory of an unprivileged
/// user, who exchanges (renameat2 RENAME_EXCHANGE) a root-owned dkms.conf with their own file as
/// fast as possible while root plans. Before the fix, 6 of 40 runs evaluated the user's file.
#[test]
fn a_user_racing_renames_never_gets_a_file_evaluated_as_root() {
    const RUNS: usize = 100;
    let f = Fake::new();
    f.kernel();
    let marks = f.top.join("marks");
    fs::create_dir_all(&marks).unwrap();
    let d = f.p("home/u/d");
    fs::create_dir_all(&d).unwrap();
    let conf = "PACKAGE_NAME=\"evil\"\nPACKAGE_VERSION=\"1.0\"\nAUTOINSTALL=\"yes\"\n";
    fs::write(d.join("dkms.conf"), conf).unwrap();
    fs::write(d.join("other"), format!("{conf}: > {}/evaluated.$$\n", marks.display())).unwrap();
    for p in [d.clone(), d.join("other")] {
        nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(NOBODY)), Some(nix::unistd::Gid::from_raw(NOBODY)))
            .unwrap();
    }
    f.file("usr/src/evil-1.0/evil.c", "int x;\n");
    f.link("usr/src/evil-1.0/dkms.conf", "/home/u/d/dkms.conf");

    let (a, b) = (d.join("dkms.conf"), d.join("other"));
    // SAFETY: the child only makes system calls (setgroups, setgid, setuid, renameat2, _exit)
    // before it is killed.
    let swapper = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let nobody_gid = nix::unistd::Gid::from_raw(NOBODY);
            let ok = nix::unistd::setgroups(&[nobody_gid]).is_ok()
                && nix::unistd::setgid(nobody_gid).is_ok()
                && nix::unistd::setuid(nix::unistd::Uid::from_raw(NOBODY)).is_ok();
            if !ok {
                unsafe { nix::libc::_exit(3) };
            }
            loop {
                let _ = nix::fcntl::renameat2(None, &a, None, &b, nix::fcntl::RenameFlags::RENAME_EXCHANGE);
            }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let mut last = String::new();
    for _ in 0..RUNS {
        last = f.dt_ok(&["plan", "--rescan"]);
    }
    nix::sys::signal::kill(swapper, nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = nix::sys::wait::waitpid(swapper, None).unwrap();
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)),
        "the swapper ran until killed (not {status:?}): it must exchange the files all along"
    );
    let evaluated = fs::read_dir(&marks).unwrap().count();
    assert_eq!(evaluated, 0, "the user's file was evaluated as root in {evaluated} of {RUNS} runs");
    assert!(last.contains("/home/u/d is owned by uid 65534, not root"), "the refusal names the path and why: {last}");
}

#[test]
fn a_state_directory_others_may_write_to_is_refused_with_exit_6() {
    let uid = |p: &Path| nix::unistd::chown(p, Some(nix::unistd::Uid::from_raw(NOBODY)), None).unwrap();
    type Spoil<'a> = &'a dyn Fn(&Fake);
    let cases: [(&str, Spoil, &str); 3] = [
        (
            "owned by a user",
            &|f: &Fake| uid(&f.p("var/lib/dkms-trigger")),
            "/var/lib/dkms-trigger is owned by uid 65534, not root",
        ),
        (
            "mode 0777",
            &|f: &Fake| fs::set_permissions(f.p("var/lib/dkms-trigger"), fs::Permissions::from_mode(0o777)).unwrap(),
            "/var/lib/dkms-trigger is writable by group or others (mode 0777)",
        ),
        (
            "a parent others may write to",
            &|f: &Fake| fs::set_permissions(f.p("var/lib"), fs::Permissions::from_mode(0o777)).unwrap(),
            "/var/lib is writable by group or others (mode 0777)",
        ),
    ];
    for (what, spoil, why) in cases {
        let f = Fake::new();
        f.dt_ok(&["record", "rescan"]);
        spoil(&f);
        for args in [&["record", "rescan"][..], &["finalize"][..]] {
            let o = f.dt(args);
            assert_eq!(o.status.code(), Some(6), "{what}: {args:?}: {}", text(&o));
            assert!(text(&o).contains(why) && text(&o).contains("refusing to use"), "{what}: {}", text(&o));
        }
    }
}

#[test]
fn configuration_others_may_write_to_is_refused_with_exit_6() {
    let f = Fake::new();
    let p = f.file("etc/dkms-trigger/config.d/60-open.toml", "dkms = \"/tmp/x\"\n");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    let o = f.dt(&["config"]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("60-open.toml is writable by group or others (mode 0666)"), "{}", text(&o));
}

// --- 4. Package file lists ---------------------------------------------------------------------

#[test]
fn from_paths_skips_lines_that_are_not_utf8_and_records_the_rest() {
    let f = Fake::new();
    f.module("good");
    let mut input = Vec::new();
    input.extend_from_slice(format!("/usr/lib/modules/{K}/modules.order\n").as_bytes());
    input.extend_from_slice(b"/usr/src/bad\xff\xfe-1.0/dkms.conf\n");
    input.extend_from_slice(b"/usr/src/good-1.0/dkms.conf\n");
    let mut child = f
        .cmd(&["from-paths", "--op", "install"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ignoring line 2: not UTF-8"), "{}", text(&out));
    let spool: serde_json::Value = serde_json::from_str(&f.dt_ok(&["spool", "--json"])).unwrap();
    let kinds: Vec<&str> = spool["intents"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["kernel-added", "module-changed"], "{spool}");
}

#[test]
fn from_paths_remove_carries_on_after_an_error_and_reports_it() {
    let f = Fake::new();
    f.kernel();
    f.installed("first");
    f.installed("second");
    // remove-module's log cannot be opened (a symlink where it must be): that removal fails; the
    // kernel's removal, with its own log, must still run.
    fs::create_dir_all(f.p("var/log/dkms-trigger")).unwrap();
    fs::set_permissions(f.p("var/log/dkms-trigger"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("/etc/passwd", f.p("var/log/dkms-trigger/remove-module.log")).unwrap();
    let input =
        format!("/usr/src/first-1.0/dkms.conf\n/usr/src/second-1.0/dkms.conf\n/usr/lib/modules/{K}/modules.order\n");
    let mut child = f
        .cmd(&["from-paths", "--op", "remove"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "the first failure's code: {said}");
    assert!(
        said.contains("error: removing first/1.0") && said.contains("error: removing second/1.0"),
        "each failure reported: {said}"
    );
    let calls = f.calls();
    assert!(
        calls.contains("unbuild --dkmstree=") && calls.contains(&format!("-k {K}")),
        "the kernel's builds went: {calls}"
    );
}

// --- 5. Headers removed, kernel kept (rpm, Arch) ------------------------------------------------

#[test]
fn a_headers_removal_keeps_the_builds_and_status_calls_them_stale() {
    let f = Fake::new();
    f.kernel();
    f.installed("kept");
    let remove = |paths: &str| {
        let mut child = f
            .cmd(&["from-paths", "--op", "remove", "--source", "pacman:remove"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), paths.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    // Arch's linux-headers and Fedora's kernel-devel, as their hooks hand them over.
    let out = remove(&format!("usr/lib/modules/{K}/build/include/\n/usr/src/kernels/{K}/Makefile\n"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(f.calls(), "", "nothing unbuilt while the kernel stays: {}", text(&out));
    assert!(text(&out).contains("the kernel stays"), "{}", text(&out));
    // The package's files go after its hook.
    fs::remove_dir_all(f.p(&format!("usr/src/linux-headers-{K}"))).unwrap();
    fs::remove_file(f.p(&format!("lib/modules/{K}/build"))).unwrap();
    let pair = f.status_pair("kept");
    assert_eq!(pair["cell"], "stale", "{pair}");
    assert!(pair["detail"].as_str().unwrap().contains("headers were removed"), "{pair}");
    // The kernel itself going does remove them.
    let out = remove(&format!("usr/lib/modules/{K}/modules.order\n"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(f.calls().starts_with("unbuild "), "{}", f.calls());
}

// --- 6. Bounded logs ---------------------------------------------------------------------------

#[test]
fn the_removal_logs_rotate() {
    let f = Fake::new();
    f.kernel();
    fs::create_dir_all(f.p("var/log/dkms-trigger")).unwrap();
    fs::set_permissions(f.p("var/log/dkms-trigger"), fs::Permissions::from_mode(0o700)).unwrap();
    let log = f.p("var/log/dkms-trigger/remove-kernel.log");
    fs::write(&log, vec![b'x'; 2 << 20]).unwrap();
    f.installed("rot");
    f.dt_ok(&["remove-kernel", K]);
    assert_eq!(fs::metadata(log.with_extension("log.1")).unwrap().len(), 2 << 20, "the full log became .1");
    assert!(fs::metadata(&log).unwrap().len() < 4096, "a new log was started");
}
