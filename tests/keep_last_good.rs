//! Never worse than stock when a build fails (issue 12), with the real dkms and real headers in
//! throwaway worlds (tests/common): a rebuild that fails keeps the previous build installed and
//! loadable; `finalize --retry-failed` retries with an empty spool; a SIGKILL at any point of a
//! swap leaves, after the next finalize, the old or the new build installed; a failure that was
//! not the module's (a timeout) is retried by the next finalize by itself.
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{count_builds, test_kernels, Module, State, World};
use std::process::Output;

fn two_kernels() -> (String, String) {
    let [k1, k2] = test_kernels();
    (k1, k2)
}

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The status pair (cell, detail) of `module` on `kernel`.
fn status(w: &World, module: &str, kernel: &str) -> (String, String) {
    let s: serde_json::Value = serde_json::from_str(&w.run_ok("dkms-trigger status --json")).expect("status --json");
    let p = s["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module"] == module)
        .and_then(|m| m["pairs"].as_array().unwrap().iter().find(|p| p["kernel"] == kernel))
        .cloned()
        .unwrap_or_default();
    (p["cell"].as_str().unwrap_or("").to_string(), p["detail"].as_str().unwrap_or("").to_string())
}

/// What an administrator checks: the module loads for `k` (modinfo resolves it through depmod's
/// data, built for that kernel), dkms lists it installed, the file is in place.
fn assert_loadable(w: &World, module: &str, k: &str, when: &str) {
    let o = w.run(&format!("modinfo -k {k} -F vermagic {module}"));
    let vermagic = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        o.status.success() && vermagic.starts_with(&format!("{k} ")),
        "{when}: modinfo -k {k} {module}: {}",
        out(&o)
    );
    assert!(w.installed_ko(module, k).is_some(), "{when}: {module}.ko for {k} is in place");
    let st = w.dkms_status();
    assert!(
        st.iter().any(|e| e.module == module && e.kernel.as_deref() == Some(k) && e.state == State::Installed),
        "{when}: dkms status lists {module} installed for {k}: {st:?}"
    );
}

#[test]
fn a_rebuild_that_fails_keeps_the_previous_build_and_retry_failed_rebuilds_it() {
    let (k1, k2) = two_kernels();
    let w = World::new();
    Module::new("keeper").broken_while("/etc/keeper-broken").write_to(&w);
    w.run_ok("dkms-trigger record module-changed keeper/1.0 && dkms-trigger finalize");
    for k in [&k1, &k2] {
        assert_loadable(&w, "keeper", k, "first install");
    }

    // The cause: something the build depends on breaks it; a same-version headers change forces
    // the rebuild on both kernels (what stock dkms would never even try).
    w.write("/etc/keeper-broken", "");
    let before = w.builds().len();
    let o = w.run(&format!(
        "dkms-trigger record headers-changed --force {k1} && dkms-trigger record headers-changed --force {k2} && \
         dkms-trigger finalize"
    ));
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "a kernel event's failure is a warning: {text}");
    assert!(text.contains("warning: keeper/1.0 failed") && text.contains("previous build is kept"), "{text}");
    assert_eq!(w.builds().len() - before, 2, "both rebuilds were tried: {text}");
    for k in [&k1, &k2] {
        assert_loadable(&w, "keeper", k, "after the failed rebuild");
        let (cell, detail) = status(&w, "keeper", k);
        assert_eq!(cell, "stale", "{detail}");
        assert!(
            detail.contains("rebuild failed, previous build kept") && detail.contains("--retry-failed"),
            "{detail}"
        );
    }
    // Nothing pending, and a plain finalize does not retry a failure of the module's own.
    let before = w.builds().len();
    w.run_ok("dkms-trigger finalize");
    assert_eq!(w.builds().len(), before, "not retried without a change or --retry-failed");

    // The cause removed: README's advice works with an empty spool.
    w.run_ok("rm /etc/keeper-broken");
    let o = w.run("dkms-trigger finalize --retry-failed");
    assert!(o.status.success(), "{}", out(&o));
    for k in [&k1, &k2] {
        assert_eq!(count_builds(&w.builds()[before..], "keeper", k), 1, "rebuilt once on {k}: {}", out(&o));
        assert_loadable(&w, "keeper", k, "after --retry-failed");
        assert_eq!(status(&w, "keeper", k).0, "installed");
    }
}

