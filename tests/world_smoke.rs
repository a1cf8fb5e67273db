//! The test World itself, with the real dkms: `hello` added, built and installed for both header
//! kernels inside a World, while the host's dkms tree, sources and modules stay untouched. Needs
//! root and tests/setup/install-deps.sh.
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{parse_status, test_kernels, tree_listing, vermagic, BuildRecord, Module, State, World};
use std::path::Path;

#[test]
fn hello_for_both_kernels_leaves_the_host_alone() {
    let host_dirs = ["/var/lib/dkms", "/usr/src", "/lib/modules", "/etc/dkms", "/boot"];
    let before: Vec<Vec<String>> = host_dirs.iter().map(|d| tree_listing(Path::new(d))).collect();

    let pair = test_kernels();
    let world = World::new();
    let hello = Module::hello();
    hello.write_to(&world);

    world.run_ok("dkms add -m hello -v 1.0");
    for k in &pair {
        world.run_ok(&format!("dkms build -m hello -v 1.0 -k {k}"));
        world.run_ok(&format!("dkms install -m hello -v 1.0 -k {k} --no-depmod && depmod -a {k}"));
    }

    for k in &pair {
        let ko = world.installed_ko("hello", k).unwrap_or_else(|| panic!("hello.ko installed for {k}"));
        assert!(ko.ends_with(format!("updates/dkms/{}", ko.file_name().unwrap().to_string_lossy())));
        let vm = vermagic(&ko);
        assert!(vm.starts_with(&format!("{k} ")), "vermagic of {} is {vm:?}, expected {k} first", ko.display());
        // depmod ran inside the world: its index landed in the upper dir.
        let dep = std::fs::read_to_string(world.upper(format!("/lib/modules/{k}/modules.dep"))).unwrap();
        assert!(dep.contains("updates/dkms/hello.ko"), "modules.dep of {k}: {dep}");
    }
    let status = world.dkms_status();
    for k in &pair {
        assert!(
            status.iter().any(|s| s.module == "hello" && s.kernel.as_deref() == Some(k) && s.state == State::Installed),
            "dkms status: {status:?}"
        );
    }
    // The build recorder saw exactly one build per kernel.
    let builds = world.builds();
    for k in &pair {
        assert_eq!(common::count_builds(&builds, "hello", k), 1, "{builds:?}");
    }
    assert_eq!(common::built_make_logs(&world.upper("/var/lib/dkms")).len(), 2);

    drop(world);
    let after: Vec<Vec<String>> = host_dirs.iter().map(|d| tree_listing(Path::new(d))).collect();
    for (i, d) in host_dirs.iter().enumerate() {
        assert!(before[i] == after[i], "the host's {d} changed");
    }
}

#[test]
fn world_is_isolated_and_persistent() {
    let world = World::new();
    let marker = format!("world-marker-{}", std::process::id());
    world.run_ok(&format!(
        "echo inside > /usr/src/{marker}; mkdir -p /etc/dkms-trigger /var/lib/dkms-trigger; \
         echo x > /etc/dkms/{marker}; echo y > /var/lib/dkms/{marker}; echo z > /var/lib/dkms-trigger/{marker}"
    ));
    // Written inside: visible in the upper/fresh dirs, absent on the host.
    for p in ["/usr/src", "/etc/dkms", "/var/lib/dkms", "/var/lib/dkms-trigger"] {
        let inside = Path::new(p).join(&marker);
        assert!(world.upper(&inside).is_file(), "{} in the upper dir", inside.display());
        assert!(!inside.exists(), "{} leaked to the host", inside.display());
    }
    assert_eq!(world.read(format!("/usr/src/{marker}")).as_deref(), Some("inside\n"));
    // Host files below an overlay are visible; a later run still sees the first run's files.
    let out = world.run_ok(&format!("cat /usr/src/{marker}; test -f /etc/dkms/framework.conf && echo conf"));
    assert_eq!(out, "inside\nconf\n");
    // Outside the world's mounts the root filesystem is read-only; /tmp stays usable. Checked on the
    // mount first (so a writable root is caught before anything is written to the host), then by a
    // write that must fail for exactly that reason.
    let mnt = world.run_ok("findmnt -n -o TARGET,OPTIONS --target /opt");
    let (target, opts) = mnt.trim().split_once(char::is_whitespace).unwrap_or((mnt.trim(), ""));
    assert_eq!(target, "/", "/opt must lie on the root filesystem inside the world: {mnt}");
    assert!(opts.trim().split(',').any(|o| o == "ro"), "the root filesystem must be read-only inside the world: {mnt}");
    let out = world.run(&format!("LC_ALL=C touch /opt/{marker}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Read-only file system"),
        "writing /opt must fail as read-only: {err}"
    );
    assert!(!Path::new("/opt").join(&marker).exists());
    world.run_ok("t=$(mktemp) && rm $t");
    // The package's binary is on PATH; the merged-/usr modules path maps to one upper dir.
    world.run_ok("command -v dkms-trigger >/dev/null && test \"$DKMS_TRIGGER\" = /usr/local/sbin/dkms-trigger");
    assert_eq!(world.upper("/lib/modules/x"), world.upper("/usr/lib/modules/x"));
    // A process left behind dies with the namespace (PID namespace).
    let nap = format!("{}.{}", 3000 + std::process::id() % 1000, 7);
    world.run_ok(&format!("sleep {nap} & disown"));
    let left = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).map(|c| c == format!("sleep\0{nap}\0").as_bytes()).unwrap_or(false)
    });
    assert!(!left, "a background process outlived its world run");
}

