//! The hooks' deciders, table by table, and the Debian trigger handler's scan on fake roots.

use super::alpm::Op;
use super::debian::{self, DebEnv, Handoff, KernelFacts};
use super::rpm;
use super::source_text;
use crate::intent::Intent;
use crate::inventory;
use crate::root::Root;
use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn env(package: Option<&str>, maint_params: Option<&str>, reconfigure: bool) -> DebEnv {
    DebEnv { package: package.map(str::to_string), maint_params: maint_params.map(str::to_string), reconfigure }
}

const HEADERS: &str = "linux-headers-6.1.0-47-amd64";

#[test]
fn headers_force_comes_from_reconfigure_deb_maint_params_or_the_postinst_ancestor() {
    // (DPKG_MAINTSCRIPT_PACKAGE, DEB_MAINT_PARAMS, DEBCONF_RECONFIGURE, what /proc says, force, /proc read)
    type Row = (Option<&'static str>, Option<&'static str>, bool, Option<&'static str>, bool, bool);
    let rows: &[Row] = &[
        // S4: dpkg-reconfigure linux-headers-K.
        (Some(HEADERS), None, true, Some("configure 6.1.76-1"), true, false),
        (Some(HEADERS), Some(""), true, None, true, false),
        (None, None, true, None, true, false),
        // Debian 12: the perl postinst passes nothing; its command line says configure OLD.
        (Some(HEADERS), None, false, Some("configure 6.1.76-1"), true, true),
        // A first install: configure with no (or an empty) old version.
        (Some(HEADERS), None, false, Some("configure"), false, true),
        (Some(HEADERS), None, false, Some("configure "), false, true),
        (Some(HEADERS), None, false, None, false, true),
        (Some(HEADERS), None, false, Some("abort-upgrade 6.1.76-1"), false, true),
        // 6.12 and later: linux-run-hooks passes the arguments; /proc is not read then, even empty.
        (Some(HEADERS), Some("configure 6.12.9-1"), false, Some("configure"), true, false),
        (Some(HEADERS), Some("configure"), false, Some("configure 1"), false, false),
        (Some(HEADERS), Some(""), false, Some("configure 1"), false, false),
        (None, Some("configure 1"), false, None, true, false),
        // Outside dpkg (run-parts by hand): no arguments to find.
        (None, None, false, Some("configure 1"), false, false),
    ];
    for (i, (package, params, reconfigure, proc_says, want, reads_proc)) in rows.iter().enumerate() {
        let e = env(*package, *params, *reconfigure);
        let read = std::cell::Cell::new(false);
        let got = debian::headers_force(&e, |pkg| {
            assert_eq!(pkg, HEADERS);
            read.set(true);
            proc_says.map(|s| {
                // "configure " as /proc gives it for an empty old version: an empty last argument.
                let mut v = words(s);
                if s.ends_with(' ') {
                    v.push(String::new());
                }
                v
            })
        });
        assert_eq!(got, *want, "row {i}: {:?}", rows[i]);
        assert_eq!(read.get(), *reads_proc, "row {i}: /proc read");
    }
}

#[test]
fn prerm_acts_on_removal_only() {
    for (params, want) in [
        (None, true),
        (Some(""), true),
        (Some("remove"), true),
        (Some("remove 6.1.76-1"), true),
        (Some("upgrade 6.1.76-2"), false),
        (Some("failed-upgrade 6.1.76-2"), false),
        (Some("deconfigure in-favour x"), false),
        (Some("removed"), false),
    ] {
        assert_eq!(debian::prerm_applies(&env(Some("linux-image-x"), params, false)), want, "{params:?}");
    }
}

#[test]
fn hand_off_is_the_trigger_only_inside_dpkg_with_the_interest_registered() {
    let inside = env(Some("linux-image-6.1.0-47-amd64"), None, false);
    let outside = env(None, None, false);
    for (status, want) in [
        (Some("ii "), Handoff::Trigger),
        (Some("iU "), Handoff::Trigger),
        (Some("iF "), Handoff::Trigger),
        (Some("iW "), Handoff::Trigger),
        (Some("it "), Handoff::Trigger),
        // Removed with conffiles left, half-installed, not installed: nobody answers the trigger.
        (Some("rc "), Handoff::FinalizeNow),
        (Some("iH "), Handoff::FinalizeNow),
        (Some("un "), Handoff::FinalizeNow),
        (Some(""), Handoff::FinalizeNow),
        (None, Handoff::FinalizeNow),
    ] {
        assert_eq!(debian::handoff(&inside, status), want, "{status:?}");
        assert_eq!(debian::handoff(&outside, status), Handoff::FinalizeNow, "{status:?} outside dpkg");
    }
}

#[test]
fn file_triggers_are_told_from_explicit_ones() {
    for (names, file, source) in [
        ("/usr/src", true, "dpkg-trigger:/usr/src"),
        ("dkms-trigger", false, "dpkg-trigger:dkms-trigger"),
        ("dkms-trigger /usr/lib/gcc /usr/src", true, "dpkg-trigger:dkms-trigger,/usr/lib/gcc,/usr/src"),
        ("", false, "dpkg-trigger:"),
    ] {
        assert_eq!(debian::file_triggered(names), file, "{names}");
        assert_eq!(debian::trigger_source(names), source);
    }
    assert_eq!(source_text("a\nb"), "a?b");
    assert_eq!(source_text(&"x".repeat(300)).len(), 256);
}

/// Writes `rel` under `root` with `text`, creating its parents.
fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn mkdir(root: &Path, rel: &str) {
    std::fs::create_dir_all(root.join(rel)).unwrap();
}

/// hello/1.0 registered (source link absolute, as dkms writes it) and built for `kernels`.
fn registered_hello(r: &Path, kernels: &[&str]) {
    put(r, "usr/src/hello-1.0/dkms.conf", "PACKAGE_NAME=hello\nPACKAGE_VERSION=1.0\n");
    mkdir(r, "var/lib/dkms/hello/1.0");
    symlink("/usr/src/hello-1.0", r.join("var/lib/dkms/hello/1.0/source")).unwrap();
    for k in kernels {
        put(r, &format!("var/lib/dkms/hello/1.0/{k}/x86_64/module/hello.ko"), "");
    }
}

#[test]
fn new_sources_are_the_usr_src_trees_dkms_does_not_know() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    registered_hello(r, &["6.1.0-47-amd64"]);
    put(r, "usr/src/newmod-2.0/dkms.conf", "PACKAGE_NAME=newmod\nPACKAGE_VERSION=2.0\n");
    put(r, "usr/src/nvidia-fs-2.17.5/dkms.conf", "PACKAGE_NAME=\"nvidia-fs\"\nPACKAGE_VERSION=2.17.5\n");
    mkdir(r, "usr/src/linux-headers-6.1.0-47-amd64/include"); // no dkms.conf: not a module
    put(r, "usr/src/README", "");
    // Registered through a link to another spelling of the same directory: known.
    put(r, "opt/pre-3/dkms.conf", "PACKAGE_NAME=pre\nPACKAGE_VERSION=3\n");
    symlink("/opt/pre-3", r.join("usr/src/pre-3")).unwrap();
    mkdir(r, "var/lib/dkms/pre/3");
    symlink("/usr/src/pre-3", r.join("var/lib/dkms/pre/3/source")).unwrap();
    let root = Root::open(r).unwrap();
    let modules = inventory::modules_on_disk(&root).unwrap();
    assert_eq!(
        debian::new_sources(&modules),
        vec![
            Intent::ModuleChanged { module: "newmod".into(), version: "2.0".into() },
            Intent::ModuleChanged { module: "nvidia-fs".into(), version: "2.17.5".into() },
        ]
    );
    // Nothing new once everything is registered; a hand-added source with a broken link is not new either.
    let t2 = tempfile::tempdir().unwrap();
    registered_hello(t2.path(), &[]);
    assert_eq!(debian::new_sources(&inventory::modules_on_disk(&Root::open(t2.path()).unwrap()).unwrap()), vec![]);
}

