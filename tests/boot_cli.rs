//! `dkms-trigger boot` (the unit's command) through the real binary on fake roots, with a stand-in
//! dkms that lays builds out as dkms does; and the unit file itself through `systemd-analyze
//! verify`. The running kernel is the fake root's proc/sys/kernel/osrelease. Needs root.
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_dkms-trigger");
const K: &str = "6.1.0-47-amd64";
const K2: &str = "6.1.0-48-amd64";
const ARCH: &str = std::env::consts::ARCH;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A fake root in `T/root`, a stand-in dkms in `T/bin/dkms` logging its calls to `T/calls`.
struct Fake {
    _t: tempfile::TempDir,
    top: PathBuf,
    root: PathBuf,
}

impl Fake {
    fn new() -> Fake {
        assert!(nix::unistd::geteuid().is_root(), "boot runs as root: run tests/boot_cli.rs as root (CI does)");
        let t = tempfile::tempdir().unwrap();
        let top = t.path().to_path_buf();
        fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
        let root = top.join("root");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(top.join("bin")).unwrap();
        let f = Fake { _t: t, top, root };
        // dkms as far as the finalizer can tell: add registers, build leaves module files,
        // install points kernel-K-A at the build.
        let calls = f.top.join("calls").display().to_string();
        let script = format!(
            r#"#!/bin/sh
echo "$*" >> {calls}
cmd=$1; shift
while [ $# -gt 0 ]; do
    case $1 in
    --dkmstree=*) tree=${{1#*=}} ;;
    -m) m=$2; shift ;; -v) v=$2; shift ;; -k) k=$2; shift ;; -a) a=$2; shift ;;
    esac
    shift
done
case $cmd in
add) mkdir -p "$tree/$m/$v" && ln -sfn "/usr/src/$m-$v" "$tree/$m/$v/source" ;;
build) mkdir -p "$tree/$m/$v/$k/$a/module" && : > "$tree/$m/$v/$k/$a/module/$m.ko" ;;
install) ln -sfn "$v/$k/$a" "$tree/$m/kernel-$k-$a" ;;
esac
exit 0
"#
        );
        let p = f.top.join("bin/dkms");
        fs::write(&p, script).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        f.file(
            "etc/dkms-trigger/config.d/10-test.toml",
            &format!("dkms = \"{}\"\ndepmod = \"true\"\ninitramfs = \"never\"\n", p.display()),
        );
        f.file("var/lib/dpkg/status", "");
        f.file("proc/sys/kernel/osrelease", &format!("{K}\n"));
        f
    }

    fn file(&self, rel: &str, content: &str) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }

    fn link(&self, rel: &str, target: &str) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    /// Kernel `k` installed (modules directory, image), with headers when asked.
    fn kernel(&self, k: &str, headers: bool) {
        self.file(&format!("lib/modules/{k}/modules.dep"), "");
        self.file(&format!("boot/vmlinuz-{k}"), "image");
        if headers {
            self.file(&format!("usr/src/linux-headers-{k}/Makefile"), "# headers\n");
            self.link(&format!("lib/modules/{k}/build"), &format!("/usr/src/linux-headers-{k}"));
        }
    }

    /// `name` 1.0 registered with dkms (AUTOINSTALL as given), built and installed on `kernels`.
    fn module(&self, name: &str, autoinstall: &str, kernels: &[&str]) {
        self.file(
            &format!("usr/src/{name}-1.0/dkms.conf"),
            &format!(
                "PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"1.0\"\nBUILT_MODULE_NAME[0]=\"{name}\"\n\
                 DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"{autoinstall}\"\n"
            ),
        );
        self.file(&format!("usr/src/{name}-1.0/Makefile"), &format!("obj-m := {name}.o\n"));
        self.link(&format!("var/lib/dkms/{name}/1.0/source"), &format!("/usr/src/{name}-1.0"));
        for k in kernels {
            self.file(&format!("var/lib/dkms/{name}/1.0/{k}/{ARCH}/module/{name}.ko"), "");
            self.link(&format!("var/lib/dkms/{name}/kernel-{k}-{ARCH}"), &format!("1.0/{k}/{ARCH}"));
        }
    }

    fn dt(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("--root").arg(&self.root).args(args).output().expect("run dkms-trigger")
    }

    fn boot(&self) -> Output {
        self.dt(&["-vv", "boot"])
    }

    /// The stand-in's calls since the last look.
    fn take_calls(&self) -> Vec<String> {
        let p = self.top.join("calls");
        let calls = fs::read_to_string(&p).unwrap_or_default();
        let _ = fs::remove_file(&p);
        calls
            .lines()
            .map(|l| l.split_whitespace().filter(|w| !w.starts_with("--")).collect::<Vec<_>>().join(" "))
            .collect()
    }

    fn pending(&self) -> usize {
        let o = self.dt(&["spool", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
        v["intents"].as_array().unwrap().len()
    }
}

fn builds(calls: &[String]) -> Vec<&str> {
    calls.iter().filter(|c| c.starts_with("build ")).map(String::as_str).collect()
}

#[test]
fn running_kernel_without_headers_names_the_headers_package_and_exits_0() {
    let f = Fake::new();
    f.kernel(K, false);
    f.module("hello", "yes", &[]);
    let o = f.boot();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let warning = format!(
        "warning: the running kernel {K} has no headers, so hello/1.0 cannot be built for it: install linux-headers-{K}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains(&warning), "{}", text(&o));
    assert_eq!(f.take_calls(), Vec::<String>::new(), "nothing can be built");
}

#[test]
fn a_running_kernel_whose_modules_were_never_built_is_caught_up_once() {
    let f = Fake::new();
    f.kernel(K2, true);
    f.kernel(K, true); // installed by something that bypassed the hooks
    f.module("hello", "yes", &[K2]);
    f.module("world", "yes", &[K2]);
    f.module("handmade", "", &[K2]); // not AUTOINSTALL: never built by kernel events
    let o = f.boot();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&format!("the running kernel {K} has no DKMS build or record of")), "{}", text(&o));
    let calls = f.take_calls();
    let built = builds(&calls);
    assert_eq!(built.len(), 2, "{calls:#?}");
    for m in ["hello", "world"] {
        assert!(built.iter().any(|b| b.starts_with(&format!("build -m {m} -v 1.0 -k {K} "))), "{m}: {calls:#?}");
    }
    assert!(built.iter().all(|b| !b.contains("handmade") && !b.contains(K2)), "{calls:#?}");
    let marker = fs::read_to_string(f.root.join("var/lib/dkms-trigger/boot-checked")).unwrap();
    assert!(marker.lines().any(|l| l == format!("{K} handmade/1.0")), "{marker}");
    // The next boot: the look finds a trace of everything and plans nothing.
    let o = f.boot();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&format!("nothing to catch up for the running kernel {K}")), "{}", text(&o));
    assert_eq!(f.take_calls(), Vec::<String>::new());
    // A build removed behind the tool's back (its state still says installed): caught up again.
    fs::remove_file(f.root.join(format!("var/lib/dkms/world/kernel-{K}-{ARCH}"))).unwrap();
    fs::remove_dir_all(f.root.join(format!("var/lib/dkms/world/1.0/{K}"))).unwrap();
    let o = f.boot();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let calls = f.take_calls();
    assert_eq!(builds(&calls).len(), 1, "{calls:#?}");
    assert!(builds(&calls)[0].starts_with(&format!("build -m world -v 1.0 -k {K}")), "{calls:#?}");
}

