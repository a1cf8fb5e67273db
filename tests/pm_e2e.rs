//! Real package-manager tests: the rpm package (rpm/dkms-trigger.spec, hooks/rpm/) under the real
//! `rpm`, and the pacman package (hooks/arch/, arch/dkms-trigger.install) under the real `pacman`,
//! each installing real packages into a Debian test root in which the scriptlets and hooks run
//! dkms-trigger, the real dkms and gcc chrooted, against real kernel header trees. Every scenario
//! runs on two roots: Debian 12 (dkms 3.0.10) and Debian 13 (dkms 3.2, the family Fedora and Arch
//! ship; see docs/dkms-behaviour.md), with the two newest kernel ABIs of each release.
//!
//! One prepared root per package manager and release (tests/pm/base.sh SUITE, overlaid by
//! tests/pm/enter.sh in private namespaces; nothing is mounted or installed on the host's /), the
//! scenarios run in sequence on it (tests/pm/step.sh), each a real transaction:
//!
//! | step | transaction | expected |
//! |---|---|---|
//! | setup | stand-ins of the stock dkms hooks and of dracut (rpm) or mkinitcpio (pacman), headers of K1, then dkms-trigger | stock hooks masked; dkms-trigger.service enabled by its preset (rpm), packaged and not enabled, the enable step printed (pacman) |
//! | a | headers of K2 + pmalpha + pmbeta (BUILD_DEPENDS=pmalpha) | one finalize; each pair built once, pmalpha first; both modules on K1 and K2 |
//! | b | reinstall (rpm) / same-KVER upgrade (pacman) of K2's headers | forced rebuild on K2 only |
//! | c | erase pmbeta | its builds gone, one depmod per kernel |
//! | d | pmbroken (fails to compile) | rpm/pacman exit 0, failure in `dkms-trigger status` |
//! | e (rpm) | kernel-core of K2 whose %posttrans runs the real kernel-install | modules in place before 50-dracut.install runs; one initramfs generation for K2 (stand-in dracut), with them |
//! | e-reinstall (rpm) | reinstall of that kernel-core (%preun `kernel-install remove`, %posttrans `add`; K2 has an image now) | the same: modules rebuilt before the one generation |
//! | e-remove (rpm) | erase of kernel-core (`kernel-install remove`) | K2's modules removed |
//! | e (pacman) | kernel package of K2 (its vmlinuz and modules.order) | modules built by the finalize hook before the stand-in 90-mkinitcpio-install.hook's one generation for K2 |
//! | g | pmalpha 1.0 -> 1.1 | old version removed, new one built |
//! | f | erase dkms-trigger | masks gone, modules stay; (rpm) the unit and its wants symlink gone |
//!
//! Needs root and a network path to the Debian mirrors (the first run builds the cached root). The
//! packages it needs on the host (rpm, pacman, mmdebstrap...) are installed by
//! `tests/setup/install-deps.sh --rpm --pacman --chroot`, which these tests run first. They fail,
//! never skip, when something is missing. `DKMS_TRIGGER_PM_KEEP=1` keeps the work directories
//! (/var/tmp/dkms-trigger-pm-*: packages, the root's overlay upper dir, each step's outputs).
//! Runtime: about 1 min per package manager and release (two run in parallel), plus about a minute
//! once per release for the cached root (/var/cache/dkms-trigger-tests/pm-root-SUITE-*), which is
//! made from the Debian package tests' base of the same release (tests/deb/base.sh, rebuilt
//! weekly; built here first when the cache has none).
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{count_builds, BuildRecord, Module, PACKAGE_BIN};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

const CHECKOUT: &str = env!("CARGO_MANIFEST_DIR");
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs a host command with a clean environment; panics with its output unless it succeeds.
fn run_ok(argv: &[&str]) -> String {
    let t = Instant::now();
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        // The cache and mirror settings of tests/pm/base.sh (DKMS_TRIGGER_TEST_CACHE...).
        .envs(std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("DKMS_TRIGGER_TEST_")))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("pm_e2e: {} took {:.1}s", argv.join(" "), t.elapsed().as_secs_f64());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host packages, once per test binary (both tests would otherwise race for apt's lock).
fn host_deps() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        assert!(nix::unistd::geteuid().is_root(), "the package-manager tests need root");
        run_ok(&[&format!("{CHECKOUT}/tests/setup/install-deps.sh"), "--rpm", "--pacman", "--chroot"]);
        for tool in ["rpm", "rpmbuild", "pacman", "mmdebstrap", "zstd", "unshare", "chroot", "make", "systemctl"] {
            run_ok(&["sh", "-c", &format!("command -v {tool}")]);
        }
    });
}

