//! `finalize` with the real dkms and real headers, in a throwaway World (tests/common): the
//! scenarios S1-S5 end to end, parallel builds, SIGKILL, timeouts, hooks recording during a run and
//! concurrent finalizers. Needs root and tests/setup/install-deps.sh (two header kernels).
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{count_builds, test_kernels, vermagic, Module, World};
use std::process::Output;

/// The two test kernels (oldest first).
fn two_kernels() -> (String, String) {
    let [k1, k2] = test_kernels();
    (k1, k2)
}

fn out(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn status_json(w: &World) -> serde_json::Value {
    serde_json::from_str(&w.run_ok("dkms-trigger status --json")).expect("status --json")
}

/// The status cell word of `module` on `kernel`.
fn cell(w: &World, module: &str, kernel: &str) -> String {
    let s = status_json(w);
    s["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module"] == module)
        .and_then(|m| m["pairs"].as_array().unwrap().iter().find(|p| p["kernel"] == kernel))
        .map(|p| p["cell"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no status for {module} on {kernel}: {s:#}"))
}

fn spool_len(w: &World) -> usize {
    let v: serde_json::Value = serde_json::from_str(&w.run_ok("dkms-trigger spool --json")).unwrap();
    v["intents"].as_array().unwrap().len()
}

fn installed_for(w: &World, module: &str, k: &str) -> bool {
    w.installed_ko(module, k).is_some()
}

/// Shell function for world scripts: `wait_started M` returns once a build of module M has started
/// (the build recorder's `start` line), printing `build-started M`; after 120 s (a loaded 2-core
/// machine) it prints `no build of M started` and fails, which ends the `set -e` script.
const WAIT_STARTED: &str = r#"
wait_started() {
    for _ in $(seq 1200); do
        if grep -q "^start $1 " /var/log/dkms-world/builds.log 2>/dev/null; then echo "build-started $1"; return 0; fi
        sleep 0.1
    done
    echo "no build of $1 started"
    return 1
}
"#;

/// The value of a `key=value` line a world script printed.
fn printed<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn s1_dependent_recorded_first_is_built_after_its_dependency_once_per_kernel() {
    let (k1, k2) = two_kernels();
    let w = World::new();
    Module::new("nvbase").write_to(&w);
    Module::new("nvdep").build_depends("nvbase").write_to(&w);
    // The dependent's package is recorded before its dependency's, as in the apt run of the seed.
    let o = w.run(&format!(
        "dkms-trigger record --source dpkg:nvdep module-changed nvdep/1.0
         dkms-trigger record --source dpkg:linux-headers headers-changed {k2}
         dkms-trigger record --source dpkg:nvbase module-changed nvbase/1.0
         dkms-trigger finalize"
    ));
    let (so, se) = out(&o);
    assert!(o.status.success(), "finalize: {so}{se}");
    assert!(!se.contains("warning") && !se.contains("error"), "{se}");
    let builds = w.builds();
    for k in [&k1, &k2] {
        for m in ["nvbase", "nvdep"] {
            assert!(installed_for(&w, m, k), "{m} installed for {k}\n{so}");
            assert_eq!(count_builds(&builds, m, k), 1, "{m} built once for {k}: {builds:?}");
        }
        let base = builds.iter().find(|b| b.module == "nvbase" && &b.kernel == k).unwrap();
        let dep = builds.iter().find(|b| b.module == "nvdep" && &b.kernel == k).unwrap();
        assert!(base.end.unwrap() <= dep.start, "nvbase before nvdep on {k}: {builds:?}");
    }
    assert_eq!(spool_len(&w), 0, "every intent handled");
}

#[test]
fn s1_unknown_dependency_is_deferred_then_built_when_it_arrives() {
    let (k1, k2) = two_kernels();
    let w = World::new();
    Module::new("fsdep").build_depends("gpubase").write_to(&w);
    let o = w.run("dkms-trigger record module-changed fsdep/1.0; dkms-trigger finalize");
    let (so, se) = out(&o);
    assert!(o.status.success(), "a deferral is not an error: {so}{se}");
    assert!(!se.contains("warning"), "{se}");
    assert!(so.contains("deferred"), "{so}");
    assert!(!installed_for(&w, "fsdep", &k2));
    assert_eq!(cell(&w, "fsdep", &k2), "deferred");
    // The deferred work stays pending, narrowed to the deferred pairs (one per kernel).
    let pending: serde_json::Value = serde_json::from_str(&w.run_ok("dkms-trigger spool --json")).unwrap();
    let kinds: Vec<&str> = pending["intents"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["deferred", "deferred"], "{pending:#}");
    // The dependency's package arrives later.
    Module::new("gpubase").write_to(&w);
    let o = w.run("dkms-trigger record module-changed gpubase/1.0; dkms-trigger finalize");
    assert!(o.status.success(), "{:?}", out(&o));
    for k in [&k1, &k2] {
        assert!(installed_for(&w, "gpubase", k) && installed_for(&w, "fsdep", k), "both installed for {k}");
    }
    assert_eq!(spool_len(&w), 0);
}

#[test]
fn s2_toolchain_drift_rebuilds_every_kernel_that_uses_it_and_nothing_else() {
    let (k1, k2) = two_kernels();
    // The kbuild tree K2's headers resolve to (Debian: linux-kbuild-X.Y), made writable inside the
    // world.
    let modpost = std::fs::canonicalize(format!("/lib/modules/{k2}/build/scripts/mod/modpost")).unwrap();
    let kbuild_dir = modpost.parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let w = World::builder().overlay(&kbuild_dir).build();
    // K1 gets a kbuild tree of its own, as a kernel of another X.Y has on Debian. A stand-in: the
    // two test kernels are ABIs of one series and share one tree, so without it no kernel would be
    // left out of the drift and "nothing else" could not fail.
    w.run_ok(&format!(
        "cp -a {kb} /usr/src/kbuild-of-{k1} && ln -sfn /usr/src/kbuild-of-{k1}/scripts /usr/src/linux-headers-{k1}/scripts",
        kb = kbuild_dir.display()
    ));
    let resolved = w.run_ok(&format!(
        "readlink -f /lib/modules/{k1}/build/scripts/mod/modpost /lib/modules/{k2}/build/scripts/mod/modpost"
    ));
    assert_eq!(
        resolved.lines().collect::<Vec<_>>(),
        vec![format!("/usr/src/kbuild-of-{k1}/scripts/mod/modpost"), modpost.display().to_string()],
        "K1 and K2 use different kbuild trees"
    );
    Module::hello().write_to(&w);
    Module::new("manual").autoinstall("").write_to(&w);
    w.run_ok("dkms-trigger record module-changed hello/1.0; dkms-trigger record module-changed manual/1.0; dkms-trigger finalize");
    let before = w.builds();
    for k in [&k1, &k2] {
        for m in ["hello", "manual"] {
            assert_eq!(count_builds(&before, m, k), 1, "{m} built for {k}: {before:?}");
        }
    }
    // Nothing drifted: a rescan rebuilds nothing.
    w.run_ok("dkms-trigger finalize --rescan");
    assert_eq!(w.builds().len(), before.len(), "no rebuild without drift");
    // A kbuild upgrade: K2's modpost gets new content (bytes appended after the ELF image, which
    // the loader ignores) at a new time.
    w.run_ok(&format!("printf '\\n# a new linux-kbuild\\n' >> {}", modpost.display()));
    let o = w.run("dkms-trigger record --source dpkg:linux-kbuild toolchain-changed; dkms-trigger finalize");
    assert!(o.status.success(), "{:?}", out(&o));
    let after = w.builds();
    assert_eq!(count_builds(&after, "hello", &k2), 2, "hello rebuilt for {k2}, whose kbuild changed: {after:?}");
    assert_eq!(count_builds(&after, "hello", &k1), 1, "hello not rebuilt for {k1}, whose kbuild did not: {after:?}");
    for k in [&k1, &k2] {
        assert_eq!(count_builds(&after, "manual", k), 1, "a module that is not AUTOINSTALL is left alone on {k}");
        assert_eq!(cell(&w, "hello", k), "installed");
    }
    assert_eq!(after.len(), before.len() + 1, "nothing else was built: {after:?}");
}

#[test]
fn s3_module_failing_on_a_kernel_event_is_a_warning_and_its_own_package_failure_an_error() {
    let (k1, k2) = two_kernels();
    let w = World::new();
    Module::hello().write_to(&w);
    Module::new("broken").fail_compile().write_to(&w);
    Module::new("oldie").only_for_kernel(&k1).write_to(&w);
    // Registered beforehand (as an earlier install would have), so the kernel event concerns them.
    w.run_ok("for m in hello broken oldie; do dkms add -m $m -v 1.0 >/dev/null; done");
    let o = w.run(&format!(
        "dkms-trigger record kernel-added {k2}; dkms-trigger record headers-changed {k2}; dkms-trigger finalize"
    ));
    let (so, se) = out(&o);
    assert_eq!(o.status.code(), Some(0), "a kernel upgrade never fails because of a module: {so}{se}");
    assert!(
        se.contains(&format!("warning: broken/1.0 failed for {k2}")) && se.contains("log: /var/log/dkms-trigger/"),
        "{se}"
    );
    assert!(installed_for(&w, "hello", &k2), "the other modules are built");
    assert_eq!(cell(&w, "broken", &k2), "failed");
    assert_eq!(cell(&w, "oldie", &k2), "unsupported");
    assert!(!installed_for(&w, "hello", &k1), "other kernels untouched");
    // The module package's own change that fails to build is an error.
    let o = w.run("dkms-trigger record module-changed broken/1.0; dkms-trigger finalize");
    let (so, se) = out(&o);
    assert_eq!(o.status.code(), Some(1), "{so}{se}");
    assert!(se.contains("error: broken/1.0 failed for"), "{se}");
}

#[test]
fn s4_headers_reconfigure_rebuilds_autoinstall_modules_for_that_kernel_only() {
    let (k1, k2) = two_kernels();
    let w = World::new();
    Module::hello().write_to(&w);
    Module::new("handmade").autoinstall("").write_to(&w);
    w.run_ok("dkms-trigger record module-changed hello/1.0; dkms-trigger record module-changed handmade/1.0; dkms-trigger finalize");
    let before = w.builds();
    let o = w.run(&format!(
        "dkms-trigger record --source dpkg-reconfigure headers-changed {k2} --force; dkms-trigger finalize"
    ));
    assert!(o.status.success(), "{:?}", out(&o));
    let after = w.builds();
    assert_eq!(count_builds(&after, "hello", &k2), count_builds(&before, "hello", &k2) + 1, "hello rebuilt for {k2}");
    assert_eq!(count_builds(&after, "hello", &k1), count_builds(&before, "hello", &k1), "other kernel untouched");
    assert_eq!(count_builds(&after, "handmade", &k2), count_builds(&before, "handmade", &k2), "manual build preserved");
    assert!(installed_for(&w, "hello", &k2) && installed_for(&w, "handmade", &k2));
}

#[test]
fn s5_weak_updates_link_counts_as_installed() {
    let (k1, _) = two_kernels();
    let newer = "6.1.0-9999-amd64"; // an ABI-compatible kernel without headers
    let w = World::new();
    Module::hello().write_to(&w);
    w.run_ok("dkms-trigger record module-changed hello/1.0; dkms-trigger finalize --jobs 1 >/dev/null");
    // What RHEL's weak-modules does for a kABI-compatible kernel.
    w.run_ok(&format!(
        "mkdir -p /lib/modules/{newer}/weak-updates && touch /boot/vmlinuz-{newer} /lib/modules/{newer}/modules.order
         ln -s /lib/modules/{k1}/updates/dkms/hello.ko /lib/modules/{newer}/weak-updates/hello.ko"
    ));
    let o = w.run(&format!("dkms-trigger record kernel-added {newer}; dkms-trigger finalize"));
    let (so, se) = out(&o);
    assert!(o.status.success(), "{so}{se}");
    assert!(!se.contains("warning"), "no error, no warning: {se}");
    assert!(!so.contains("build hello"), "{so}");
    assert_eq!(cell(&w, "hello", newer), "weak");
    assert_eq!(spool_len(&w), 0);
}

#[test]
fn two_modules_two_kernels_in_parallel_each_ko_matches_its_kernel() {
    let (k1, k2) = two_kernels();
    let w = World::new();
    Module::new("alpha").slow(3).write_to(&w);
    Module::new("beta").slow(3).write_to(&w);
    let o = w.run("dkms-trigger record module-changed alpha/1.0; dkms-trigger record module-changed beta/1.0; dkms-trigger finalize --jobs 2");
    assert!(o.status.success(), "{:?}", out(&o));
    for m in ["alpha", "beta"] {
        for k in [&k1, &k2] {
            let ko = w.installed_ko(m, k).unwrap_or_else(|| panic!("{m} for {k}"));
            assert!(vermagic(&ko).starts_with(&format!("{k} ")), "{m} for {k}: {}", vermagic(&ko));
        }
    }
    let b = w.builds();
    let overlapping_modules = b.iter().any(|x| b.iter().any(|y| x.module != y.module && x.overlaps(y)));
    assert!(overlapping_modules, "different modules were built at the same time: {b:?}");
    let same_module_overlap = b.iter().any(|x| b.iter().any(|y| x != y && x.module == y.module && x.overlaps(y)));
    assert!(!same_module_overlap, "never two builds of one module at once: {b:?}");
}

#[test]
fn sigkill_of_finalize_mid_build_is_completed_by_the_next_finalize() {
    let (k1, k2) = two_kernels();
    let w = World::new();
    Module::new("slowpoke").slow(6).write_to(&w);
    Module::hello().write_to(&w);
    let o = w.run(&format!(
        "{WAIT_STARTED}
         dkms-trigger record module-changed slowpoke/1.0; dkms-trigger record module-changed hello/1.0
         dkms-trigger finalize --jobs 1 > /tmp/first.log 2>&1 &
         pid=$!
         # Kill it while a build is running.
         wait_started slowpoke
         kill -9 $pid
         rc=0; wait $pid || rc=$?
         echo first-status=$rc
         echo slowpoke-ended-at-kill=$(grep -c '^end slowpoke ' /var/log/dkms-world/builds.log || true)
         echo in-progress-at-kill=$(grep -c in-progress /var/lib/dkms-trigger/state.toml || true)
         dkms-trigger finalize"
    ));
    let (so, se) = out(&o);
    assert!(o.status.success(), "{so}{se}");
    // The kill landed mid-build: the first finalize died of SIGKILL while slowpoke's build had
    // started and not ended, with its pair marked in progress.
    assert!(so.lines().any(|l| l == "build-started slowpoke"), "{so}{se}");
    assert_eq!(printed(&so, "first-status"), Some("137"), "the first finalize was killed by SIGKILL: {so}{se}");
    assert_eq!(printed(&so, "slowpoke-ended-at-kill"), Some("0"), "the kill came before the build ended: {so}");
    assert_eq!(printed(&so, "in-progress-at-kill"), Some("1"), "one pair was in progress at the kill: {so}");
    for m in ["slowpoke", "hello"] {
        for k in [&k1, &k2] {
            assert!(installed_for(&w, m, k), "{m} for {k} after the second finalize\n{so}{se}");
            assert_eq!(cell(&w, m, k), "installed");
        }
    }
    assert_eq!(spool_len(&w), 0, "spool consistent: nothing left pending");
    let state = w.read("/var/lib/dkms-trigger/state.toml").unwrap();
    assert!(!state.contains("in-progress"), "{state}");
}

#[test]
fn a_hanging_build_hits_the_timeout_and_the_others_still_build() {
    let (_, k2) = two_kernels();
    let w = World::new();
    Module::new("hangs").slow(600).write_to(&w);
    Module::hello().write_to(&w);
    // Long enough that a real build of `hello` finishes even on a loaded 2-core CI machine
    // (4 s was not); the hang is 600 s, so the timeout still decides the outcome.
    w.write("/etc/dkms-trigger/config.d/50-test.toml", "job_timeout = 30\n");
    w.run_ok("dkms add -m hangs -v 1.0 >/dev/null; dkms add -m hello -v 1.0 >/dev/null");
    let started = std::time::Instant::now();
    let o = w.run(&format!("dkms-trigger record headers-changed {k2}; dkms-trigger finalize"));
    let (so, se) = out(&o);
    assert!(started.elapsed().as_secs() < 120, "the timeout stopped the hang");
    assert_eq!(o.status.code(), Some(0), "kernel event: warning policy: {so}{se}");
    assert!(se.contains("warning: hangs/1.0 failed") && se.contains("timeout"), "{se}");
    assert!(installed_for(&w, "hello", &k2));
    // A timeout is not the module's own failure (issue 12): it is not held against its inputs,
    // the next finalize retries it, and status says so.
    assert_eq!(cell(&w, "hangs", &k2), "pending");
    let s = status_json(&w).to_string();
    assert!(s.contains("(timeout)") && s.contains("a reason not the module's"), "{s}");
    // The same failure under the module's own change is an error.
    let o = w.run("dkms-trigger record module-changed hangs/1.0; dkms-trigger finalize");
    assert_eq!(o.status.code(), Some(1), "{:?}", out(&o));
}

#[test]
fn intents_recorded_during_a_finalize_are_run_by_the_same_run() {
    let (k1, k2) = two_kernels();
    let w = World::new();
    Module::new("slowpoke").slow(4).write_to(&w);
    Module::hello().write_to(&w);
    let o = w.run(&format!(
        "{WAIT_STARTED}
         dkms-trigger record module-changed slowpoke/1.0
         dkms-trigger finalize --jobs 1 > /tmp/f.log 2>&1 &
         pid=$!
         wait_started slowpoke
         dkms-trigger record --source hook-during-run module-changed hello/1.0
         # Recorded during the run: the finalizer was still running and slowpoke still building.
         if kill -0 $pid; then echo finalize-running-at-record=yes; fi
         echo slowpoke-ended-at-record=$(grep -c '^end slowpoke ' /var/log/dkms-world/builds.log || true)
         rc=0; wait $pid || rc=$?; echo rc=$rc; cat /tmp/f.log"
    ));
    let (so, se) = out(&o);
    assert!(so.lines().any(|l| l == "build-started slowpoke"), "{so}{se}");
    assert_eq!(printed(&so, "finalize-running-at-record"), Some("yes"), "{so}{se}");
    assert_eq!(printed(&so, "slowpoke-ended-at-record"), Some("0"), "{so}{se}");
    assert_eq!(printed(&so, "rc"), Some("0"), "{so}{se}");
    for k in [&k1, &k2] {
        assert!(installed_for(&w, "hello", k), "the intent recorded during the run was executed: {so}");
    }
    assert_eq!(spool_len(&w), 0);
}

#[test]
fn two_finalizers_one_runs_the_other_waits_or_reports_busy() {
    let (_, k2) = two_kernels();
    let w = World::new();
    Module::new("slowpoke").slow(5).write_to(&w);
    let o = w.run(&format!(
        "{WAIT_STARTED}
         dkms-trigger record module-changed slowpoke/1.0
         dkms-trigger finalize > /tmp/a.log 2>&1 &
         a=$!
         wait_started slowpoke
         set +e
         dkms-trigger finalize --no-wait; echo nowait=$?
         dkms-trigger record kernel-added {k2}
         dkms-trigger finalize > /tmp/b.log 2>&1; echo waited=$?
         wait $a; echo first=$?
         cat /tmp/b.log"
    ));
    let (so, se) = out(&o);
    assert!(so.lines().any(|l| l == "build-started slowpoke"), "the first finalizer was building: {so}{se}");
    assert!(so.contains("nowait=3"), "--no-wait exits busy: {so}{se}");
    assert!(se.contains("another finalizer"), "{se}");
    assert!(so.contains("waited=0") && so.contains("first=0"), "{so}");
    assert!(so.contains("waiting for another finalizer"), "the second one said it waits: {so}");
    assert!(installed_for(&w, "slowpoke", &k2));
}
