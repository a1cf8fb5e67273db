//! The hooks through the real binary: `dkms-trigger hook ...` on fake roots (with the real dpkg-query
//! and dpkg-trigger on a fake dpkg database, real run-parts and real /proc ancestry), and the hook
//! files themselves inside a World (tests/common), where they run with their production paths.
//! Needs root, like the hooks.
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{show, World};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_dkms-trigger");
const K: &str = "6.1.0-47-amd64";
const HEADERS: &str = "linux-headers-6.1.0-47-amd64";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `dkms-trigger --root ROOT ARGS` with only the environment given (none of the test runner's).
fn dt_env(root: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--root").arg(root).args(args).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    run_with_stdin(&mut c, stdin)
}

fn run_with_stdin(c: &mut Command, stdin: &str) -> Output {
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    // A command that does not read its input may be gone already: not this helper's business.
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// Writes an executable script. Through `install`, so that this multi-threaded test process never
/// holds a writable descriptor of it that a concurrently forked child could inherit (exec would
/// then fail with "Text file busy").
fn write_script(path: &Path, text: &str) {
    let src = path.with_extension("src");
    fs::write(&src, text).unwrap();
    let st = Command::new("install").args(["-m", "0755"]).arg(&src).arg(path).status().unwrap();
    assert!(st.success());
    fs::remove_file(src).unwrap();
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The pending intents as `kind args` lines (`dkms-trigger spool --json`), with their sources.
fn pending(root: &Path) -> Vec<(String, Vec<String>)> {
    let out = Command::new(BIN).arg("--root").arg(root).args(["spool", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["intents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let args = &i["args"];
            let line = match i["kind"].as_str().unwrap() {
                "headers-changed" => format!(
                    "headers-changed {}{}",
                    args["kernel"].as_str().unwrap(),
                    if args["force"] == true { " --force" } else { "" }
                ),
                "kernel-added" => format!("kernel-added {}", args["kernel"].as_str().unwrap()),
                "module-changed" => {
                    format!("module-changed {}/{}", args["module"].as_str().unwrap(), args["version"].as_str().unwrap())
                }
                other => other.to_string(),
            };
            let sources = i["sources"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
            (line, sources)
        })
        .collect()
}

fn lines(root: &Path) -> Vec<String> {
    pending(root).into_iter().map(|(l, _)| l).collect()
}

/// A fake root whose dpkg database knows dkms-trigger with `status` (e.g. "install ok installed"),
/// so that the real dpkg-query and dpkg-trigger answer about it.
fn fake_root(status: Option<&str>) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dpkg = t.path().join("var/lib/dpkg");
    for d in ["updates", "info", "triggers"] {
        fs::create_dir_all(dpkg.join(d)).unwrap();
    }
    fs::write(dpkg.join("triggers/Unincorp"), "").unwrap();
    let stanza = status
        .map(|s| format!("Package: dkms-trigger\nStatus: {s}\nVersion: 0.1.0\nArchitecture: all\nMaintainer: t <t@t.invalid>\nDescription: t\n\n"))
        .unwrap_or_default();
    fs::write(dpkg.join("status"), stanza).unwrap();
    t
}

fn activated(root: &Path) -> String {
    fs::read_to_string(root.join("var/lib/dpkg/triggers/Unincorp")).unwrap()
}

#[test]
fn headers_hook_inside_dpkg_records_force_from_deb_maint_params_and_activates_the_trigger() {
    let t = fake_root(Some("install ok installed"));
    let r = t.path();
    let env = [("DPKG_MAINTSCRIPT_PACKAGE", HEADERS), ("DEB_MAINT_PARAMS", "configure 6.1.76-1")];
    let out = dt_env(r, &["hook", "debian-headers-postinst", K], &env, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(text(&out), "", "silent when all is well (run-parts --report would name the hook)");
    assert_eq!(
        pending(r),
        vec![(format!("headers-changed {K} --force"), vec![format!("{HEADERS}:header_postinst.d")])]
    );
    assert_eq!(activated(r), "dkms-trigger -\n", "dpkg-trigger --no-await dkms-trigger");

    // A first install: configure with no old version; and dpkg-reconfigure.
    let t = fake_root(Some("install ok installed"));
    let env = [("DPKG_MAINTSCRIPT_PACKAGE", HEADERS), ("DEB_MAINT_PARAMS", "configure")];
    assert!(dt_env(t.path(), &["hook", "debian-headers-postinst", K], &env, "").status.success());
    assert_eq!(lines(t.path()), vec![format!("headers-changed {K}")]);
    let env = [("DPKG_MAINTSCRIPT_PACKAGE", HEADERS), ("DEBCONF_RECONFIGURE", "1")];
    assert!(dt_env(t.path(), &["hook", "debian-headers-postinst", K], &env, "").status.success());
    assert_eq!(lines(t.path()), vec![format!("headers-changed {K}"), format!("headers-changed {K} --force")]);
}

/// Debian 12's perl headers postinst passes nothing to its hooks: the tool finds `configure OLD`
/// on the command line of its ancestor running `.../info/linux-headers-K.postinst`, here a real
/// process tree: postinst (sh) -> run-parts -> hook -> exec dkms-trigger.
#[test]
fn headers_hook_reads_the_postinst_arguments_of_its_ancestors() {
    for (args, want) in
        [(vec!["configure", "6.1.76-1"], " --force"), (vec!["configure"], ""), (vec!["configure", ""], "")]
    {
        let t = fake_root(Some("install ok installed"));
        let r = t.path();
        let hooks = r.join("etc/kernel/header_postinst.d");
        fs::create_dir_all(&hooks).unwrap();
        write_script(
            &hooks.join("dkms-trigger"),
            &format!("#!/bin/sh\nexec {BIN} --root {} hook debian-headers-postinst \"$@\"\n", r.display()),
        );
        let postinst = r.join(format!("var/lib/dpkg/info/{HEADERS}.postinst"));
        write_script(
            &postinst,
            &format!("#!/bin/sh\nrun-parts --report --exit-on-error --arg={K} {}\n", hooks.display()),
        );
        let mut c = Command::new(&postinst);
        c.args(&args).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("DPKG_MAINTSCRIPT_PACKAGE", HEADERS);
        let out = run_with_stdin(&mut c, "");
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert_eq!(text(&out), "", "{args:?}");
        assert_eq!(lines(r), vec![format!("headers-changed {K}{want}")], "{args:?}");
    }
    // Another package's postinst above the hook says nothing about these headers.
    let t = fake_root(Some("install ok installed"));
    let mut c = Command::new("sh");
    c.args([
        "-c",
        &format!("{BIN} --root {} hook debian-headers-postinst {K}; true", t.path().display()),
        "/var/lib/dpkg/info/linux-headers-6.1.0-48-amd64.postinst",
        "configure",
        "1",
    ]);
    c.env_clear().env("PATH", "/usr/bin:/bin").env("DPKG_MAINTSCRIPT_PACKAGE", HEADERS);
    assert!(run_with_stdin(&mut c, "").status.success());
    assert_eq!(lines(t.path()), vec![format!("headers-changed {K}")]);
}

#[test]
fn kernel_hook_finalizes_at_once_outside_dpkg_or_when_dpkg_does_not_know_the_package() {
    // Outside dpkg: recorded, then finalized at once (the fake root has nothing to build, so the
    // intent is handled and the spool is empty again).
    for (status, env) in [
        (Some("install ok installed"), vec![]),
        (None, vec![("DPKG_MAINTSCRIPT_PACKAGE", "linux-image-6.1.0-47-amd64")]),
        (Some("deinstall ok config-files"), vec![("DPKG_MAINTSCRIPT_PACKAGE", "linux-image-6.1.0-47-amd64")]),
    ] {
        let t = fake_root(status);
        let out = dt_env(t.path(), &["hook", "debian-kernel-postinst", K, &format!("/boot/vmlinuz-{K}")], &env, "");
        assert_eq!(out.status.code(), Some(0), "{status:?}: {}", text(&out));
        assert_eq!(text(&out), "", "{status:?}: quiet");
        assert_eq!(lines(t.path()), Vec::<String>::new(), "{status:?}: finalized");
        assert_eq!(activated(t.path()), "", "{status:?}: no trigger");
        assert!(t.path().join("var/lib/dkms-trigger/finalize.lock").exists(), "{status:?}: the finalizer ran");
    }
    // Inside dpkg with the package installed: the trigger, and the intent waits for it.
    let t = fake_root(Some("install ok installed"));
    let env = [("DPKG_MAINTSCRIPT_PACKAGE", "linux-image-6.1.0-47-amd64"), ("DEB_MAINT_PARAMS", "configure")];
    assert!(dt_env(t.path(), &["hook", "debian-kernel-postinst", K], &env, "").status.success());
    assert_eq!(
        pending(t.path()),
        vec![(format!("kernel-added {K}"), vec!["linux-image-6.1.0-47-amd64:postinst.d".to_string()])]
    );
    assert_eq!(activated(t.path()), "dkms-trigger -\n");
}

#[test]
fn kernel_hooks_exit_status_policy() {
    let env = [("DPKG_MAINTSCRIPT_PACKAGE", HEADERS)];
    for hook in ["debian-kernel-postinst", "debian-headers-postinst", "debian-kernel-prerm"] {
        // No KVER, or one that cannot become a path: exit 0 after saying so; retrying cannot help.
        for args in [vec![], vec!["../../etc"], vec!["a b"]] {
            let t = fake_root(Some("install ok installed"));
            let mut full = vec!["hook", hook];
            full.extend(&args);
            let out = dt_env(t.path(), &full, &env, "");
            assert_eq!(out.status.code(), Some(0), "{hook} {args:?}: {}", text(&out));
            assert!(text(&out).contains("kernel version"), "{hook} {args:?}: {}", text(&out));
            assert!(!t.path().join("var/lib/dkms-trigger/spool.toml").exists(), "{hook} {args:?}: nothing recorded");
        }
    }
    for hook in ["debian-kernel-postinst", "debian-headers-postinst"] {
        // Nothing could be recorded (an unsafe state directory; not root): 1, so that dpkg leaves
        // the kernel package half-configured and runs the hook again.
        let t = fake_root(Some("install ok installed"));
        let elsewhere = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("var/lib")).unwrap();
        symlink(elsewhere.path(), t.path().join("var/lib/dkms-trigger")).unwrap();
        let out = dt_env(t.path(), &["hook", hook, K], &env, "");
        assert_eq!(out.status.code(), Some(1), "{hook}: {}", text(&out));
        assert!(text(&out).contains("could not record"), "{hook}: {}", text(&out));
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        assert_eq!(activated(t.path()), "", "{hook}: no trigger for nothing");

        let t = fake_root(Some("install ok installed"));
        let mut c = Command::new(BIN);
        c.arg("--root").arg(t.path()).args(["hook", hook, K]).env_clear().env("DPKG_MAINTSCRIPT_PACKAGE", HEADERS);
        c.uid(65534).gid(65534);
        let out = run_with_stdin(&mut c, "");
        assert_eq!(out.status.code(), Some(1), "{hook} as nobody: {}", text(&out));
        assert!(text(&out).contains("must be run as root"), "{}", text(&out));
    }
}

#[test]
fn prerm_hook_acts_on_removal_only() {
    let t = fake_root(Some("install ok installed"));
    let r = t.path();
    let rec = |args: &[&str]| assert!(dt_env(r, args, &[], "").status.success());
    rec(&["record", "kernel-added", K]);
    rec(&["record", "kernel-added", "6.1.0-48-amd64"]);
    for params in ["upgrade 6.1.76-2", "failed-upgrade 6.1.76-2"] {
        let out = dt_env(r, &["hook", "debian-kernel-prerm", K, "/boot/x"], &[("DEB_MAINT_PARAMS", params)], "");
        assert!(out.status.success() && text(&out).is_empty(), "{params}: {}", text(&out));
        assert_eq!(lines(r).len(), 2, "{params}: nothing dropped");
    }
    let out = dt_env(r, &["hook", "debian-kernel-prerm", K, "/boot/x"], &[("DEB_MAINT_PARAMS", "remove")], "");
    assert!(out.status.success() && text(&out).is_empty(), "{}", text(&out));
    assert_eq!(lines(r), vec!["kernel-added 6.1.0-48-amd64"], "the removed kernel's intents are dropped");
    // A removal that cannot be done is a warning, never a failure of the kernel's removal.
    fs::write(r.join("etc-config.toml"), "jobs = \"many\"\n").unwrap();
    let out = dt_env(
        r,
        &["--config", &r.join("etc-config.toml").to_string_lossy(), "hook", "debian-kernel-prerm", "6.1.0-48-amd64"],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("warning: removing the DKMS builds of 6.1.0-48-amd64 failed"), "{}", text(&out));
}

#[test]
fn rpm_scriptlets_tell_upgrades_from_installs_and_skip_their_own_transaction() {
    let t = fake_root(None);
    let r = t.path();
    fs::create_dir_all(r.join("usr/src/new-2.0")).unwrap();
    fs::write(r.join("usr/src/new-2.0/dkms.conf"), "PACKAGE_NAME=new\nPACKAGE_VERSION=2.0\n").unwrap();
    let state = r.join("var/lib/rpm-state/dkms-trigger");
    fs::create_dir_all(&state).unwrap();
    // dkms-trigger's own %pre marked another rpm process.
    fs::write(state.join("self"), "999\n").unwrap();
    let rpm = |scriptlet: &str, tx: &str, stdin: &str| {
        let out = dt_env(r, &["hook", "rpm", scriptlet, tx], &[], stdin);
        assert_eq!(out.status.code(), Some(0), "{scriptlet}: {}", text(&out));
        text(&out)
    };
    assert!(dt_env(r, &["record", "module-changed", "old/1.0"], &[], "").status.success());
    // The start of transaction 100: what it erases or replaces.
    let said = rpm(
        "transfiletriggerun",
        "100",
        "/usr/src/old-1.0/dkms.conf\n/usr/src/kernels/K1/Makefile\n/usr/src/kernels/K1/Makefile\n",
    );
    assert_eq!(said, "");
    assert_eq!(
        fs::read_to_string(state.join("replaced.100")).unwrap(),
        "/usr/src/kernels/K1/Makefile\n/usr/src/old-1.0/dkms.conf\n"
    );
    // A package reinstalls K1's headers (a replaced path: an upgrade, forced) and installs K2's.
    rpm(
        "filetriggerin",
        "100",
        "/usr/src/kernels/K1/Makefile\n/usr/src/kernels/K2/include\n/usr/src/kernels/K2/Makefile\n",
    );
    // Another package installs a new module source.
    rpm("filetriggerin", "100", "/usr/src/new-2.0/dkms.conf\n/usr/src/new-2.0/Makefile\n");
    assert_eq!(
        pending(r),
        vec![
            ("module-changed old/1.0".to_string(), vec![]),
            ("headers-changed K2".to_string(), vec!["rpm:filetriggerin".to_string()]),
            ("headers-changed K1 --force".to_string(), vec!["rpm:filetriggerin".to_string()]),
            ("module-changed new/2.0".to_string(), vec!["rpm:filetriggerin".to_string()]),
        ]
    );
    assert_eq!(
        fs::read_to_string(state.join("installed.100")).unwrap(),
        "/usr/src/kernels/K1/Makefile\n/usr/src/kernels/K2/Makefile\n/usr/src/kernels/K2/include\n/usr/src/new-2.0/dkms.conf\n"
    );
    // Erasing: old-1.0's source goes (its intent is dropped: nothing left to build), the paths
    // this transaction installed again do not.
    rpm(
        "filetriggerun",
        "100",
        "/usr/src/old-1.0/dkms.conf\n/usr/src/old-1.0/Makefile\n/usr/src/kernels/K1/Makefile\n",
    );
    assert_eq!(lines(r), vec!["headers-changed K2", "headers-changed K1 --force", "module-changed new/2.0"]);
    // The end of a transaction that only erased: its scratch files go.
    rpm("transfiletriggerpostun", "100", "");
    assert_eq!(fs::read_dir(&state).unwrap().count(), 1, "only `self` is left");

    // rpm installing dkms-trigger itself fires its triggers for every path of the database: skipped.
    fs::write(state.join("self"), "200\n").unwrap();
    rpm("filetriggerin", "200", "/usr/src/other-1/dkms.conf\n/usr/lib/modules/K2/modules.order\n");
    rpm("gcc-filetriggerin", "200", "/usr/libexec/gcc/x86_64-redhat-linux/14/cc1\n");
    assert_eq!(lines(r).len(), 3, "nothing recorded in the self transaction");
    rpm("gcc-filetriggerin", "201", "/usr/libexec/gcc/x86_64-redhat-linux/14/cc1\n");
    assert_eq!(lines(r).last().map(String::as_str), Some("toolchain-changed"));
    // A bad scriptlet name or transaction id is a usage error, as for any command.
    assert_eq!(dt_env(r, &["hook", "rpm", "posttrans", "1"], &[], "").status.code(), Some(2));
}

#[test]
fn rpm_transaction_end_forgets_and_finalizes_and_kernel_install_always_exits_0() {
    let t = fake_root(None);
    let r = t.path();
    let state = r.join("var/lib/rpm-state/dkms-trigger");
    fs::create_dir_all(&state).unwrap();
    for f in ["replaced.5", "installed.5", "replaced.77"] {
        fs::write(state.join(f), "/usr/src/x\n").unwrap();
    }
    assert!(dt_env(r, &["record", "kernel-added", K], &[], "").status.success());
    let out = dt_env(r, &["hook", "rpm", "transfiletriggerin", "5"], &[], "/usr/src/x\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(fs::read_dir(&state).unwrap().count(), 0);
    assert_eq!(lines(r), Vec::<String>::new(), "finalized");

    for args in [
        vec![],
        vec!["add"],
        vec!["add", "../x"],
        vec!["inspect", K],
        vec!["add", K, "/boot/efi/x", "/boot/vmlinuz"],
        vec!["remove", K],
    ] {
        let mut full = vec!["hook", "kernel-install"];
        full.extend(&args);
        let out = dt_env(r, &full, &[], "");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    assert_eq!(lines(r), Vec::<String>::new(), "add K recorded and finalized");
    let state_toml = fs::read_to_string(r.join("var/lib/dkms-trigger/state.toml")).unwrap_or_default();
    assert!(!state_toml.contains("../x"), "{state_toml}");
}

#[test]
fn alpm_hook_records_what_pacman_matched_and_always_exits_0() {
    let t = fake_root(None);
    let r = t.path();
    let alpm = |op: &str, stdin: &str| {
        let out = dt_env(r, &["hook", "alpm", op], &[], stdin);
        assert_eq!(out.status.code(), Some(0), "{op}: {}", text(&out));
        text(&out)
    };
    alpm("install", "usr/lib/modules/6.6.1-arch1-1/build/include/\nusr/src/zfs-2.2.0/dkms.conf\n");
    alpm("upgrade", "usr/lib/modules/6.6.2-arch1-1/build/include/\n");
    alpm("toolchain", "");
    assert_eq!(
        pending(r),
        vec![
            ("headers-changed 6.6.1-arch1-1".to_string(), vec!["pacman:install".to_string()]),
            ("module-changed zfs/2.2.0".to_string(), vec!["pacman:install".to_string()]),
            ("headers-changed 6.6.2-arch1-1 --force".to_string(), vec!["pacman:upgrade".to_string()]),
            ("toolchain-changed".to_string(), vec!["pacman:gcc".to_string()]),
        ]
    );
    assert!(alpm("frobnicate", "").contains("unknown operation"));
    assert!(alpm("install", "usr/src/bad name-1/dkms.conf\n").contains("ignoring"));
    alpm("remove", "usr/lib/modules/6.6.1-arch1-1/build/include/\n");
    assert_eq!(
        lines(r),
        vec!["module-changed zfs/2.2.0", "headers-changed 6.6.2-arch1-1 --force", "toolchain-changed"]
    );
    alpm("finalize", "");
    assert_eq!(lines(r), Vec::<String>::new());
}

// ------------------------------------------------------------------------------------------------
// The hook files, run where they are installed, inside a World.

/// Every hook file, as installed, with the arguments its caller gives it and what it reads.
fn hook_files() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "hooks/debian/postinst.d/dkms-trigger",
            "/etc/kernel/postinst.d/dkms-trigger",
            format!("{K} /boot/vmlinuz-{K}"),
        ),
        ("hooks/debian/header_postinst.d/dkms-trigger", "/etc/kernel/header_postinst.d/dkms-trigger", K.to_string()),
        ("hooks/debian/prerm.d/dkms-trigger", "/etc/kernel/prerm.d/dkms-trigger", format!("{K} /boot/vmlinuz-{K}")),
        (
            "hooks/rpm/45-dkms-trigger.install",
            "/usr/lib/kernel/install.d/45-dkms-trigger.install",
            format!("add {K} /boot/efi /boot/vmlinuz-{K}"),
        ),
        ("hooks/arch/scripts/dkms-trigger-alpm", "/usr/share/libalpm/scripts/dkms-trigger-alpm", "install".to_string()),
        (
            "hooks/arch/scripts/dkms-trigger-alpm",
            "/usr/share/libalpm/scripts/dkms-trigger-alpm",
            "finalize".to_string(),
        ),
    ]
}

/// A World where /usr/sbin and /usr/bin are overlays, so that the binary can be put at (or taken
/// from) the place the hooks look, and the hook files are installed where packages put them.
fn hook_world() -> World {
    let w = World::builder()
        .no_bin()
        .overlay("/usr/sbin")
        .overlay("/usr/bin")
        .overlay("/usr/share")
        .overlay("/usr/lib")
        .build();
    let mut install = String::new();
    for (file, dest, _) in hook_files() {
        install.push_str(&format!("install -D -m 0755 {} {dest}\n", repo().join(file).display()));
    }
    w.run_ok(&format!("{install}rm -f /usr/sbin/dkms-trigger /usr/bin/dkms-trigger /usr/local/sbin/dkms-trigger"));
    w
}

#[test]
fn every_hook_file_exits_0_and_does_nothing_without_the_binary() {
    let w = hook_world();
    for (_, dest, args) in hook_files() {
        for env in ["", "DPKG_MAINTSCRIPT_PACKAGE=linux-headers-6.1.0-47-amd64 DEB_MAINT_PARAMS='configure 1'"] {
            // With input, as pacman gives the NeedsTargets hooks.
            let out = w.run(&format!(
                "command -v dkms-trigger && exit 99
                 printf 'usr/src/x-1/dkms.conf\\n' >\"$DKMS_WORLD/targets\"
                 env {env} {dest} {args} <\"$DKMS_WORLD/targets\""
            ));
            assert_eq!(out.status.code(), Some(0), "{dest} {args}: {}", show(&out));
            assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{dest} {args}: {}", show(&out));
        }
    }
    let left = w.run_ok("find /var/lib/dkms-trigger /var/log/dkms-trigger -mindepth 1; cat /var/lib/dpkg/triggers/Unincorp 2>/dev/null || true");
    assert!(!left.contains("dkms-trigger"), "nothing recorded, no trigger activated: {left}");
}

#[test]
fn debian_hook_files_hand_their_arguments_and_environment_to_the_binary() {
    let w = hook_world();
    // dpkg in the World knows dkms-trigger as installed, so the hooks activate its trigger.
    w.run_ok(&format!(
        "install -m 0755 {BIN} /usr/sbin/dkms-trigger
         printf 'Package: dkms-trigger\\nStatus: install ok installed\\nVersion: 0.1.0\\nArchitecture: all\\nMaintainer: t <t@t.invalid>\\nDescription: t\\n\\n' >>/var/lib/dpkg/status"
    ));
    let h = "DPKG_MAINTSCRIPT_PACKAGE=linux-headers-6.1.0-47-amd64";
    let out = w.run(&format!(
        "env {h} DEB_MAINT_PARAMS='configure 6.1.76-1' /etc/kernel/header_postinst.d/dkms-trigger {K}
         env DPKG_MAINTSCRIPT_PACKAGE=linux-image-{K} DEB_MAINT_PARAMS='configure' /etc/kernel/postinst.d/dkms-trigger {K} /boot/vmlinuz-{K}
         env DEB_MAINT_PARAMS=upgrade /etc/kernel/prerm.d/dkms-trigger 6.1.0-48-amd64
         dkms-trigger spool; grep -c '^dkms-trigger -$' /var/lib/dpkg/triggers/Unincorp"
    ));
    assert!(out.status.success(), "{}", show(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("headers-changed {K} --force")), "{said}");
    assert!(said.contains(&format!("kernel-added {K}")), "{said}");
    assert!(out.stderr.is_empty(), "{}", show(&out));
    // The prerm on removal drops the kernel's intents; outside dpkg a hook finalizes at once.
    let out = w.run(&format!(
        "env DEB_MAINT_PARAMS=remove /etc/kernel/prerm.d/dkms-trigger {K}
         dkms-trigger spool --json | grep -c '\"kind\"' || true
         /etc/kernel/postinst.d/dkms-trigger 6.1.0-49-amd64; dkms-trigger spool --json | grep -c '\"kind\"' || true"
    ));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n0\n", "{}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));
}

#[test]
fn kernel_install_and_alpm_files_hand_their_arguments_to_the_binary() {
    let w = hook_world();
    let out = w.run(&format!(
        "install -m 0755 {BIN} /usr/sbin/dkms-trigger
         printf 'usr/lib/modules/{K}/build/include/\\n' >\"$DKMS_WORLD/targets\"
         /usr/share/libalpm/scripts/dkms-trigger-alpm upgrade <\"$DKMS_WORLD/targets\"
         dkms-trigger record kernel-added 6.1.0-48-amd64
         dkms-trigger spool
         /usr/lib/kernel/install.d/45-dkms-trigger.install remove 6.1.0-48-amd64 /boot/efi/x
         dkms-trigger spool --json | grep -c '\"kind\"' || true"
    ));
    assert!(out.status.success(), "{}", show(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("headers-changed {K} --force")), "pacman's upgrade of headers: {said}");
    assert!(said.contains("kernel-added 6.1.0-48-amd64"), "{said}");
    assert!(said.ends_with("\n1\n"), "kernel-install remove dropped that kernel's intents, and only those: {said}");
    assert!(out.stderr.is_empty(), "{}", show(&out));
}