/// The cached Debian root of release `suite` (tests/pm/base.sh), built once per test binary.
fn base_root(suite: &str) -> PathBuf {
    static BASE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held while building: base.sh serialises builds anyway (one lock for the cache directory).
    let mut roots = BASE.lock().unwrap_or_else(|e| e.into_inner());
    roots
        .entry(suite.to_string())
        .or_insert_with(|| {
            let out = run_ok(&[&format!("{CHECKOUT}/tests/pm/base.sh"), suite]);
            let p = PathBuf::from(out.trim());
            assert!(p.join("opt/pm-fixtures/kernels").is_file(), "{suite}: base root {p:?} is incomplete");
            p
        })
        .clone()
}

/// One package manager's test root, its packages and the results of its steps.
struct Env {
    /// "rpm on trixie": every message says which package manager and release.
    pm: String,
    /// Removed with the Env, unless DKMS_TRIGGER_PM_KEEP is set (to look at a failed run).
    _tmp: Option<tempfile::TempDir>,
    work: PathBuf,
    k1: String,
    k2: String,
    steps: Vec<Step>,
}

/// What one step left: exit status of its script, output, and the counters of the root (all
/// cumulative since the root was made; [`Env::since`] gives the part of the last step).
#[derive(Debug, Default, Clone)]
struct Step {
    /// The Env's "rpm on trixie".
    pm: String,
    name: String,
    rc: i32,
    output: String,
    status: Value,
    builds: Vec<BuildRecord>,
    dkms_calls: Vec<String>,
    depmod_calls: Vec<String>,
    stock: Vec<String>,
    /// The stand-in dracut plugin's and dracut's lines (tests/pm/fixtures.sh).
    dracut: Vec<String>,
    /// The stand-in mkinitcpio's lines.
    mkinitcpio: Vec<String>,
    runs: Vec<String>,
    facts: BTreeMap<String, String>,
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default()
}

impl Env {
    fn new(pm: &'static str, suite: &str) -> Env {
        host_deps();
        let base = base_root(suite);
        let tmp =
            tempfile::Builder::new().prefix(&format!("dkms-trigger-pm-{pm}-{suite}-")).tempdir_in("/var/tmp").unwrap();
        let work = tmp.path().to_path_buf();
        let tmp = if std::env::var_os("DKMS_TRIGGER_PM_KEEP").is_some() {
            eprintln!("pm_e2e: {pm}: keeping {}", tmp.keep().display());
            None
        } else {
            Some(tmp)
        };
        std::fs::write(work.join("base-path"), base.to_string_lossy().as_bytes()).unwrap();
        let kernels = std::fs::read_to_string(base.join("opt/pm-fixtures/kernels")).unwrap();
        let ks: Vec<&str> = kernels.split_whitespace().collect();
        assert_eq!(ks.len(), 2, "kernels of the base root: {kernels:?}");
        for m in [
            Module::new("pmalpha"),
            Module::new("pmalpha").version("1.1"),
            Module::new("pmbeta").build_depends("pmalpha"),
            Module::new("pmbroken").fail_compile(),
        ] {
            m.write_at(&work.join(format!("src/{}-{}", m.name(), m.ver())));
        }
        let w = work.to_string_lossy().into_owned();
        run_ok(&[&format!("{CHECKOUT}/tests/pm/fixtures.sh"), pm, &w, PACKAGE_BIN, CHECKOUT]);
        eprintln!("pm_e2e: {pm} on {suite}: kernels {} {}", ks[0], ks[1]);
        Env {
            pm: format!("{pm} on {suite}"),
            _tmp: tmp,
            work,
            k1: ks[0].to_string(),
            k2: ks[1].to_string(),
            steps: Vec::new(),
        }
    }