#[test]
fn sigkill_at_any_point_of_a_swap_leaves_the_old_or_the_new_build_installed() {
    let (_, k) = two_kernels();
    for point in ["swap-before-uninstall", "swap-after-uninstall", "swap-after-old-moved", "swap-after-new-moved"] {
        let w = World::new();
        Module::new("keeper").only_for_kernel(&k).write_to(&w);
        w.run_ok("dkms-trigger record module-changed keeper/1.0 && dkms-trigger finalize");
        assert_loadable(&w, "keeper", &k, "first install");
        // `; exit $?`: bash must not exec the last command, or it would be the PID namespace's
        // init, which SIGKILL from inside the namespace cannot kill.
        let o = w.run(&format!(
            "dkms-trigger record rebuild -m keeper -k {k} && DKMS_TRIGGER_FAILPOINTS={point} dkms-trigger finalize; exit $?"
        ));
        assert_eq!(o.status.code(), Some(128 + 9), "{point}: the failpoint killed finalize: {}", out(&o));
        let o = w.run("dkms-trigger finalize");
        assert!(o.status.success(), "{point}: the next finalize: {}", out(&o));
        assert_loadable(&w, "keeper", &k, point);
        let state = w.read("/var/lib/dkms-trigger/state.toml").unwrap_or_default();
        assert!(!state.contains("in-progress"), "{point}: {state}");
        assert!(!w.upper("/var/lib/dkms-trigger/swap/keeper").exists(), "{point}: no swap left behind");
    }
}

#[test]
fn sigkill_between_uninstalling_the_old_version_and_installing_the_new_one() {
    let (_, k) = two_kernels();
    let w = World::new();
    Module::new("keeper").only_for_kernel(&k).write_to(&w);
    w.run_ok("dkms-trigger record module-changed keeper/1.0 && dkms-trigger finalize");
    Module::new("keeper").version("2.0").only_for_kernel(&k).write_to(&w);
    let o = w.run(
        "dkms-trigger record module-changed keeper/2.0 && \
         DKMS_TRIGGER_FAILPOINTS=replace-after-uninstall dkms-trigger finalize; exit $?",
    );
    assert_eq!(o.status.code(), Some(128 + 9), "the failpoint killed finalize: {}", out(&o));
    let o = w.run("dkms-trigger finalize");
    assert!(o.status.success(), "{}", out(&o));
    assert_loadable(&w, "keeper", &k, "after the interrupted replacement");
}

#[test]
fn a_build_killed_by_the_timeout_is_retried_by_the_next_finalize_by_itself() {
    let (_, k) = two_kernels();
    let w = World::new();
    Module::new("sleepy").only_for_kernel(&k).hangs_while("/etc/sleepy-hangs", 600).write_to(&w);
    w.write("/etc/dkms-trigger/config.d/50-test.toml", "job_timeout = 20\n");
    w.write("/etc/sleepy-hangs", "");
    let o = w.run("dkms-trigger record module-changed sleepy/1.0; dkms-trigger finalize");
    let text = out(&o);
    assert!(text.contains("timeout") && text.contains("the next finalize tries again"), "{text}");
    // status says the next finalize retries it: it is pending, for that reason.
    let (cell, detail) = status(&w, "sleepy", &k);
    assert_eq!(cell, "pending", "{detail}");
    assert!(detail.contains("failed for a reason not the module's"), "{detail}");

    // Whatever held the build up is gone: a finalize with nothing pending and no flag retries it.
    w.run_ok("rm /etc/sleepy-hangs");
    let o = w.run("dkms-trigger finalize");
    assert!(o.status.success(), "{}", out(&o));
    assert_loadable(&w, "sleepy", &k, "after the automatic retry");
}