#[test]
fn gone_kernels_have_builds_but_neither_headers_nor_an_image() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let ks =
        ["k1-gone", "k2-headers", "k3-image", "k4-builtin", "k5-nodir", "k6-dangling", "k7-kerneltree", "k8-usrlib"];
    registered_hello(r, &ks);
    // k1: headers purged, no image: only what dkms installed is left.
    mkdir(r, "lib/modules/k1-gone/updates/dkms");
    // k2: headers present (the build link resolves inside the root).
    mkdir(r, "usr/src/linux-headers-k2-headers");
    mkdir(r, "lib/modules/k2-headers");
    symlink("/usr/src/linux-headers-k2-headers", r.join("lib/modules/k2-headers/build")).unwrap();
    // k3: the image stays.
    mkdir(r, "lib/modules/k3-image");
    put(r, "boot/vmlinuz-k3-image", "");
    // k4, k7: the image package's files stay.
    put(r, "lib/modules/k4-builtin/modules.builtin", "");
    mkdir(r, "lib/modules/k7-kerneltree/kernel/fs");
    // k5: no modules directory at all: left alone.
    // k6: the build link dangles: its headers are gone.
    mkdir(r, "lib/modules/k6-dangling");
    symlink("/usr/src/linux-headers-k6-dangling", r.join("lib/modules/k6-dangling/build")).unwrap();
    // k8: split /usr, the directory in usr/lib/modules only.
    mkdir(r, "usr/lib/modules/k8-usrlib/updates");
    // A kernel without builds is never looked at.
    mkdir(r, "lib/modules/k9-nobuilds");
    let root = Root::open(r).unwrap();
    let modules = inventory::modules_on_disk(&root).unwrap();
    let with_builds = debian::kernels_with_builds(&modules);
    assert_eq!(with_builds, ks.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>());
    let gone: Vec<String> = with_builds
        .into_iter()
        .map(|k| debian::kernel_facts(&root, k))
        .filter(debian::is_gone)
        .map(|f| f.kernel)
        .collect();
    assert_eq!(gone, vec!["k1-gone", "k6-dangling", "k8-usrlib"]);
    assert_eq!(
        debian::kernel_facts(&root, "k2-headers".into()),
        KernelFacts { kernel: "k2-headers".into(), modules_dir: true, headers: true, image: false, image_files: false }
    );
}