    /// Runs one step script in the root and returns what it left.
    fn step(&mut self, name: &str, script: &str) -> Step {
        let t = Instant::now();
        let out = Command::new(format!("{CHECKOUT}/tests/pm/step.sh"))
            .args([self.work.to_str().unwrap(), name, script])
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap();
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("pm_e2e: {} step {name} took {:.1}s", self.pm, t.elapsed().as_secs_f64());
        assert!(out.status.success(), "{} step {name}: step.sh failed:\n{output}", self.pm);
        let dir = self.work.join("out").join(name);
        let rc = std::fs::read_to_string(dir.join("rc")).unwrap().trim().parse().unwrap();
        let status = std::fs::read_to_string(dir.join("status.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        let facts = lines(&dir.join("facts"))
            .iter()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let s = Step {
            name: name.to_string(),
            rc,
            output,
            status,
            builds: BuildRecord::parse_log(&std::fs::read_to_string(dir.join("builds.log")).unwrap_or_default()),
            dkms_calls: lines(&dir.join("dkms.log")),
            depmod_calls: lines(&dir.join("depmod.log")),
            stock: lines(&dir.join("stock.log")),
            dracut: lines(&dir.join("dracut.log")),
            mkinitcpio: lines(&dir.join("mkinitcpio.log")),
            runs: lines(&dir.join("runs")),
            facts,
            pm: self.pm.clone(),
        };
        self.steps.push(s.clone());
        s
    }

    /// The counters of the last step minus those of the step before it.
    fn since(&self) -> Step {
        let last = self.steps.last().unwrap();
        let prev = if self.steps.len() > 1 { self.steps[self.steps.len() - 2].clone() } else { Step::default() };
        let tail = |a: &Vec<String>, b: &Vec<String>| a[b.len().min(a.len())..].to_vec();
        Step {
            builds: last.builds[prev.builds.len().min(last.builds.len())..].to_vec(),
            dkms_calls: tail(&last.dkms_calls, &prev.dkms_calls),
            depmod_calls: tail(&last.depmod_calls, &prev.depmod_calls),
            stock: tail(&last.stock, &prev.stock),
            dracut: tail(&last.dracut, &prev.dracut),
            mkinitcpio: tail(&last.mkinitcpio, &prev.mkinitcpio),
            runs: last.runs.iter().filter(|r| !prev.runs.contains(r)).cloned().collect(),
            ..last.clone()
        }
    }

    fn k(&self) -> [&str; 2] {
        [&self.k1, &self.k2]
    }

    /// A package file name, by prefix, in WORK/pkgs.
    fn pkg(&self, prefix: &str) -> String {
        let mut found: Vec<String> = std::fs::read_dir(self.work.join("pkgs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix) && (n.ends_with(".rpm") || n.ends_with(".pkg.tar.zst")))
            .collect();
        assert_eq!(found.len(), 1, "packages starting with {prefix}: {found:?}");
        format!("$P/{}", found.pop().unwrap())
    }
}

/// The status cell of (module, kernel): "installed", "failed", "-"... ("" when the module has no row).
fn cell(status: &Value, module: &str, kernel: &str) -> (String, String) {
    let rows = status["modules"].as_array().cloned().unwrap_or_default();
    for r in rows {
        if r["module"] == module {
            for p in r["pairs"].as_array().cloned().unwrap_or_default() {
                if p["kernel"] == kernel {
                    return (
                        p["cell"].as_str().unwrap_or("").to_string(),
                        p["version"].as_str().unwrap_or("").to_string(),
                    );
                }
            }
        }
    }
    (String::new(), String::new())
}

fn ctx(s: &Step) -> String {
    format!(
        "{} step {} (rc {}):\n--- output\n{}\n--- status\n{:#}\n--- builds {:?}\n--- dkms {:#?}\n--- depmod {:#?}\n--- runs {:?}\n--- facts {:?}\n--- dracut {:#?}\n--- mkinitcpio {:#?}",
        s.pm,
        s.name,
        s.rc,
        s.output,
        s.status,
        s.builds,
        s.dkms_calls,
        s.depmod_calls,
        s.runs,
        s.facts,
        s.dracut,
        s.mkinitcpio
    )
}

// ---- checks shared by rpm and pacman -----------------------------------------------------------

/// a: one finalize built pmalpha then pmbeta, once each, for both kernels; nothing else ran dkms.
fn check_one_transaction(env: &Env) {
    let s = env.since();
    let c = ctx(&s);
    assert_eq!(s.rc, 0, "{c}");
    assert_eq!(s.runs.len(), 1, "exactly one finalizer run did work: {c}");
    for k in env.k() {
        assert_eq!(count_builds(&s.builds, "pmalpha", k), 1, "pmalpha on {k}: {c}");
        assert_eq!(count_builds(&s.builds, "pmbeta", k), 1, "pmbeta on {k}: {c}");
        let a = s.builds.iter().find(|b| b.module == "pmalpha" && b.kernel == k).unwrap();
        let b = s.builds.iter().find(|b| b.module == "pmbeta" && b.kernel == k).unwrap();
        assert!(a.end.is_some_and(|e| e <= b.start), "pmalpha built before pmbeta (BUILD_DEPENDS) on {k}: {c}");
        assert_eq!(cell(&s.status, "pmalpha", k).0, "installed", "{c}");
        assert_eq!(cell(&s.status, "pmbeta", k).0, "installed", "{c}");
    }
    assert_eq!(s.builds.len(), 4, "nothing else built anything (module scriptlets, stock hooks): {c}");
    no_autoinstall(&s);
    assert!(s.stock.is_empty(), "the stock dkms hooks are masked: {c}");
}

/// The initramfs generations for `kernel` among a stand-in tool's log lines (`tool` is the program
/// name each generation's line starts with: "dracut", "mkinitcpio"; tests/pm/fixtures.sh): a
/// kernel version is a whole word of the line (`--kver K`, `-k K`) or in the image's name.
fn generations(log: &[String], tool: &str, kernel: &str) -> Vec<String> {
    let image = format!("initramfs-{kernel}.img");
    log.iter()
        .filter(|l| l.split_whitespace().next() == Some(tool))
        .filter(|l| l.split_whitespace().any(|w| w == kernel || w.ends_with(&image)))
        .cloned()
        .collect()
}

/// Exactly one initramfs generation for `kernel` in the last step, and the DKMS module pmalpha was
/// installed for it at that moment.
fn one_generation_with_module(s: &Step, log: &[String], tool: &str, kernel: &str) {
    let g = generations(log, tool, kernel);
    assert_eq!(g.len(), 1, "exactly one initramfs generation ({tool}) for {kernel}, got {g:?}: {}", ctx(s));
    assert!(g[0].ends_with(" pmalpha=yes"), "pmalpha was installed for {kernel} when {tool} ran: {g:?}: {}", ctx(s));
}

/// dkms-trigger never ran `dkms autoinstall` (its dkms calls are logged in the root).
fn no_autoinstall(s: &Step) {
    assert!(!s.dkms_calls.iter().any(|c| c.contains("autoinstall")), "dkms autoinstall ran: {}", ctx(s));
}

/// b: both modules rebuilt on K2 by force, nothing on K1.
fn check_forced_rebuild(env: &Env) {
    let s = env.since();
    let c = ctx(&s);
    assert_eq!(s.rc, 0, "{c}");
    assert_eq!(count_builds(&s.builds, "pmalpha", &env.k2), 1, "{c}");
    assert_eq!(count_builds(&s.builds, "pmbeta", &env.k2), 1, "{c}");
    assert_eq!(count_builds(&s.builds, "pmalpha", &env.k1) + count_builds(&s.builds, "pmbeta", &env.k1), 0, "{c}");
    assert_eq!(s.runs.len(), 1, "{c}");
    for k in env.k() {
        assert_eq!(cell(&s.status, "pmalpha", k).0, "installed", "{c}");
        assert_eq!(cell(&s.status, "pmbeta", k).0, "installed", "{c}");
    }
    no_autoinstall(&s);
    assert!(s.stock.is_empty(), "{c}");
}

/// c: pmbeta's builds and registration gone, one depmod per kernel, pmalpha untouched.
fn check_module_erased(env: &Env) {
    let s = env.since();
    let c = ctx(&s);
    assert_eq!(s.rc, 0, "{c}");
    assert!(s.builds.is_empty(), "{c}");
    for k in env.k() {
        let (cell_b, _) = cell(&s.status, "pmbeta", k);
        assert!(cell_b.is_empty() || cell_b == "-", "pmbeta on {k} is {cell_b:?}: {c}");
        assert_eq!(cell(&s.status, "pmalpha", k).0, "installed", "{c}");
        assert_eq!(s.facts.get(&format!("pmbeta_ko_{k}")).map(String::as_str), Some("no"), "{c}");
        let n = s.depmod_calls.iter().filter(|l| l.split_whitespace().any(|w| w == k)).count();
        assert_eq!(n, 1, "depmod runs for {k}: {c}");
    }
    assert_eq!(s.depmod_calls.len(), 2, "{c}");
    assert_eq!(s.facts.get("pmbeta_registered").map(String::as_str), Some("no"), "{c}");
    no_autoinstall(&s);
}

/// d: the package manager succeeded, the failure is in the status for both kernels.
fn check_failed_module(env: &Env) {
    let s = env.since();
    let c = ctx(&s);
    assert_eq!(s.rc, 0, "the transaction is not failed by a module: {c}");
    for k in env.k() {
        assert_eq!(cell(&s.status, "pmbroken", k).0, "failed", "{c}");
        assert_eq!(cell(&s.status, "pmalpha", k).0, "installed", "{c}");
    }
    // The finalizer's own line for each pair (rpm's and pacman's progress lines name pmbroken-dkms
    // too, so the module's name alone would prove nothing).
    for k in env.k() {
        let said = format!("pmbroken/1.0 failed for {k}: ");
        assert!(
            s.output.lines().any(|l| l.contains(&said) && l.contains("log: /var/log/dkms-trigger/")),
            "the failure on {k} is reported in the transaction's output: {c}"
        );
    }
    no_autoinstall(&s);
}

/// g: pmalpha 1.0 -> 1.1: the old version unregistered, the new one built and installed.
fn check_module_upgrade(env: &Env) {
    let s = env.since();
    let c = ctx(&s);
    assert_eq!(s.rc, 0, "{c}");
    for k in env.k() {
        assert_eq!(cell(&s.status, "pmalpha", k), ("installed".to_string(), "1.1".to_string()), "{c}");
        assert_eq!(count_builds(&s.builds, "pmalpha", k), 1, "{c}");
    }
    assert_eq!(s.facts.get("pmalpha_1.0_registered").map(String::as_str), Some("no"), "{c}");
    no_autoinstall(&s);
}

const PROBE_C: &str = r#"
for k in $K1 $K2; do
    if ls $ROOT/lib/modules/$k/updates/dkms/pmbeta.ko* >/dev/null 2>&1; then fact pmbeta_ko_$k yes; else fact pmbeta_ko_$k no; fi
    if ls $ROOT/lib/modules/$k/updates/dkms/pmalpha.ko* >/dev/null 2>&1; then fact pmalpha_ko_$k yes; else fact pmalpha_ko_$k no; fi
done
if [ -e $ROOT/var/lib/dkms/pmbeta ]; then fact pmbeta_registered yes; else fact pmbeta_registered no; fi
if [ -e $ROOT/var/lib/dkms/pmalpha/1.0 ]; then fact pmalpha_1.0_registered yes; else fact pmalpha_1.0_registered no; fi
"#;

fn with_probe(env: &Env, script: &str) -> String {
    format!("K1={} K2={}\n{script}\n{PROBE_C}", env.k1, env.k2)
}

#[test]
fn rpm_transactions_bookworm() {
    rpm_transactions("bookworm");
}

#[test]
fn rpm_transactions_trixie() {
    rpm_transactions("trixie");
}

#[test]
fn pacman_transactions_bookworm() {
    pacman_transactions("bookworm");
}

#[test]
fn pacman_transactions_trixie() {
    pacman_transactions("trixie");
}

fn rpm_transactions(suite: &str) {
    let started = Instant::now();
    let mut env = Env::new("rpm", suite);
    let (k1u, k2u) = (env.k1.replace('-', "_"), env.k2.replace('-', "_"));

    // setup: the stand-ins of Fedora's dkms and dracut plugins, the headers of K1, then dkms-trigger.
    let script = format!(
        "instrument
rpm_ -i {} {} {}
rpm_ -i {}
fact mask_plugin \"$(readlink $ROOT/etc/kernel/install.d/40-dkms.install)\"
if [ -f $ROOT/etc/dkms/no-autoinstall ]; then fact mask_autoinstall yes; fi
fact masks_recorded \"$(tr '\\n' ' ' <$ROOT/var/lib/dkms-trigger/package-masks)\"
fact unit_exec \"$(sed -n 's/^ExecStart=//p' $ROOT/usr/lib/systemd/system/dkms-trigger.service)\"
fact preset \"$(cat $ROOT/usr/lib/systemd/system-preset/80-dkms-trigger.preset | grep -v '^#')\"
fact unit_wants \"$(readlink $ROOT/etc/systemd/system/multi-user.target.wants/dkms-trigger.service)\"
fact unit_enabled \"$(systemctl --root=$ROOT is-enabled dkms-trigger.service 2>&1)\"",
        env.pkg("pmtest-dkms-plugin"),
        env.pkg("pmtest-dracut"),
        env.pkg(&format!("pmtest-kernel-devel-{k1u}")),
        env.pkg("dkms-trigger-"),
    );
    let s = env.step("setup", &script);
    assert_eq!(s.rc, 0, "{}", ctx(&s));
    assert_eq!(s.facts.get("mask_plugin").map(String::as_str), Some("/dev/null"), "{}", ctx(&s));
    assert_eq!(s.facts.get("mask_autoinstall").map(String::as_str), Some("yes"), "{}", ctx(&s));
    // The boot catch-up unit and its preset, applied by %systemd_post: enabled, not started.
    let fact = |k: &str| s.facts.get(k).cloned().unwrap_or_default();
    assert_eq!(fact("unit_exec"), "/usr/sbin/dkms-trigger boot", "{}", ctx(&s));
    assert_eq!(fact("preset"), "enable dkms-trigger.service", "{}", ctx(&s));
    // Debian 12's systemctl names the unit by its first search path, /lib (the same file on a
    // merged-/usr root); Debian 13's by /usr/lib.
    assert!(
        ["/usr/lib/systemd/system/dkms-trigger.service", "/lib/systemd/system/dkms-trigger.service"]
            .contains(&fact("unit_wants").as_str()),
        "{}",
        ctx(&s)
    );
    assert_eq!(fact("unit_enabled"), "enabled", "{}", ctx(&s));

    // a. one transaction: headers of K2 and two modules, pmbeta depending on pmalpha.
    let script = with_probe(
        &env,
        &format!(
            "rpm_ -ivh {} {} {}",
            env.pkg(&format!("pmtest-kernel-devel-{k2u}")),
            env.pkg("pmalpha-dkms-1.0"),
            env.pkg("pmbeta-dkms-1.0")
        ),
    );
    env.step("a", &script);
    check_one_transaction(&env);
    let s = env.since();
    assert!(
        s.output.contains("autoinstall for dkms modules has been disabled"),
        "the module packages' common.postinst was neutralised: {}",
        ctx(&s)
    );

    // b. reinstall of K2's headers (same kernel version): forced rebuild on K2 only.
    let script = with_probe(&env, &format!("rpm_ -v --reinstall {}", env.pkg(&format!("pmtest-kernel-devel-{k2u}"))));
    env.step("b", &script);
    check_forced_rebuild(&env);

    // c. erase pmbeta.
    env.step("c", &with_probe(&env, "rpm_ -ev pmbeta-dkms"));
    check_module_erased(&env);

    // d. a module that fails to compile.
    env.step("d", &with_probe(&env, &format!("rpm_ -ivh {}", env.pkg("pmbroken-dkms"))));
    check_failed_module(&env);

    // e. kernel-install: Fedora's kernel-core runs `kernel-install add` from %posttrans. The
    // kernel's builds are removed first, so that the plugin has something to build.
    let script = with_probe(
        &env,
        &format!(
            "inroot dkms-trigger remove-kernel $K2
rpm_ -ivh {}",
            env.pkg("pmtest-kernel-core")
        ),
    );
    let s = env.step("e", &script);
    let d = env.since();
    let c = ctx(&d);
    assert_eq!(s.rc, 0, "{c}");
    assert_eq!(
        d.dracut.iter().filter(|l| l.starts_with("50-dracut.install ")).cloned().collect::<Vec<_>>(),
        vec![format!("50-dracut.install add {} pmalpha=yes", env.k2)],
        "pmalpha was installed for K2 before the initramfs plugin ran: {c}"
    );
    // The plugin's dracut made K2's image, once: dkms-trigger left it to the plugin (it would
    // otherwise run its own `dracut --force --kver K2` when K2 has an image).
    one_generation_with_module(&d, &d.dracut, "dracut", &env.k2);
    assert_eq!(generations(&d.dracut, "dracut", &env.k1), Vec::<String>::new(), "{c}");
    assert!(d.stock.is_empty(), "40-dkms.install is masked: {c}");
    assert_eq!(count_builds(&d.builds, "pmalpha", &env.k2), 1, "{c}");
    assert_eq!(count_builds(&d.builds, "pmalpha", &env.k1), 0, "{c}");
    assert_eq!(cell(&d.status, "pmalpha", &env.k2).0, "installed", "{c}");
    no_autoinstall(&d);
    // ... a reinstall of kernel-core (`dnf reinstall`): the old package's %preun `kernel-install
    // remove` removes K2's builds, the new one's %posttrans `kernel-install add` builds them again,
    // now that K2 has an image (the %ghost that the plugin made): still one generation, with them.
    let s =
        env.step("e-reinstall", &with_probe(&env, &format!("rpm_ -v --reinstall {}", env.pkg("pmtest-kernel-core"))));
    let d = env.since();
    let c = ctx(&d);
    assert_eq!(s.rc, 0, "{c}");
    one_generation_with_module(&d, &d.dracut, "dracut", &env.k2);
    assert_eq!(generations(&d.dracut, "dracut", &env.k1), Vec::<String>::new(), "{c}");
    assert_eq!(count_builds(&d.builds, "pmalpha", &env.k2), 1, "{c}");
    assert_eq!(cell(&d.status, "pmalpha", &env.k2).0, "installed", "{c}");
    no_autoinstall(&d);
    // ... and `kernel-install remove` (kernel-core's %preun) removes them.
    let s = env.step("e-remove", &with_probe(&env, "rpm_ -ev pmtest-kernel-core"));
    let c = ctx(&s);
    assert_eq!(s.rc, 0, "{c}");
    assert_eq!(s.facts.get(&format!("pmalpha_ko_{}", env.k2)).map(String::as_str), Some("no"), "{c}");
    assert_eq!(s.facts.get(&format!("pmalpha_ko_{}", env.k1)).map(String::as_str), Some("yes"), "{c}");

    // g. a module upgrade to a new version.
    env.step("g", &with_probe(&env, &format!("rpm_ -Uvh {}", env.pkg("pmalpha-dkms-1.1"))));
    check_module_upgrade(&env);

    // f. erasing dkms-trigger restores the stock hooks and leaves the modules alone.
    let script = with_probe(
        &env,
        "rpm_ -ev dkms-trigger
if [ -e $ROOT/etc/kernel/install.d/40-dkms.install ] || [ -L $ROOT/etc/kernel/install.d/40-dkms.install ]; then fact mask_plugin present; else fact mask_plugin gone; fi
if [ -e $ROOT/etc/dkms/no-autoinstall ]; then fact mask_autoinstall present; else fact mask_autoinstall gone; fi
if [ -e $ROOT/usr/lib/systemd/system/dkms-trigger.service ] || [ -L $ROOT/etc/systemd/system/multi-user.target.wants/dkms-trigger.service ]; then fact unit present; else fact unit gone; fi",
    );
    let s = env.step("f", &script);
    let c = ctx(&s);
    assert_eq!(s.rc, 0, "{c}");
    assert_eq!(s.facts.get("mask_plugin").map(String::as_str), Some("gone"), "{c}");
    assert_eq!(s.facts.get("mask_autoinstall").map(String::as_str), Some("gone"), "{c}");
    assert_eq!(s.facts.get("unit").map(String::as_str), Some("gone"), "unit file and wants symlink: {c}");
    assert_eq!(s.facts.get(&format!("pmalpha_ko_{}", env.k1)).map(String::as_str), Some("yes"), "{c}");
    assert_eq!(s.facts.get("pmalpha_1.0_registered").map(String::as_str), Some("no"), "{c}");
    eprintln!("pm_e2e: {} total {:.1}s", env.pm, started.elapsed().as_secs_f64());
}

fn pacman_transactions(suite: &str) {
    let started = Instant::now();
    let mut env = Env::new("pacman", suite);
    let (k1, k2) = (env.k1.clone(), env.k2.clone());

    // setup: the stand-ins of Arch's dkms hooks, the headers of K1, then dkms-trigger.
    let script = format!(
        "instrument
mkdir -p $ROOT/var/lib/pacman
pacman_ -U {} {} {}
pacman_ -U {}
for h in 70-dkms-install 70-dkms-upgrade 71-dkms-remove; do
    fact mask_$h \"$(readlink $ROOT/etc/pacman.d/hooks/$h.hook)\"
done
fact unit_exec \"$(sed -n 's/^ExecStart=//p' $ROOT/usr/lib/systemd/system/dkms-trigger.service)\"
fact unit_enabled \"$(systemctl --root=$ROOT is-enabled dkms-trigger.service 2>&1)\"",
        env.pkg("pmtest-dkms-hooks"),
        env.pkg("pmtest-mkinitcpio"),
        env.pkg(&format!("pmtest-headers-{k1}-1-1")),
        env.pkg("dkms-trigger-"),
    );
    let s = env.step("setup", &script);
    let c = ctx(&s);
    assert_eq!(s.rc, 0, "{c}");
    for h in ["70-dkms-install", "70-dkms-upgrade", "71-dkms-remove"] {
        assert_eq!(s.facts.get(&format!("mask_{h}")).map(String::as_str), Some("/dev/null"), "{c}");
    }
    // The boot catch-up unit is packaged, not enabled (Arch's way); post_install says how.
    assert_eq!(s.facts.get("unit_exec").map(String::as_str), Some("/usr/bin/dkms-trigger boot"), "{c}");
    assert_eq!(s.facts.get("unit_enabled").map(String::as_str), Some("disabled"), "{c}");
    assert!(s.output.contains("systemctl enable dkms-trigger.service"), "the enable step is printed: {c}");
    // The stand-ins did run for K1's headers, before dkms-trigger was there: they work.
    assert!(s.stock.iter().any(|l| l == "70-dkms-install"), "{c}");

    // a. one transaction: headers of K2 and two modules, pmbeta depending on pmalpha.
    let script = with_probe(
        &env,
        &format!(
            "pacman_ -U {} {} {}",
            env.pkg(&format!("pmtest-headers-{k2}-1-1")),
            env.pkg("pmalpha-dkms-1.0"),
            env.pkg("pmbeta-dkms-1.0")
        ),
    );
    env.step("a", &script);
    check_one_transaction(&env);

    // b. upgrade of K2's headers to a new release with the same kernel version.
    env.step("b", &with_probe(&env, &format!("pacman_ -U {}", env.pkg(&format!("pmtest-headers-{k2}-1-2")))));
    check_forced_rebuild(&env);

    // c. remove pmbeta.
    env.step("c", &with_probe(&env, "pacman_ -R pmbeta-dkms"));
    check_module_erased(&env);

    // d. a module that fails to compile.
    env.step("d", &with_probe(&env, &format!("pacman_ -U {}", env.pkg("pmbroken-dkms"))));
    check_failed_module(&env);

    // e. a new kernel: Arch's linux package of K2 (its headers are installed). K2's builds are
    // removed first, so that the finalize hook has something to build; mkinitcpio's hook (90, after
    // our 72) makes K2's image once, with the modules in place. dkms-trigger makes no image itself.
    let script = with_probe(
        &env,
        &format!(
            "inroot dkms-trigger remove-kernel $K2
pacman_ -U {}",
            env.pkg(&format!("pmtest-linux-{k2}"))
        ),
    );
    let s = env.step("e", &script);
    let d = env.since();
    let c = ctx(&d);
    assert_eq!(s.rc, 0, "{c}");
    one_generation_with_module(&d, &d.mkinitcpio, "mkinitcpio", &k2);
    assert_eq!(generations(&d.mkinitcpio, "mkinitcpio", &k1), Vec::<String>::new(), "{c}");
    assert_eq!(count_builds(&d.builds, "pmalpha", &k2), 1, "{c}");
    assert_eq!(count_builds(&d.builds, "pmalpha", &k1), 0, "{c}");
    assert_eq!(cell(&d.status, "pmalpha", &k2).0, "installed", "{c}");
    assert!(d.stock.is_empty(), "the stock dkms hooks are masked: {c}");
    no_autoinstall(&d);

    // g. a module upgrade to a new version.
    env.step("g", &with_probe(&env, &format!("pacman_ -U {}", env.pkg("pmalpha-dkms-1.1"))));
    check_module_upgrade(&env);

    // f. removing dkms-trigger restores the stock hooks and leaves the modules alone.
    let script = with_probe(
        &env,
        "pacman_ -R dkms-trigger
n=0; for h in 70-dkms-install 70-dkms-upgrade 71-dkms-remove; do
    if [ -e $ROOT/etc/pacman.d/hooks/$h.hook ] || [ -L $ROOT/etc/pacman.d/hooks/$h.hook ]; then n=$((n + 1)); fi
done
fact masks_left $n",
    );
    let s = env.step("f", &script);
    let c = ctx(&s);
    assert_eq!(s.rc, 0, "{c}");
    assert_eq!(s.facts.get("masks_left").map(String::as_str), Some("0"), "{c}");
    assert_eq!(s.facts.get(&format!("pmalpha_ko_{k1}")).map(String::as_str), Some("yes"), "{c}");
    eprintln!("pm_e2e: {} total {:.1}s", env.pm, started.elapsed().as_secs_f64());
}
