//! Table-driven planner tests: one or more rows per rule, and one per scenario (S1-S5) of
//! ../shared/reference/scenarios.md. Inventories are plain data built here; no I/O.

use super::*;
use crate::dkmsconf::{Autoinstall, ConfValues, Evaluated};
use crate::inventory::{Build, Kernel, Module};
use crate::state::{PairKey, PairState};
use std::path::PathBuf;

const K1: &str = "6.1.0-40-amd64";
const K2: &str = "6.1.0-47-amd64";
const K3: &str = "6.1.0-50-amd64";

fn fp(parts: &[(&str, &str)], newest: u64) -> Fingerprint {
    Fingerprint {
        algorithm: crate::fingerprint::ALGORITHM.into(),
        parts: parts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        newest_input_ms: newest,
    }
}

fn conf(name: &str, version: &str) -> ConfValues {
    ConfValues {
        built_module_name: vec![name.into()],
        dest_module_location: vec!["/updates/dkms".into()],
        ..ConfValues::named(name, version)
    }
}

/// A test system: kernels K1..K3 (with headers unless removed), modules added with `module`.
struct Sys {
    inv: Inventory,
    state: State,
    config: Config,
}

impl Sys {
    fn new(kernels: &[&str]) -> Sys {
        let mut inv = Inventory { dkms_version: Some("3.0.10".into()), ..Default::default() };
        for k in kernels {
            inv.kernels.insert(
                k.to_string(),
                Kernel {
                    version: k.to_string(),
                    modules_dir: format!("lib/modules/{k}"),
                    headers: Some(PathBuf::from(format!("/usr/src/linux-headers-{k}"))),
                    image: true,
                    arch: "x86_64".into(),
                    initramfs: Some(format!("boot/initrd.img-{k}")),
                    print: fp(&[("headers", &format!("h-{k}")), ("kbuild", "kb1"), ("compiler", "gcc12")], 1000),
                },
            );
        }
        Sys { inv, state: State::default(), config: Config::default() }
    }

    fn module(&mut self, name: &str, version: &str) -> &mut Module {
        let kernels: Vec<String> = self.inv.kernels.keys().cloned().collect();
        let m = Module {
            name: name.into(),
            version: version.into(),
            source: Some(format!("usr/src/{name}-{version}")),
            registered: true,
            broken: None,
            builds: BTreeMap::new(),
            weak: BTreeMap::new(),
            conf: Some(Evaluated {
                generic: conf(name, version),
                per_kernel: BTreeMap::new(),
                kernel_independent: true,
            }),
            prints: kernels
                .iter()
                .map(|k| (k.clone(), fp(&[("source", &format!("s-{name}-{version}"))], 500)))
                .collect(),
            source_bytes: 0,
            source_digest: None,
        };
        self.inv.modules.insert((name.into(), version.into()), m);
        self.inv.modules.get_mut(&(name.into(), version.into())).unwrap()
    }

    fn m(&mut self, name: &str, version: &str) -> &mut Module {
        self.inv.modules.get_mut(&(name.into(), version.into())).unwrap()
    }

    /// Marks M/V installed on `k`, built at time 2000, with the current fingerprint stored.
    fn installed(&mut self, name: &str, version: &str, k: &str) {
        self.m(name, version).builds.insert((k.into(), "x86_64".into()), Build { installed: true, built_ms: 2000 });
        let print = self.inv.pair_print(&self.inv.modules[&(name.to_string(), version.to_string())], k).unwrap();
        self.record(name, version, k, Outcome::Installed, Some(print));
    }

    fn record(&mut self, name: &str, version: &str, k: &str, result: Outcome, print: Option<Fingerprint>) {
        self.state.pairs.insert(
            PairKey { module: name.into(), version: version.into(), kernel: k.into(), arch: "x86_64".into() },
            PairState {
                result,
                reason: Some("make failed".into()),
                time_ms: 1,
                run: Some("r0".into()),
                log: None,
                fingerprint: print,
                transient: false,
                early: false,
            },
        );
    }

    fn set_conf(&mut self, name: &str, version: &str, f: impl Fn(&mut ConfValues)) {
        let m = self.m(name, version);
        let ev = m.conf.as_mut().unwrap();
        f(&mut ev.generic);
        for v in ev.per_kernel.values_mut().flatten() {
            f(v);
        }
    }

    fn exclude_on(&mut self, name: &str, version: &str, k: &str) {
        let m = self.m(name, version);
        let ev = m.conf.as_mut().unwrap();
        let mut c = ev.generic.clone();
        c.excluded = Some(format!("BUILD_EXCLUSIVE_KERNEL does not match {k}"));
        ev.per_kernel.insert(k.into(), Ok(c));
        ev.kernel_independent = false;
    }

    fn plan(&self, intents: &[Intent]) -> Plan {
        self.plan_with(intents, false)
    }

