use super::*;
use crate::inventory::Build;
use crate::state::{PairKey, PairState};
use std::fs;
use std::os::unix::fs::symlink;

const K: &str = "6.1.0-47-amd64";
const WITH_HEADERS: KernelFacts = KernelFacts { installed: true, headers: true };

fn module(name: &str, version: &str, source: bool, built_on: &[&str]) -> Module {
    Module {
        name: name.into(),
        version: version.into(),
        source: source.then(|| format!("usr/src/{name}-{version}")),
        registered: true,
        broken: None,
        builds: built_on
            .iter()
            .map(|k| ((k.to_string(), "x86_64".to_string()), Build { installed: true, built_ms: 1 }))
            .collect(),
        weak: BTreeMap::new(),
        conf: None,
        prints: BTreeMap::new(),
        source_bytes: 0,
        source_digest: None,
    }
}

fn modules(list: Vec<Module>) -> BTreeMap<ModKey, Module> {
    list.into_iter().map(|m| ((m.name.clone(), m.version.clone()), m)).collect()
}

fn state(records: &[(&str, &str, &str, Outcome, Option<&str>)]) -> State {
    let mut s = State::default();
    for (m, v, k, result, reason) in records {
        s.set(
            PairKey { module: m.to_string(), version: v.to_string(), kernel: k.to_string(), arch: "x86_64".into() },
            PairState {
                result: *result,
                reason: reason.map(str::to_string),
                time_ms: 1,
                run: None,
                log: None,
                fingerprint: None,
                transient: false,
                early: false,
            },
        );
    }
    s
}

fn none() -> BTreeSet<ModKey> {
    BTreeSet::new()
}

#[test]
fn a_module_with_no_trace_on_the_running_kernel_is_missing() {
    let mods = modules(vec![module("hello", "1.0", true, &["6.1.0-46-amd64"])]);
    assert_eq!(decide(K, WITH_HEADERS, &mods, &State::default(), &none()), Verdict::Missing(vec!["hello/1.0".into()]));
}

#[test]
fn without_headers_the_missing_modules_are_named_not_planned() {
    let mods = modules(vec![module("hello", "1.0", true, &[])]);
    let facts = KernelFacts { installed: true, headers: false };
    assert_eq!(decide(K, facts, &mods, &State::default(), &none()), Verdict::NoHeaders(vec!["hello/1.0".into()]));
}

#[test]
fn nothing_to_do_when_every_module_has_a_trace() {
    let mods = modules(vec![
        module("built", "1.0", true, &[K]),
        // An older version built, the newer one not: a module package's change, not the boot's.
        module("older", "1.0", true, &[K]),
        module("older", "2.0", true, &[]),
        module("failed", "1.0", true, &[]),
        module("unsupported", "1.0", true, &[]),
        module("interrupted", "1.0", true, &[]),
        module("obsolete", "1.0", false, &[]),
        module("handmade", "1.0", true, &[]),
    ]);
    let st = state(&[
        ("failed", "1.0", K, Outcome::Failed, Some("make failed")),
        ("unsupported", "1.0", K, Outcome::Unsupported, Some("BUILD_EXCLUSIVE")),
        ("interrupted", "1.0", K, Outcome::InProgress, None),
    ]);
    let marker: BTreeSet<ModKey> = [("handmade".to_string(), "1.0".to_string())].into();
    assert_eq!(decide(K, WITH_HEADERS, &mods, &st, &marker), Verdict::Nothing);
    // Not installed here (a container): nothing, whatever the modules.
    let facts = KernelFacts { installed: false, headers: false };
    assert_eq!(decide(K, facts, &mods, &State::default(), &none()), Verdict::Nothing);
}

#[test]
fn an_installed_record_without_its_build_is_no_trace() {
    // The build was removed behind the tool's back (dkms remove by hand).
    let mods = modules(vec![module("hello", "1.0", true, &[])]);
    let st = state(&[("hello", "1.0", K, Outcome::Installed, None)]);
    assert_eq!(decide(K, WITH_HEADERS, &mods, &st, &none()), Verdict::Missing(vec!["hello/1.0".into()]));
}

#[test]
fn a_no_headers_skip_counts_only_while_the_kernel_has_no_headers() {
    let mods = modules(vec![module("hello", "1.0", true, &[])]);
    let reason =
        format!("{}: kernel {K} has no headers installed", crate::plan::skip_word(crate::plan::SkipKind::NoHeaders));
    let st = state(&[("hello", "1.0", K, Outcome::Skipped, Some(&reason))]);
    // Headers installed since, by something that bypassed the hooks.
    assert_eq!(decide(K, WITH_HEADERS, &mods, &st, &none()), Verdict::Missing(vec!["hello/1.0".into()]));
    let facts = KernelFacts { installed: true, headers: false };
    assert_eq!(decide(K, facts, &mods, &st, &none()), Verdict::Nothing);
    // Other skips (weak-updates) are traces.
    let st = state(&[("hello", "1.0", K, Outcome::Skipped, Some("weak: present through weak-updates links"))]);
    assert_eq!(decide(K, WITH_HEADERS, &mods, &st, &none()), Verdict::Nothing);
}