#[test]
fn is_gone_table() {
    let f = |modules_dir, headers, image, image_files| KernelFacts {
        kernel: "k".into(),
        modules_dir,
        headers,
        image,
        image_files,
    };
    assert!(debian::is_gone(&f(true, false, false, false)));
    for kept in [
        f(false, false, false, false),
        f(true, true, false, false),
        f(true, false, true, false),
        f(true, false, false, true),
    ] {
        assert!(!debian::is_gone(&kept), "{kept:?}");
    }
}

#[test]
fn rpm_anchors_are_what_makes_a_module_kernel_or_headers_go() {
    let installed: BTreeSet<&str> = ["/usr/src/pmalpha-1.1/dkms.conf"].into_iter().collect();
    let input = "/usr/src/pmalpha-1.0/dkms.conf
/usr/src/pmalpha-1.0/Makefile
/usr/src/pmalpha-1.0
/usr/src/pmalpha-1.1/dkms.conf
/usr/lib/modules/5.14.0-1.el9.x86_64/modules.order
/lib/modules/5.14.0-1.el9.x86_64/vmlinuz
/usr/lib/modules/5.14.0-1.el9.x86_64/modules.builtin
/usr/lib/modules/5.14.0-1.el9.x86_64/kernel/fs/x.ko
/usr/lib/modules/5.14.0-1.el9.x86_64/build
/usr/lib/modules/5.14.0-1.el9.x86_64/build/include
/usr/lib/modules/5.14.0-1.el9.x86_64/build/include/linux/x.h
/usr/src/kernels/5.14.0-1.el9.x86_64/include
/usr/src/kernels/5.14.0-1.el9.x86_64/Makefile
/usr/src/kernels/5.14.0-1.el9.x86_64
/usr/src/kernels/5.14.0-1.el9.x86_64/scripts/Makefile
";
    assert_eq!(
        rpm::going(input, &installed),
        vec![
            "/usr/src/pmalpha-1.0/dkms.conf",
            "/usr/lib/modules/5.14.0-1.el9.x86_64/modules.order",
            "/lib/modules/5.14.0-1.el9.x86_64/vmlinuz",
            "/usr/lib/modules/5.14.0-1.el9.x86_64/modules.builtin",
            "/usr/lib/modules/5.14.0-1.el9.x86_64/build",
            "/usr/lib/modules/5.14.0-1.el9.x86_64/build/include",
            "/usr/src/kernels/5.14.0-1.el9.x86_64/include",
            "/usr/src/kernels/5.14.0-1.el9.x86_64/Makefile",
        ]
    );
}

#[test]
fn rpm_paths_the_transaction_had_before_are_upgrades() {
    let paths: BTreeSet<&str> =
        ["/usr/src/kernels/K/Makefile", "/usr/src/a-1/dkms.conf", "/usr/src/kernels/K/include"].into();
    let replaced: BTreeSet<&str> =
        ["/usr/src/kernels/K/Makefile", "/usr/src/kernels/K/include", "/usr/src/old-1/dkms.conf"].into();
    let (upgraded, installed) = rpm::split_replaced(&paths, &replaced);
    assert_eq!(upgraded, vec!["/usr/src/kernels/K/Makefile", "/usr/src/kernels/K/include"]);
    assert_eq!(installed, vec!["/usr/src/a-1/dkms.conf"]);
    let (upgraded, installed) = rpm::split_replaced(&paths, &BTreeSet::new());
    assert!(upgraded.is_empty() && installed.len() == 3, "a fresh install");
}

#[test]
fn alpm_operations() {
    for (op, want, reads) in [
        ("install", Some(Op::Install), true),
        ("upgrade", Some(Op::Upgrade), true),
        ("remove", Some(Op::Remove), true),
        ("toolchain", Some(Op::Toolchain), false),
        ("finalize", Some(Op::Finalize), false),
        ("Install", None, false),
        ("", None, false),
    ] {
        assert_eq!(Op::parse(op), want, "{op}");
        assert_eq!(want.is_some_and(Op::reads_targets), reads, "{op}");
    }
}