    fn plan_with(&self, intents: &[Intent], retry_failed: bool) -> Plan {
        plan(&Input {
            intents,
            inventory: &self.inv,
            state: &self.state,
            config: &self.config,
            retry_failed,
            revisit: true,
        })
    }
}

fn kernel_added(k: &str) -> Intent {
    Intent::KernelAdded { kernel: k.into() }
}
fn headers(k: &str, force: bool) -> Intent {
    Intent::HeadersChanged { kernel: k.into(), force }
}
fn module_changed(m: &str, v: &str) -> Intent {
    Intent::ModuleChanged { module: m.into(), version: v.into() }
}
fn toolchain(ks: &[&str]) -> Intent {
    Intent::ToolchainChanged { kernels: ks.iter().map(|s| s.to_string()).collect() }
}
fn rebuild(ks: &[&str], ms: &[&str]) -> Intent {
    Intent::Rebuild {
        kernels: ks.iter().map(|s| s.to_string()).collect(),
        modules: ms.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

/// The plan as `verb M/V kernel` lines, in plan order.
fn lines(p: &Plan) -> Vec<String> {
    p.jobs.iter().map(|j| format!("{} {}/{} {}", j.action.verb(), j.module, j.version, j.kernel)).collect()
}

fn job<'p>(p: &'p Plan, m: &str, k: &str) -> &'p Job {
    p.jobs.iter().find(|j| j.module == m && j.kernel == k).unwrap_or_else(|| panic!("no job {m} {k} in {:?}", lines(p)))
}

/// One row of the rule table.
struct Row {
    name: &'static str,
    sys: fn() -> Sys,
    intents: fn() -> Vec<Intent>,
    expect: &'static [&'static str],
}

fn two_kernels_hello() -> Sys {
    let mut s = Sys::new(&[K1, K2]);
    s.module("hello", "1.0");
    s
}