#[test]
fn boot_completes_pending_intents_and_is_idle_with_nothing_to_do() {
    let f = Fake::new();
    f.kernel(K, true);
    f.kernel(K2, true);
    f.module("hello", "yes", &[K]);
    // Left by a transaction whose finalize never ran (power cut).
    let o = f.dt(&["record", "kernel-added", K2]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(f.pending(), 1);
    let o = f.boot();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let calls = f.take_calls();
    assert_eq!(builds(&calls).len(), 1, "{calls:#?}");
    assert!(builds(&calls)[0].starts_with(&format!("build -m hello -v 1.0 -k {K2}")), "{calls:#?}");
    assert_eq!(f.pending(), 0, "the intent was handled");
    // Idle: no output, no job, no run log.
    let logs = || fs::read_dir(f.root.join("var/log/dkms-trigger")).map(|d| d.count()).unwrap_or(0);
    let before = logs();
    let o = f.dt(&["boot"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(text(&o), "", "an idle boot prints nothing");
    assert_eq!(f.take_calls(), Vec::<String>::new());
    assert_eq!(logs(), before, "no run");
    // A root without a running kernel (no proc under it): only the pending work.
    fs::remove_file(f.root.join("proc/sys/kernel/osrelease")).unwrap();
    let o = f.dt(&["boot"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn boot_needs_root() {
    let f = Fake::new();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "--root"])
        .arg(&f.root)
        .arg("boot")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
}

/// The unit as `make install` writes it, with ExecStart pointing at this build's binary (verify
/// checks that the program exists), passes `systemd-analyze verify`; one naming a missing program
/// fails it, so a pass is not an unchecked verify. The man page is not installed here, so its
/// Documentation= link is not checked (--man=no); tests/deb_e2e.rs verifies the installed unit.
#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let t = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(BIN).parent().unwrap();
    let dest = t.path().join("dest");
    let o = Command::new("make")
        .current_dir(repo)
        .args(["--no-print-directory", "install", "CARGO=true"])
        .arg(format!("BIN={BIN}"))
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("SBINDIR={}", bin_dir.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "make install: {}", text(&o));
    let unit = dest.join("usr/lib/systemd/system/dkms-trigger.service");
    let body = fs::read_to_string(&unit).unwrap();
    assert!(body.contains(&format!("ExecStart={}/dkms-trigger boot\n", bin_dir.display())), "{body}");
    for want in [
        "Type=oneshot\n",
        "After=local-fs.target\n",
        "Before=display-manager.service systemd-user-sessions.service\n",
        "WantedBy=multi-user.target\n",
    ] {
        assert!(body.contains(want), "{want:?} in\n{body}");
    }
    let verify = |path: &Path| {
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(path)
            .output()
            .expect("systemd-analyze (tests/setup/install-deps.sh --deb installs systemd)")
    };
    let o = verify(&unit);
    assert!(o.status.success(), "systemd-analyze verify: {}", text(&o));
    let broken = t.path().join("dkms-trigger.service");
    fs::write(&broken, body.replace(&bin_dir.display().to_string(), "/nonexistent")).unwrap();
    let o = verify(&broken);
    assert!(!o.status.success() && text(&o).contains("/nonexistent/dkms-trigger"), "{}", text(&o));
}