#[test]
fn the_marker_covers_its_kernel_and_version_only() {
    let text = "# comment\n6.1.0-47-amd64 handmade/1.0\n6.1.0-46-amd64 other/2.0\ngarbage\n";
    assert_eq!(parse_marker(text, K), [("handmade".to_string(), "1.0".to_string())].into());
    let mods = modules(vec![module("handmade", "1.1", true, &[])]);
    assert_eq!(
        decide(K, WITH_HEADERS, &mods, &State::default(), &parse_marker(text, K)),
        Verdict::Missing(vec!["handmade/1.1".into()]),
        "a new version is looked at again"
    );
}

#[test]
fn headers_package_names() {
    assert_eq!(package_name(K, None, true, false), "linux-headers-6.1.0-47-amd64");
    assert_eq!(package_name("6.5.6-300.fc39.x86_64", None, false, true), "kernel-devel-6.5.6-300.fc39.x86_64");
    assert_eq!(package_name("6.6.1-arch1-1", Some("linux"), false, false), "linux-headers");
    assert_eq!(package_name("6.6.1-1-lts", Some("linux-lts"), false, false), "linux-lts-headers");
    assert_eq!(package_name("x", None, false, false), "the headers of x");
}

/// The look on a fake root: dkms's tree, usr/src, the kernel's build link, the running kernel.
#[test]
fn look_on_a_fake_root() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let root = Root::open(r).unwrap();
    assert_eq!(running_kernel(&root), None, "no proc under a fake root, and it is not the host");
    fs::create_dir_all(r.join("proc/sys/kernel")).unwrap();
    fs::write(r.join("proc/sys/kernel/osrelease"), format!("{K}\n")).unwrap();
    assert_eq!(running_kernel(&root).as_deref(), Some(K));
    fs::write(r.join("proc/sys/kernel/osrelease"), "../../etc\n").unwrap();
    assert_eq!(running_kernel(&root), None, "a release that cannot be a path is refused");
    fs::write(r.join("proc/sys/kernel/osrelease"), format!("{K}\n")).unwrap();

    assert_eq!(look(&root, K).unwrap(), Verdict::Nothing, "kernel not installed");
    fs::create_dir_all(r.join(format!("lib/modules/{K}"))).unwrap();
    assert_eq!(look(&root, K).unwrap(), Verdict::Nothing, "no modules");
    // A registered module built for another kernel only.
    fs::create_dir_all(r.join("usr/src/hello-1.0")).unwrap();
    fs::write(r.join("usr/src/hello-1.0/dkms.conf"), "PACKAGE_NAME=hello\nPACKAGE_VERSION=1.0\n").unwrap();
    fs::create_dir_all(r.join("var/lib/dkms/hello/1.0/6.1.0-46-amd64/x86_64/module")).unwrap();
    fs::write(r.join("var/lib/dkms/hello/1.0/6.1.0-46-amd64/x86_64/module/hello.ko"), "").unwrap();
    symlink("/usr/src/hello-1.0", r.join("var/lib/dkms/hello/1.0/source")).unwrap();
    assert_eq!(look(&root, K).unwrap(), Verdict::NoHeaders(vec!["hello/1.0".into()]));
    fs::create_dir_all(r.join(format!("usr/src/linux-headers-{K}"))).unwrap();
    fs::write(r.join(format!("usr/src/linux-headers-{K}/Makefile")), "").unwrap();
    symlink(format!("/usr/src/linux-headers-{K}"), r.join(format!("lib/modules/{K}/build"))).unwrap();
    assert_eq!(look(&root, K).unwrap(), Verdict::Missing(vec!["hello/1.0".into()]));
    // Built for the running kernel: nothing to do.
    fs::create_dir_all(r.join(format!("var/lib/dkms/hello/1.0/{K}/x86_64/module"))).unwrap();
    fs::write(r.join(format!("var/lib/dkms/hello/1.0/{K}/x86_64/module/hello.ko")), "").unwrap();
    assert_eq!(look(&root, K).unwrap(), Verdict::Nothing);
    // Arch names the headers package after the kernel's package base.
    fs::write(r.join(format!("lib/modules/{K}/pkgbase")), "linux-zen\n").unwrap();
    assert_eq!(headers_package(&root, K), "linux-zen-headers");
}