#[test]
fn rule_table() {
    let rows: Vec<Row> = vec![
        Row {
            name: "kernel-added builds every AUTOINSTALL module for that kernel only",
            sys: || {
                let mut s = two_kernels_hello();
                s.module("zeta", "2.0");
                s.installed("hello", "1.0", K1);
                s.installed("zeta", "2.0", K1);
                s
            },
            intents: || vec![kernel_added(K2)],
            expect: &["build hello/1.0 6.1.0-47-amd64", "build zeta/2.0 6.1.0-47-amd64"],
        },
        Row {
            name: "kernel-added leaves a pair installed with a matching fingerprint",
            sys: || {
                let mut s = two_kernels_hello();
                s.installed("hello", "1.0", K2);
                s
            },
            intents: || vec![kernel_added(K2)],
            expect: &[],
        },
        Row {
            name: "kernel-added rebuilds an installed pair whose fingerprint changed",
            sys: || {
                let mut s = two_kernels_hello();
                s.installed("hello", "1.0", K2);
                s.inv.kernels.get_mut(K2).unwrap().print.parts.insert("kbuild".into(), "kb2".into());
                s
            },
            intents: || vec![kernel_added(K2)],
            expect: &["rebuild hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "kernel-added ignores modules that are not AUTOINSTALL",
            sys: || {
                let mut s = two_kernels_hello();
                s.set_conf("hello", "1.0", |c| c.autoinstall = Autoinstall::No);
                s
            },
            intents: || vec![kernel_added(K2)],
            expect: &[],
        },
        Row {
            name: "kernel-added of a kernel without headers skips",
            sys: || {
                let mut s = two_kernels_hello();
                s.inv.kernels.get_mut(K2).unwrap().headers = None;
                s
            },
            intents: || vec![kernel_added(K2)],
            expect: &["skip hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "headers-changed without force builds what is missing, leaves what is current",
            sys: || {
                let mut s = two_kernels_hello();
                s.module("other", "1");
                s.installed("other", "1", K2);
                s
            },
            intents: || vec![headers(K2, false)],
            expect: &["build hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "module-changed registers and builds for every kernel with headers",
            sys: || {
                let mut s = two_kernels_hello();
                s.m("hello", "1.0").registered = false;
                s
            },
            intents: || vec![module_changed("hello", "1.0")],
            expect: &["build hello/1.0 6.1.0-40-amd64", "build hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "module-changed builds a module that is not AUTOINSTALL (the package asked)",
            sys: || {
                let mut s = two_kernels_hello();
                s.set_conf("hello", "1.0", |c| c.autoinstall = Autoinstall::No);
                s
            },
            intents: || vec![module_changed("hello", "1.0")],
            expect: &["build hello/1.0 6.1.0-40-amd64", "build hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "module-changed replaces an older installed version",
            sys: || {
                let mut s = two_kernels_hello();
                s.module("hello", "2.0");
                s.installed("hello", "1.0", K1);
                s.installed("hello", "1.0", K2);
                s.m("hello", "1.0").source = None; // the package upgrade removed the old source
                s
            },
            intents: || vec![module_changed("hello", "2.0")],
            expect: &["replace hello/2.0 6.1.0-40-amd64", "replace hello/2.0 6.1.0-47-amd64"],
        },
        Row {
            name: "module-changed of a same-version reinstall with unchanged fingerprint rebuilds nothing",
            sys: || {
                let mut s = two_kernels_hello();
                s.installed("hello", "1.0", K1);
                s.installed("hello", "1.0", K2);
                s
            },
            intents: || vec![module_changed("hello", "1.0")],
            expect: &[],
        },
        Row {
            name: "module-changed of a same-version reinstall with a changed source rebuilds",
            sys: || {
                let mut s = two_kernels_hello();
                s.installed("hello", "1.0", K1);
                s.installed("hello", "1.0", K2);
                for p in s.m("hello", "1.0").prints.values_mut() {
                    p.parts.insert("source".into(), "s-new".into());
                }
                s
            },
            intents: || vec![module_changed("hello", "1.0")],
            expect: &["rebuild hello/1.0 6.1.0-40-amd64", "rebuild hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "toolchain-changed for one kernel refreshes only that kernel's drifted pairs",
            sys: || {
                let mut s = two_kernels_hello();
                s.installed("hello", "1.0", K1);
                s.installed("hello", "1.0", K2);
                for k in [K1, K2] {
                    s.inv.kernels.get_mut(k).unwrap().print.parts.insert("kbuild".into(), "kb2".into());
                }
                s
            },
            intents: || vec![toolchain(&[K1])],
            expect: &["rebuild hello/1.0 6.1.0-40-amd64"],
        },
        Row {
            name: "toolchain-changed does not build what was never built",
            sys: two_kernels_hello,
            intents: || vec![toolchain(&[])],
            expect: &[],
        },
        Row {
            name: "toolchain-changed without stored fingerprints compares input and build times",
            sys: || {
                let mut s = two_kernels_hello();
                s.m("hello", "1.0")
                    .builds
                    .insert((K1.into(), "x86_64".into()), Build { installed: true, built_ms: 900 });
                s.m("hello", "1.0")
                    .builds
                    .insert((K2.into(), "x86_64".into()), Build { installed: true, built_ms: 5000 });
                s
            },
            intents: || vec![toolchain(&[])],
            expect: &["rebuild hello/1.0 6.1.0-40-amd64"],
        },
        Row {
            name: "rescan builds missing AUTOINSTALL pairs on every kernel with headers",
            sys: || {
                let mut s = Sys::new(&[K1, K2, K3]);
                s.module("hello", "1.0");
                s.installed("hello", "1.0", K1);
                s.inv.kernels.get_mut(K3).unwrap().headers = None;
                s
            },
            intents: || vec![Intent::Rescan],
            expect: &["build hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "rescan registers and builds an unregistered source even when not AUTOINSTALL",
            sys: || {
                let mut s = two_kernels_hello();
                s.m("hello", "1.0").registered = false;
                s.set_conf("hello", "1.0", |c| c.autoinstall = Autoinstall::No);
                s
            },
            intents: || vec![Intent::Rescan],
            expect: &["build hello/1.0 6.1.0-40-amd64", "build hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "rescan does not retry a pair that failed with the same inputs",
            sys: || {
                let mut s = two_kernels_hello();
                s.installed("hello", "1.0", K1);
                let print = s.inv.pair_print(&s.inv.modules[&("hello".into(), "1.0".into())], K2);
                s.record("hello", "1.0", K2, Outcome::Failed, print);
                s
            },
            intents: || vec![Intent::Rescan],
            expect: &[],
        },
        Row {
            name: "rescan retries a failed pair whose inputs changed",
            sys: || {
                let mut s = two_kernels_hello();
                s.record("hello", "1.0", K2, Outcome::Failed, Some(fp(&[("source", "old")], 1)));
                s.installed("hello", "1.0", K1);
                s
            },
            intents: || vec![Intent::Rescan],
            expect: &["build hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "rebuild without arguments forces every AUTOINSTALL module on every kernel",
            sys: || {
                let mut s = two_kernels_hello();
                s.module("manual", "1");
                s.set_conf("manual", "1", |c| c.autoinstall = Autoinstall::No);
                s.installed("hello", "1.0", K1);
                s.installed("manual", "1", K1);
                s
            },
            intents: || vec![rebuild(&[], &[])],
            expect: &["rebuild hello/1.0 6.1.0-40-amd64", "build hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "rebuild of a named non-AUTOINSTALL module on one kernel",
            sys: || {
                let mut s = two_kernels_hello();
                s.module("manual", "1");
                s.set_conf("manual", "1", |c| c.autoinstall = Autoinstall::No);
                s.installed("manual", "1", K1);
                s
            },
            intents: || vec![rebuild(&[K1], &["manual"])],
            expect: &["rebuild manual/1 6.1.0-40-amd64"],
        },
        Row {
            name: "BUILD_EXCLUSIVE mismatch is a skip, not a failure",
            sys: || {
                let mut s = two_kernels_hello();
                s.exclude_on("hello", "1.0", K2);
                s
            },
            intents: || vec![Intent::Rescan],
            expect: &["build hello/1.0 6.1.0-40-amd64", "skip hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "a registered module whose source is gone is obsolete when named",
            sys: || {
                let mut s = two_kernels_hello();
                s.installed("hello", "1.0", K1);
                s.m("hello", "1.0").source = None;
                s
            },
            intents: || vec![Intent::Rescan, rebuild(&[K1], &["hello"])],
            expect: &["skip hello/1.0 6.1.0-40-amd64"],
        },
        Row {
            name: "a dependency that is AUTOINSTALL but missing is pulled in first",
            sys: || {
                let mut s = two_kernels_hello();
                s.module("dep", "1");
                s.set_conf("dep", "1", |c| c.build_depends = vec!["hello".into()]);
                s.installed("hello", "1.0", K1);
                s.installed("dep", "1", K1);
                s
            },
            intents: || vec![module_changed("dep", "1"), rebuild(&[K1], &["dep"])],
            expect: &["rebuild dep/1 6.1.0-40-amd64", "build hello/1.0 6.1.0-47-amd64", "build dep/1 6.1.0-47-amd64"],
        },
        Row {
            name: "a dependency excluded on the kernel makes the dependent fail",
            sys: || {
                let mut s = two_kernels_hello();
                s.module("dep", "1");
                s.set_conf("dep", "1", |c| c.build_depends = vec!["hello".into()]);
                s.exclude_on("hello", "1.0", K2);
                s
            },
            intents: || vec![kernel_added(K2)],
            expect: &["skip hello/1.0 6.1.0-47-amd64", "fail dep/1 6.1.0-47-amd64"],
        },
        Row {
            name: "a dependency that is not AUTOINSTALL and not installed makes the dependent fail",
            sys: || {
                let mut s = two_kernels_hello();
                s.module("dep", "1");
                s.set_conf("dep", "1", |c| c.build_depends = vec!["hello".into()]);
                s.set_conf("hello", "1.0", |c| c.autoinstall = Autoinstall::No);
                s
            },
            intents: || vec![kernel_added(K2)],
            expect: &["fail dep/1 6.1.0-47-amd64"],
        },
        Row {
            name: "a BUILD_DEPENDS cycle fails every member",
            sys: || {
                let mut s = two_kernels_hello();
                s.module("a", "1");
                s.module("b", "1");
                s.set_conf("a", "1", |c| c.build_depends = vec!["b".into()]);
                s.set_conf("b", "1", |c| c.build_depends = vec!["a".into()]);
                s.installed("hello", "1.0", K2);
                s
            },
            intents: || vec![kernel_added(K2)],
            expect: &["fail a/1 6.1.0-47-amd64", "fail b/1 6.1.0-47-amd64"],
        },
        Row {
            name: "a pair touched by several intents appears once",
            sys: two_kernels_hello,
            intents: || {
                vec![
                    kernel_added(K2),
                    headers(K2, false),
                    headers(K2, false),
                    Intent::Rescan,
                    module_changed("hello", "1.0"),
                ]
            },
            expect: &["build hello/1.0 6.1.0-40-amd64", "build hello/1.0 6.1.0-47-amd64"],
        },
        Row {
            name: "an interrupted pair is rebuilt whatever the intents",
            sys: || {
                let mut s = two_kernels_hello();
                s.installed("hello", "1.0", K1);
                s.record("hello", "1.0", K1, Outcome::InProgress, None);
                s
            },
            intents: Vec::new,
            expect: &["rebuild hello/1.0 6.1.0-40-amd64"],
        },
        Row {
            name: "a kernel that is not installed any more is a note, not a job",
            sys: two_kernels_hello,
            intents: || vec![kernel_added("9.9.9-gone")],
            expect: &[],
        },
    ];
    let mut failures = Vec::new();
    for row in rows {
        let s = (row.sys)();
        let p = s.plan(&(row.intents)());
        let got = lines(&p);
        if got != row.expect {
            failures.push(format!("{}:\n  expected {:?}\n  got      {:?}\n{p}", row.name, row.expect, got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn s1_dependent_modules_in_one_transaction_build_dependency_first_on_every_kernel() {
    // nvidia-fs (BUILD_DEPENDS=nvidia) recorded before nvidia, both new, plus a new kernel.
    let mut s = Sys::new(&[K1, K2]);
    s.module("nvidia", "535");
    s.module("nvidia-fs", "2.26");
    s.set_conf("nvidia-fs", "2.26", |c| c.build_depends = vec!["nvidia".into()]);
    for m in ["nvidia", "nvidia-fs"] {
        s.m(m, if m == "nvidia" { "535" } else { "2.26" }).registered = false;
    }
    let p = s.plan(&[
        headers(K2, false),
        module_changed("nvidia-fs", "2.26"),
        module_changed("nvidia", "535"),
        kernel_added(K2),
    ]);
    assert_eq!(
        lines(&p),
        vec![
            "build nvidia/535 6.1.0-40-amd64",
            "build nvidia-fs/2.26 6.1.0-40-amd64",
            "build nvidia/535 6.1.0-47-amd64",
            "build nvidia-fs/2.26 6.1.0-47-amd64",
        ]
    );
    let dependent = job(&p, "nvidia-fs", K2);
    assert_eq!(dependent.after, vec![2], "nvidia-fs waits for nvidia on the same kernel");
    assert!(dependent.register && job(&p, "nvidia", K2).register);
    assert_eq!(dependent.class, EventClass::Module, "its own package changed: failures are errors");
    assert!(p.keep.is_empty());
}

#[test]
fn s1_unknown_dependency_defers_and_keeps_the_intent_pending() {
    let mut s = Sys::new(&[K1, K2]);
    s.module("nvidia-fs", "2.26");
    s.set_conf("nvidia-fs", "2.26", |c| c.build_depends = vec!["nvidia".into()]);
    s.module("hello", "1.0");
    let intents = [kernel_added(K2), headers(K2, true), module_changed("nvidia-fs", "2.26")];
    let p = s.plan(&intents);
    let d = job(&p, "nvidia-fs", K2);
    assert_eq!(d.action, Action::Deferred { waiting_for: vec!["nvidia".into()] });
    assert_eq!(job(&p, "hello", K2).action, Action::BuildInstall, "other modules are not held up");
    assert!(p.kernels.contains_key(K2));
    // The kept intents are narrowed to the deferred pairs, keeping strength and policy.
    let deferred = |k: &str| Intent::Deferred {
        module: "nvidia-fs".into(),
        version: "2.26".into(),
        kernel: k.into(),
        force: false,
        module_event: true,
    };
    assert_eq!(p.keep, vec![deferred(K1), deferred(K2)]);
    // Replayed once the dependency arrives, they build only that pair.
    s.module("nvidia", "535");
    let replay = s.plan(&p.keep);
    assert_eq!(
        lines(&replay),
        vec![
            "build nvidia/535 6.1.0-40-amd64",
            "build nvidia-fs/2.26 6.1.0-40-amd64",
            "build nvidia/535 6.1.0-47-amd64",
            "build nvidia-fs/2.26 6.1.0-47-amd64"
        ]
    );
    assert_eq!(job(&replay, "nvidia-fs", K2).class, EventClass::Module);
}

#[test]
fn s1_known_but_failed_dependency_is_a_real_failure() {
    let mut s = Sys::new(&[K1, K2]);
    s.module("nvidia", "535");
    s.module("nvidia-fs", "2.26");
    s.set_conf("nvidia-fs", "2.26", |c| c.build_depends = vec!["nvidia".into()]);
    s.installed("nvidia", "535", K1);
    s.installed("nvidia-fs", "2.26", K1);
    let print = s.inv.pair_print(&s.inv.modules[&("nvidia".into(), "535".into())], K2);
    s.record("nvidia", "535", K2, Outcome::Failed, print);
    let p = s.plan(&[Intent::Rescan]);
    match &job(&p, "nvidia-fs", K2).action {
        Action::Fail { reason } => assert!(reason.contains("dependency nvidia unavailable: failed before"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn s2_toolchain_upgrade_rebuilds_exactly_the_affected_pairs_on_every_kernel() {
    let mut s = Sys::new(&[K1, K2, K3]);
    s.module("nvidia", "535");
    s.module("manual", "1");
    s.set_conf("manual", "1", |c| c.autoinstall = Autoinstall::No);
    for k in [K1, K2, K3] {
        s.installed("nvidia", "535", k);
        s.installed("manual", "1", k);
    }
    // linux-kbuild upgraded: K1 and K2 use it, K3 uses another kbuild series.
    for k in [K1, K2] {
        s.inv.kernels.get_mut(k).unwrap().print.parts.insert("kbuild".into(), "kb-6.1-new".into());
    }
    let p = s.plan(&[toolchain(&[]), kernel_added(K3)]);
    assert_eq!(lines(&p), vec!["rebuild nvidia/535 6.1.0-40-amd64", "rebuild nvidia/535 6.1.0-47-amd64"]);
    assert!(
        job(&p, "nvidia", K1).reasons.iter().any(|r| r == "inputs changed: kbuild"),
        "{:?}",
        job(&p, "nvidia", K1).reasons
    );
    assert_eq!(p.kernels.keys().collect::<Vec<_>>(), vec![K1, K2], "depmod only where something changes");
}

#[test]
fn s3_failures_and_unsupported_modules_on_kernel_events_are_warnings_not_errors() {
    let mut s = Sys::new(&[K1, K2]);
    s.module("good", "1");
    s.module("old", "0.9");
    s.exclude_on("old", "0.9", K2);
    s.installed("good", "1", K1);
    s.installed("old", "0.9", K1);
    s.m("old", "0.9").registered = true;
    s.module("gone", "1");
    s.installed("gone", "1", K1);
    s.m("gone", "1").source = None; // package removed, left registered: obsolete
    let p = s.plan(&[kernel_added(K2), headers(K2, false)]);
    assert_eq!(lines(&p), vec!["build good/1 6.1.0-47-amd64", "skip old/0.9 6.1.0-47-amd64"]);
    assert!(p.jobs.iter().all(|j| j.class == EventClass::Kernel));
    assert!(!p.jobs.iter().any(|j| j.module == "gone"), "an obsolete module never fails anything");
    assert!(!p.kernels.contains_key(K1), "the older, working kernel is not touched");
}

#[test]
fn s4_headers_reconfigure_forces_rebuild_of_autoinstall_modules_on_that_kernel_only() {
    let mut s = Sys::new(&[K1, K2]);
    s.module("a", "1");
    s.module("b", "1");
    s.module("handmade", "1");
    s.set_conf("handmade", "1", |c| c.autoinstall = Autoinstall::No);
    for k in [K1, K2] {
        s.installed("a", "1", k);
        s.installed("handmade", "1", k);
    }
    // b is AUTOINSTALL but only built, not installed, on K2: rebuilt too.
    s.m("b", "1").builds.insert((K2.into(), "x86_64".into()), Build { installed: false, built_ms: 2000 });
    let p = s.plan(&[headers(K2, true)]);
    assert_eq!(lines(&p), vec!["rebuild a/1 6.1.0-47-amd64", "rebuild b/1 6.1.0-47-amd64"]);
    assert_eq!(p.kernels.keys().collect::<Vec<_>>(), vec![K2]);
}

#[test]
fn s4_combined_upgrade_builds_each_module_once_after_everything_is_unpacked() {
    // Kernel and module upgraded in one run; the module's AUTOINSTALL changed to yes in the upgrade.
    let mut s = Sys::new(&[K1, K2]);
    s.module("m", "1");
    s.module("m", "2");
    s.set_conf("m", "1", |c| c.autoinstall = Autoinstall::No);
    s.installed("m", "1", K1);
    s.m("m", "1").source = None;
    let p = s.plan(&[headers(K1, true), kernel_added(K2), headers(K2, false), module_changed("m", "2")]);
    assert_eq!(lines(&p), vec!["replace m/2 6.1.0-40-amd64", "build m/2 6.1.0-47-amd64"]);
    assert_eq!(job(&p, "m", K1).reasons.len(), 2, "one job, both reasons: {:?}", job(&p, "m", K1).reasons);
}

#[test]
fn s5_weak_updates_satisfy_a_kernel_unless_forced_or_no_weak_modules() {
    let mut s = Sys::new(&[K1, K2]);
    s.module("kmod", "1");
    s.installed("kmod", "1", K1);
    s.m("kmod", "1").weak.insert(K2.into(), K1.into());
    s.inv.kernels.get_mut(K2).unwrap().headers = None;
    let p = s.plan(&[kernel_added(K2)]);
    assert_eq!(lines(&p), vec!["skip kmod/1 6.1.0-47-amd64"]);
    assert!(matches!(job(&p, "kmod", K2).action, Action::Skip { kind: SkipKind::Weak, .. }));
    assert!(p.kernels.is_empty(), "no depmod or initramfs for a kernel where nothing changes");

    s.inv.kernels.get_mut(K2).unwrap().headers = Some("/usr/src/h".into());
    let forced = s.plan(&[rebuild(&[K2], &["kmod"])]);
    assert_eq!(lines(&forced), vec!["build kmod/1 6.1.0-47-amd64"]);

    s.set_conf("kmod", "1", |c| c.no_weak_modules = true);
    assert_eq!(lines(&s.plan(&[kernel_added(K2)])), vec!["build kmod/1 6.1.0-47-amd64"]);

    s.set_conf("kmod", "1", |c| c.no_weak_modules = false);
    s.config.weak_updates = false;
    assert_eq!(lines(&s.plan(&[kernel_added(K2)])), vec!["build kmod/1 6.1.0-47-amd64"]);
}

#[test]
fn module_changed_with_running_and_newest_kernels() {
    let mut s = Sys::new(&[K1, K2, K3]);
    s.module("hello", "1.0");
    s.config.kernels = KernelSet::RunningAndNewest;
    s.inv.running_kernel = Some(K1.into());
    assert_eq!(
        lines(&s.plan(&[module_changed("hello", "1.0")])),
        vec!["build hello/1.0 6.1.0-40-amd64", "build hello/1.0 6.1.0-50-amd64"]
    );
    s.inv.running_kernel = None;
    assert_eq!(lines(&s.plan(&[module_changed("hello", "1.0")])), vec!["build hello/1.0 6.1.0-50-amd64"]);
}

#[test]
fn retry_failed_flag_retries_same_input_failures() {
    let mut s = two_kernels_hello();
    s.installed("hello", "1.0", K1);
    let print = s.inv.pair_print(&s.inv.modules[&("hello".into(), "1.0".into())], K2);
    s.record("hello", "1.0", K2, Outcome::Failed, print);
    assert!(s.plan(&[Intent::Rescan]).jobs.is_empty());
    assert!(s.plan(&[Intent::Rescan]).notes.iter().any(|n| n.contains("not retried")));
    assert_eq!(lines(&s.plan_with(&[Intent::Rescan], true)), vec!["build hello/1.0 6.1.0-47-amd64"]);
    // An event about the kernel itself retries.
    assert_eq!(lines(&s.plan(&[headers(K2, false)])), vec!["build hello/1.0 6.1.0-47-amd64"]);
}

#[test]
fn post_steps_only_for_changed_kernels_and_initramfs_follows_config() {
    let mut s = Sys::new(&[K1, K2]);
    s.module("hello", "1.0");
    s.installed("hello", "1.0", K1);
    s.inv.kernels.get_mut(K2).unwrap().initramfs = None;
    let p = s.plan(&[Intent::Rescan]);
    assert_eq!(p.kernels.len(), 1);
    assert_eq!(p.kernels[K2], KernelSteps { depmod: true, initramfs: false });
    s.inv.kernels.get_mut(K2).unwrap().initramfs = Some("boot/initrd.img".into());
    assert!(s.plan(&[Intent::Rescan]).kernels[K2].initramfs);
    s.config.initramfs = crate::config::InitramfsSetting::Never;
    assert!(!s.plan(&[Intent::Rescan]).kernels[K2].initramfs);
}

#[test]
fn broken_modules_are_notes_for_kernel_events_and_failures_for_their_own_change() {
    let mut s = two_kernels_hello();
    s.module("bad", "1");
    s.m("bad", "1").conf = None;
    s.m("bad", "1").broken = Some("dkms.conf: syntax error near line 3".into());
    let p = s.plan(&[kernel_added(K2)]);
    assert_eq!(lines(&p), vec!["build hello/1.0 6.1.0-47-amd64"]);
    assert!(p.notes.iter().any(|n| n.contains("bad/1 is broken") && n.contains("syntax error")), "{:?}", p.notes);
    let p = s.plan(&[module_changed("bad", "1")]);
    assert_eq!(lines(&p), vec!["fail bad/1 6.1.0-40-amd64", "fail bad/1 6.1.0-47-amd64"]);
    assert_eq!(job(&p, "bad", K1).class, EventClass::Module);
}

#[test]
fn per_kernel_conf_failure_fails_only_that_kernel() {
    let mut s = two_kernels_hello();
    s.m("hello", "1.0").conf.as_mut().unwrap().per_kernel.insert(K2.into(), Err("timed out after 10 s".into()));
    let p = s.plan(&[Intent::Rescan]);
    assert_eq!(lines(&p), vec!["build hello/1.0 6.1.0-40-amd64", "fail hello/1.0 6.1.0-47-amd64"]);
}

#[test]
fn autoinstall_other_values_follow_the_dkms_version() {
    let mut s = two_kernels_hello();
    s.set_conf("hello", "1.0", |c| c.autoinstall = Autoinstall::Other("1".into()));
    assert_eq!(s.plan(&[kernel_added(K2)]).jobs.len(), 1, "dkms 3.0.10 takes any non-empty value as yes");
    s.inv.dkms_version = Some("3.4.3".into());
    let p = s.plan(&[kernel_added(K2)]);
    assert!(p.jobs.is_empty(), "dkms 3.1.7+ accepts only yes");
    assert!(p.notes.iter().any(|n| n.contains("AUTOINSTALL=\"1\"")));
}

#[test]
fn merged_pair_takes_the_strongest_class_and_mode() {
    let mut s = two_kernels_hello();
    s.installed("hello", "1.0", K2);
    let p = s.plan(&[kernel_added(K2), rebuild(&[K2], &["hello"])]);
    let j = job(&p, "hello", K2);
    assert_eq!(j.action, Action::Rebuild);
    assert_eq!(j.class, EventClass::Module);
    assert_eq!(j.intents, vec![0, 1], "both intents are satisfied by the one job");
}

#[test]
fn plan_renders_grouped_by_kernel_with_reasons() {
    let mut s = two_kernels_hello();
    s.exclude_on("hello", "1.0", K1);
    let text = s.plan(&[Intent::Rescan]).to_string();
    assert!(
        text.contains(
            "kernel 6.1.0-40-amd64 (x86_64):\n  skip    hello/1.0  unsupported: BUILD_EXCLUSIVE_KERNEL does not match"
        ),
        "{text}"
    );
    assert!(
        text.contains("kernel 6.1.0-47-amd64 (x86_64):\n  build   hello/1.0  rescan\n  then: depmod, initramfs"),
        "{text}"
    );
}

#[test]
fn retry_failed_retries_every_failure_even_with_no_pending_intent() {
    let mut s = two_kernels_hello();
    s.installed("hello", "1.0", K1);
    let print = s.inv.pair_print(&s.inv.modules[&("hello".into(), "1.0".into())], K2);
    s.record("hello", "1.0", K2, Outcome::Failed, print);
    assert!(s.plan(&[]).jobs.is_empty(), "a failure of the module's own is not retried by itself");
    let p = s.plan_with(&[], true);
    assert_eq!(lines(&p), vec!["build hello/1.0 6.1.0-47-amd64"]);
    assert_eq!(p.jobs[0].class, EventClass::Module, "asked for by the administrator: a failure is an error");
}

#[test]
fn a_failed_rebuild_with_the_previous_build_kept_is_rebuilt_on_retry() {
    let mut s = two_kernels_hello();
    s.installed("hello", "1.0", K2);
    let print = s.inv.pair_print(&s.inv.modules[&("hello".into(), "1.0".into())], K2);
    s.record("hello", "1.0", K2, Outcome::Failed, print);
    assert!(s.plan(&[headers(K1, false)]).jobs.iter().all(|j| j.kernel != K2));
    assert_eq!(lines(&s.plan_with(&[], true)), vec!["rebuild hello/1.0 6.1.0-47-amd64"]);
}

#[test]
fn failures_that_were_not_the_modules_are_retried_by_the_next_finalize_by_themselves() {
    let mut s = two_kernels_hello();
    s.installed("hello", "1.0", K1);
    let print = s.inv.pair_print(&s.inv.modules[&("hello".into(), "1.0".into())], K2);
    s.record("hello", "1.0", K2, Outcome::Failed, print);
    let key = PairKey { module: "hello".into(), version: "1.0".into(), kernel: K2.into(), arch: "x86_64".into() };
    s.state.pairs.get_mut(&key).unwrap().transient = true;
    let p = s.plan(&[]);
    assert_eq!(lines(&p), vec!["build hello/1.0 6.1.0-47-amd64"]);
    assert_eq!(p.jobs[0].class, EventClass::Kernel, "an automatic retry only warns when it fails again");
    assert!(p.jobs[0].reasons.iter().any(|r| r.contains("not the module's")), "{:?}", p.jobs[0].reasons);
    // A rescan, which would skip a same-input failure, retries it too.
    assert_eq!(lines(&s.plan(&[Intent::Rescan])), vec!["build hello/1.0 6.1.0-47-amd64"]);
    // Only in a finalize's first round: later rounds do not retry it again.
    let later = plan(&Input {
        intents: &[],
        inventory: &s.inv,
        state: &s.state,
        config: &s.config,
        retry_failed: false,
        revisit: false,
    });
    assert!(later.jobs.is_empty());
}

#[test]
fn a_failure_ahead_of_the_transactions_end_is_reported_not_built_again_unless_its_inputs_change() {
    let key = PairKey { module: "hello".into(), version: "1.0".into(), kernel: K2.into(), arch: "x86_64".into() };
    let early_failure = |s: &mut Sys| {
        let print = s.inv.pair_print(&s.inv.modules[&("hello".into(), "1.0".into())], K2);
        s.record("hello", "1.0", K2, Outcome::Failed, print);
        s.state.pairs.get_mut(&key).unwrap().early = true;
    };
    let intents = [Intent::KernelAdded { kernel: K2.into() }, headers(K2, false)];
    // Same inputs: one job, a failure decided by the planner, under the event's own class.
    let mut s = two_kernels_hello();
    early_failure(&mut s);
    let p = s.plan(&intents);
    assert_eq!(p.jobs.len(), 1, "{:?}", lines(&p));
    match &p.jobs[0].action {
        Action::Fail { reason } => {
            assert!(reason.contains("make failed") && reason.contains("not built again"), "{reason}")
        }
        a => panic!("carried as a failure, not {a:?}"),
    }
    assert_eq!(p.jobs[0].class, EventClass::Kernel);
    // A module event keeps its class, so that its failure policy (error) applies.
    let p = s.plan(&[module_changed("hello", "1.0")]);
    let j = p.jobs.iter().find(|j| j.kernel == K2).unwrap();
    assert!(matches!(j.action, Action::Fail { .. }) && j.class == EventClass::Module, "{:?}", lines(&p));
    // Inputs changed since (a compiler unpacked after the attempt): built again.
    let mut s = two_kernels_hello();
    early_failure(&mut s);
    s.inv.kernels.get_mut(K2).unwrap().print.parts.insert("compiler".into(), "gcc13".into());
    assert_eq!(lines(&s.plan(&intents)), vec!["build hello/1.0 6.1.0-47-amd64"]);
    // --retry-failed builds it again.
    let mut s = two_kernels_hello();
    early_failure(&mut s);
    assert_eq!(lines(&s.plan_with(&intents, true)), vec!["build hello/1.0 6.1.0-47-amd64"]);
    // Cut short (a timeout, a signal): transient, built again.
    let mut s = two_kernels_hello();
    early_failure(&mut s);
    s.state.pairs.get_mut(&key).unwrap().transient = true;
    assert_eq!(lines(&s.plan(&intents)), vec!["build hello/1.0 6.1.0-47-amd64"]);
}