#[test]
fn fake_kernels_and_generated_modules() {
    let world = World::new();
    world.add_kernel_image("6.1.0-99-amd64");
    world.add_kernel_without_headers("6.1.0-99-amd64");
    world.run_ok("test -f /boot/vmlinuz-6.1.0-99-amd64 && test -d /lib/modules/6.1.0-99-amd64 && test ! -e /lib/modules/6.1.0-99-amd64/build");
    assert!(!Path::new("/boot/vmlinuz-6.1.0-99-amd64").exists());

    let m =
        Module::new("dep-user").version("2.0").build_depends("base").only_for_kernel("6.1.0-56-amd64").autoinstall("");
    let conf = m.dkms_conf();
    assert!(conf.contains("BUILD_DEPENDS[0]=base\n"), "{conf}");
    assert!(conf.contains("BUILD_EXCLUSIVE_KERNEL='^6\\.1\\.0\\-56\\-amd64$'\n"), "{conf}");
    assert!(conf.contains("AUTOINSTALL=''\n"), "{conf}");
    assert!(m.c_source().contains("dep_user_init"));
    m.write_to(&world);
    // bash reads the regex back unchanged.
    let out = world.run_ok(". /usr/src/dep-user-2.0/dkms.conf; printf '%s|%s|%s' \"$BUILD_EXCLUSIVE_KERNEL\" \"$AUTOINSTALL\" \"$PACKAGE_NAME\"");
    assert_eq!(out, "^6\\.1\\.0\\-56\\-amd64$||dep-user");
    let out = world.run_ok(
        "[[ 6.1.0-56-amd64 =~ $(. /usr/src/dep-user-2.0/dkms.conf; echo \"$BUILD_EXCLUSIVE_KERNEL\") ]] && echo match",
    );
    assert_eq!(out, "match\n");
}

#[test]
fn status_parser_reads_both_dkms_wordings() {
    let text = "\
hello/1.0: added
hello/1.0, 6.1.0-55-amd64, x86_64: built
hello/1.0, 6.1.0-56-amd64, x86_64: installed
hello/1.0, 6.1.0-56-amd64, x86_64: installed (original_module exists) (WARNING! Diff between built and installed module!)
zfs, 2.1, 6.1.0-57-amd64, x86_64: installed-weak from 6.1.0-56-amd64
gone/2: broken
Error! Could not locate dkms.conf file.
";
    let s = parse_status(text);
    assert_eq!(s.len(), 6);
    assert_eq!(s[0].state, State::Added);
    assert_eq!(s[1].kernel.as_deref(), Some("6.1.0-55-amd64"));
    assert_eq!(s[2].arch.as_deref(), Some("x86_64"));
    assert_eq!(s[3].notes, ["original_module exists", "WARNING! Diff between built and installed module!"]);
    assert_eq!(s[4].state, State::InstalledWeak { from: "6.1.0-56-amd64".into() });
    assert_eq!(s[5].state, State::Broken);
}

#[test]
fn build_records_pair_starts_and_ends() {
    let r = BuildRecord::parse_log(
        "start a 1 k1 10.0\nstart b 1 k1 11.0\nend a 1 k1 12.0\nend b 1 k1 13.0\nstart a 1 k2 20\n",
    );
    assert_eq!(r.len(), 3);
    assert!(r[0].overlaps(&r[1]));
    assert_eq!(r[2].end, None);
    assert_eq!(common::count_builds(&r, "a", "k1"), 1);
}