#[test]
fn an_unusable_source_is_an_error_once_per_state_of_it_then_a_warning() {
    assert!(crate::root::is_root_user(), "module_postinst records as root: run the unit tests as root (CI does)");
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    put(r, "usr/src/sloppy-1.0/dkms.conf", "PACKAGE_NAME=sloppy\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]=sloppy\n");
    put(r, "usr/src/sloppy-1.0/sloppy.c", "int x;\n");
    let writable = |rel: &str| {
        std::fs::set_permissions(r.join(rel), std::fs::Permissions::from_mode(0o666)).unwrap();
    };
    writable("usr/src/sloppy-1.0/sloppy.c");
    let root = Root::open(r).unwrap();
    let load = || Ok(crate::config::Config::default());
    let e = env(Some("sloppy-dkms"), None, false);
    let postinst = || debian::module_postinst(&root, &e, &words("sloppy 1.0"), &load).unwrap();
    let marker = r.join("var/lib/dkms-trigger/unusable/sloppy-1.0");
    // The package that brings it fails; the same source again (a later configure) is a warning.
    assert_eq!(postinst(), crate::exit::Code::Failure);
    assert!(marker.is_file(), "the reported state is remembered");
    assert_eq!(postinst(), crate::exit::Code::Ok);
    assert_eq!(postinst(), crate::exit::Code::Ok);
    // A changed source (still unusable) is a new state: reported again.
    put(r, "usr/src/sloppy-1.0/extra.h", "#define Y 2\n");
    writable("usr/src/sloppy-1.0/extra.h");
    assert_eq!(postinst(), crate::exit::Code::Failure);
    assert_eq!(postinst(), crate::exit::Code::Ok);
    // Nothing was recorded for it: the finalizer would only fail on it again.
    let (spool, problem) = crate::spool::read(&root).unwrap();
    assert!(problem.is_none() && spool.entries.is_empty(), "nothing recorded");
    // Removing the module forgets the report.
    debian::forget_unusable(&root, "sloppy", "1.0");
    assert!(!marker.exists());
    // Arguments that cannot be names, or a package with no source under /usr/src: nothing to check.
    let odd = |args: &str| debian::module_postinst(&root, &e, &words(args), &load).unwrap();
    assert_eq!(odd("../x 1.0"), crate::exit::Code::Ok);
    assert_eq!(odd("binonly 1.0"), crate::exit::Code::Ok);
}

#[test]
fn dpkg_query_search_output_is_read_per_path() {
    let text = "diversion by dkms-trigger from: /usr/lib/dkms/common.postinst\n\
        diversion by dkms-trigger to: /usr/lib/dkms/common.postinst.dkms\n\
        foo-dkms: /usr/src/foo-1.0\n\
        bar-dkms:amd64, baz-dkms: /usr/src/bar-2.0\n";
    let got = debian::parse_search(text);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got["/usr/src/foo-1.0"], ["foo-dkms"]);
    assert_eq!(got["/usr/src/bar-2.0"], ["bar-dkms:amd64", "baz-dkms"]);
}

#[test]
fn an_initramfs_hook_or_plugin_after_ours_is_found() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let root = Root::open(t.path()).unwrap();
    let exe = |rel: &str| {
        put(t.path(), rel, "#!/bin/sh\n");
        std::fs::set_permissions(t.path().join(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    // Debian: run-parts order in /etc/kernel/postinst.d; only executables run.
    assert_eq!(debian::initramfs_hook_after_ours(&root), None);
    put(t.path(), "etc/kernel/postinst.d/initramfs-tools", "not executable");
    assert_eq!(debian::initramfs_hook_after_ours(&root), None, "run-parts skips it");
    exe("etc/kernel/postinst.d/initramfs-tools");
    exe("etc/kernel/postinst.d/zz-update-grub");
    assert_eq!(debian::initramfs_hook_after_ours(&root), Some("initramfs-tools"));
    // kernel-install: any dracut plugin after 45-dkms-trigger.install, /etc masking /usr/lib.
    assert!(!rpm::initramfs_plugin_after_ours(&root));
    exe("usr/lib/kernel/install.d/40-dracut-early.install");
    assert!(!rpm::initramfs_plugin_after_ours(&root), "before ours: the image predates the modules");
    exe("usr/lib/kernel/install.d/50-dracut.install");
    assert!(rpm::initramfs_plugin_after_ours(&root));
    mkdir(t.path(), "etc/kernel/install.d");
    symlink("/dev/null", t.path().join("etc/kernel/install.d/50-dracut.install")).unwrap();
    assert!(!rpm::initramfs_plugin_after_ours(&root), "masked in /etc");
}
