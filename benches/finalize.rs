//! Finalize benchmarks (`make bench`), printing every figure labelled against its target (met or
//! MISSED), never asserting times; asserted are the correctness checks: a no-op builds nothing,
//! the transaction builds each (module, kernel) pair at most once and runs depmod at most once per
//! kernel.
//!
//! 1. a no-op finalize (empty spool, nothing drifted) on a fake root of 10 kernels x 30 registered
//!    modules (target p50 <= 50 ms), the same with `--rescan` (a full reconcile that finds
//!    nothing; no target), and `boot`, the command of dkms-trigger.service, with the newest kernel
//!    running and every module built for it (target p50 <= 50 ms: it must not slow a boot down);
//! 2. a realistic transaction with the real dkms in throwaway worlds (tests/common): two kernels
//!    with headers and a third added in the same transaction, a same-version headers upgrade of one,
//!    four module packages upgraded (one BUILD_DEPENDS on another), CPU-bound generated modules.
//!    dkms-trigger (record per hook, one finalize) against the stock Debian path on the same work
//!    (per kernel/headers package `dkms autoinstall -k K`, per module package the real
//!    /usr/lib/dkms/common.postinst with autoinstall_all_kernels=1, in dpkg's order), and against
//!    the ideal: the total build time divided by the cores, or the BUILD_DEPENDS critical path if
//!    longer. The total build time is the sum of the jobs of a one-core run (`--jobs 1` with
//!    `make_jobs = 1`): a serial run with `make -j<cores>` already spreads each build over the
//!    cores, and dividing its time by the cores again would count the parallelism twice (that
//!    stricter figure is printed too). The CPU time the finalize's children used is printed as a
//!    check of the one-core figure. Targets: ratio to stock <= 0.60, ratio to ideal <= 1.25.
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "fakeroot.rs"]
mod fakeroot;
#[path = "target.rs"]
mod target;

use common::{test_kernels, World};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dkms-trigger");

fn noop() {
    println!("1. no-op finalize, fake root with 10 kernels x 30 registered, installed modules");
    let t = tempfile::tempdir().unwrap();
    fakeroot::build(t.path(), 10, 30, false);
    // The running kernel as `boot` reads it (under the root: the host's is not in the fake root).
    std::fs::create_dir_all(t.path().join("proc/sys/kernel")).unwrap();
    std::fs::write(t.path().join("proc/sys/kernel/osrelease"), format!("{}\n", fakeroot::kernel(9))).unwrap();
    let run_logs = t.path().join("var/log/dkms-trigger");
    for (label, args, target_ms) in [
        ("finalize (empty spool)", vec!["finalize"], Some(50.0)),
        ("finalize --rescan (nothing drifted)", vec!["finalize", "--rescan"], None),
        ("boot (the unit's command, nothing to do)", vec!["boot"], Some(50.0)),
    ] {
        let mut times: Vec<Duration> = (0..30)
            .map(|_| {
                let s = Instant::now();
                let out = Command::new(BIN).arg("--root").arg(t.path()).args(&args).output().unwrap();
                let d = s.elapsed();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                // A finalize that runs a job prints its line and makes a run log directory.
                let said = String::from_utf8_lossy(&out.stdout);
                assert!(said.is_empty(), "{label}: a no-op prints nothing, printed:\n{said}");
                let runs = std::fs::read_dir(&run_logs).map(|d| d.count()).unwrap_or(0);
                assert_eq!(runs, 0, "{label}: a no-op runs no job (run logs in {})", run_logs.display());
                d
            })
            .collect();
        times.sort();
        let verdict = target_ms.map_or(target::NO_TARGET.into(), |t| target::at_most(ms(times[15]), t, "ms p50"));
        println!("   {label:<42} p50 {:>7.1} ms   max {:>7.1} ms  {verdict}", ms(times[15]), ms(times[29]));
    }
    println!("   correctness (asserted): every no-op printed nothing and ran no job");
    assert!(
        !t.path().join("var/lib/dkms-trigger/boot-checked").exists(),
        "boot found every module built for the running kernel: no catch-up, so no marker"
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A CPU-bound module: `files` C files of generated arithmetic, `dep` its BUILD_DEPENDS.
fn module_files(name: &str, version: &str, files: usize, dep: Option<&str>) -> Vec<(String, String)> {
    let ident = name.replace('-', "_");
    let mut conf = format!(
        "PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"{version}\"\nBUILT_MODULE_NAME[0]=\"{name}\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"yes\"\n"
    );
    if let Some(d) = dep {
        conf += &format!("BUILD_DEPENDS[0]=\"{d}\"\n");
    }
    let objs: Vec<String> = (0..files).map(|i| format!("part{i}.o")).collect();
    let makefile = format!(
        "obj-m := {name}.o\n{name}-y := main.o {}\n\n# build recorder\n$(obj)/main.o: $(obj)/.stamp\n$(obj)/.stamp:\n\t@mkdir -p /var/log/dkms-world\n\t@echo \"start {name} {version} $(KERNELRELEASE) $$(date +%s.%N)\" >> /var/log/dkms-world/builds.log\n\t@touch $@\n",
        objs.join(" ")
    );
    let mut out = vec![
        ("dkms.conf".to_string(), conf),
        ("Makefile".to_string(), makefile),
        (
            "main.c".to_string(),
            format!("// SPDX-License-Identifier: GPL-2.0\n#include <linux/module.h>\nstatic int __init {ident}_init(void) {{ return 0; }}\nstatic void __exit {ident}_exit(void) {{ }}\nmodule_init({ident}_init);\nmodule_exit({ident}_exit);\nMODULE_LICENSE(\"GPL\");\n"),
        ),
    ];
    for i in 0..files {
        let mut c = String::from("// SPDX-License-Identifier: GPL-2.0\n#include <linux/kernel.h>\n");
        for f in 0..40 {
            c += &format!(
                "unsigned long {ident}_p{i}_f{f}(unsigned long x);\nunsigned long {ident}_p{i}_f{f}(unsigned long x)\n{{\n\tunsigned long a = x, b = {f};\n\tint k;\n\tfor (k = 0; k < 64; k++) {{\n\t\ta = a * 6364136223846793005UL + b;\n\t\tb ^= a >> (k % 13);\n\t\tif (a & 1) b += a / (k + 3); else b -= a % (k + 5);\n\t}}\n\treturn a ^ b;\n}}\n"
            );
        }
        out.push((format!("part{i}.c"), c));
    }
    out
}

fn write_module(w: &World, name: &str, version: &str, files: usize, dep: Option<&str>) {
    let dir = w.upper(format!("/usr/src/{name}-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (f, text) in module_files(name, version, files, dep) {
        std::fs::write(dir.join(f), text).unwrap();
    }
}

const MODULES: [(&str, usize, Option<&str>); 4] =
    [("netdrv", 6, None), ("gpudrv", 10, None), ("gpuaddon", 3, Some("gpudrv")), ("fsdrv", 4, None)];

/// A world before the upgrade: the modules at 1.0 installed for K1 and K2, the 1.1 sources unpacked,
/// the third kernel's directory in place, a depmod wrapper counting runs.
fn prepared_world(k1: &str, k2: &str, k3: &str) -> World {
    let w = World::new();
    for (m, files, dep) in MODULES {
        write_module(&w, m, "1.0", files, dep);
    }
    let names: Vec<&str> = MODULES.iter().map(|m| m.0).collect();
    w.run_ok(&format!(
        "for m in {names}; do dkms add -m $m -v 1.0 >/dev/null; for k in {k1} {k2}; do dkms install -m $m -v 1.0 -k $k >/dev/null; done; done
         printf '#!/bin/sh\\necho \"$*\" >> /var/log/depmod-runs.log\\nexec /usr/sbin/depmod \"$@\"\\n' > /usr/local/sbin/depmod
         chmod 755 /usr/local/sbin/depmod
         : > /var/log/dkms-world/builds.log
         mkdir -p /lib/modules/{k3} && ln -s /usr/src/linux-headers-{k2} /lib/modules/{k3}/build && touch /boot/vmlinuz-{k3}",
        names = names.join(" ")
    ));
    for (m, files, dep) in MODULES {
        write_module(&w, m, "1.1", files, dep);
    }
    w
}

fn counts(w: &World) -> (usize, usize) {
    let builds = w.read("/var/log/dkms-world/builds.log").unwrap_or_default().lines().count();
    let depmods = w.read("/var/log/depmod-runs.log").unwrap_or_default().lines().count();
    (builds, depmods)
}

fn timed(w: &World, script: &str) -> (Duration, String) {
    let s = Instant::now();
    let out = w.run(script);
    let d = s.elapsed();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (d, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn transaction() {
    let [k1, k2] = test_kernels();
    let k3 = "6.1.0-999-amd64".to_string(); // added in the transaction (its headers: K2's tree)
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("\n2. a transaction: kernels {k1} {k2} + {k3} added, headers of {k1} upgraded in place,");
    println!("   4 module packages upgraded 1.0 -> 1.1 (gpuaddon BUILD_DEPENDS gpudrv); {cores} cores");

    // The stock Debian path, in dpkg's configure order.
    let stock_world = prepared_world(&k1, &k2, &k3);
    let modules: Vec<&str> = MODULES.iter().map(|m| m.0).collect();
    let stock_script = format!(
        "echo 'autoinstall_all_kernels=\"1\"' >> /etc/dkms/framework.conf
         dkms autoinstall -k {k1} >/dev/null          # linux-headers-{k1} (same version) postinst
         dkms autoinstall -k {k3} >/dev/null || true  # linux-image-{k3} postinst.d/dkms
         dkms autoinstall -k {k3} >/dev/null || true  # linux-headers-{k3} header_postinst.d/dkms
         for m in {mods}; do /usr/lib/dkms/common.postinst $m 1.1 /usr/share/$m '' 1.0 >/dev/null; done",
        mods = modules.join(" ")
    );
    let (stock_t, _) = timed(&stock_world, &stock_script);
    let (stock_builds, stock_depmods) = counts(&stock_world);
    drop(stock_world);

    // "[3/8] build M/V for K ... ok (2.5s)" lines of a finalize: (what, seconds).
    let job_secs = |text: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| l.starts_with('[') && l.contains(" ... ok ("))
            .map(|l| {
                let what = l.split(" ... ").next().unwrap().split("] ").nth(1).unwrap().to_string();
                let secs: f64 = l.rsplit('(').next().unwrap().trim_end_matches("s)").parse().unwrap();
                (what, secs)
            })
            .collect()
    };

    // dkms-trigger: every hook records, one finalize at the end.
    let ours_world = prepared_world(&k1, &k2, &k3);
    let mut record = format!(
        "dkms-trigger record headers-changed {k1} --force\n dkms-trigger record kernel-added {k3}\n dkms-trigger record headers-changed {k3}\n"
    );
    for m in &modules {
        record += &format!(" dkms-trigger record module-changed {m}/1.1\n");
    }
    // `times` (bash): user and system CPU time of the shell's children, for the CPU check.
    let (ours_t, ours_out) = timed(&ours_world, &format!("{record} dkms-trigger finalize\n times"));
    let (ours_builds, ours_depmods) = counts(&ours_world);
    let ours_builds_log = ours_world.read("/var/log/dkms-world/builds.log").unwrap_or_default();
    let ours_depmod_log = ours_world.read("/var/log/depmod-runs.log").unwrap_or_default();
    drop(ours_world);
    let cpu = children_cpu(&ours_out);
    // Correctness, asserted at once (before the reference runs): each (module, kernel) pair at
    // most once, by the finalizer's job lines and by the build recorder (every compile, whoever
    // ran it); depmod at most once per kernel.
    let pairs = job_secs(&ours_out);
    let mut seen = std::collections::BTreeSet::new();
    let twice: Vec<&String> = pairs.iter().filter(|(w, _)| !seen.insert(w.clone())).map(|(w, _)| w).collect();
    assert!(twice.is_empty(), "jobs run twice: {twice:?}\n{ours_out}");
    let mut built = std::collections::BTreeMap::new();
    for l in ours_builds_log.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [_, m, _, k, ..] = f.as_slice() {
            *built.entry((m.to_string(), k.to_string())).or_insert(0) += 1;
        }
    }
    let rebuilt: Vec<_> = built.iter().filter(|(_, n)| **n > 1).collect();
    assert!(rebuilt.is_empty(), "pairs compiled more than once: {rebuilt:?}\n{ours_builds_log}");
    for k in [&k1, &k2, &k3] {
        let n = ours_depmod_log.lines().filter(|l| l.split_whitespace().any(|w| w == k.as_str())).count();
        assert!(n <= 1, "depmod ran {n} times for {k}:\n{ours_depmod_log}");
    }

    // The same plan on one core: the total build time, for the ideal.
    let serial_world = prepared_world(&k1, &k2, &k3);
    serial_world.write("/etc/dkms-trigger/config.d/50-bench.toml", "make_jobs = 1\n");
    let (serial_t, serial_out) = timed(&serial_world, &format!("{record} dkms-trigger finalize --jobs 1"));
    drop(serial_world);
    // The stricter reading: one job at a time, each with make -j<cores>.
    let serial_j_world = prepared_world(&k1, &k2, &k3);
    let (_, serial_j_out) = timed(&serial_j_world, &format!("{record} dkms-trigger finalize --jobs 1"));
    drop(serial_j_world);
    let serial_jobs = job_secs(&serial_out);
    let work: f64 = serial_jobs.iter().map(|(_, s)| s).sum();
    let work_j: f64 = job_secs(&serial_j_out).iter().map(|(_, s)| s).sum();
    // Critical path: per kernel, gpudrv then gpuaddon.
    let critical = [&k1, &k2, &k3]
        .iter()
        .map(|k| {
            serial_jobs
                .iter()
                .filter(|(w, _)| (w.contains("gpudrv/") || w.contains("gpuaddon/")) && w.ends_with(k.as_str()))
                .map(|(_, s)| s)
                .sum::<f64>()
        })
        .fold(0.0, f64::max);
    let ideal = (work / cores as f64).max(critical);
    let ours_s = ours_t.as_secs_f64();
    println!("   {:<34} {:>8} {:>12} {:>8}", "", "wall s", "dkms builds", "depmod");
    println!(
        "   {:<34} {:>8.1} {:>12} {:>8}",
        "stock dkms hooks (dpkg order)",
        stock_t.as_secs_f64(),
        stock_builds,
        stock_depmods
    );
    println!("   {:<34} {:>8.1} {:>12} {:>8}", "dkms-trigger (record + finalize)", ours_s, ours_builds, ours_depmods);
    println!("   {:<34} {:>8.1} {:>12}", "one core (--jobs 1, make_jobs 1)", serial_t.as_secs_f64(), serial_jobs.len());
    println!(
        "   ideal = max(total build time {work:.1} s / {cores} cores, critical path {critical:.1} s) = {ideal:.1} s"
    );
    println!("   check: the finalize's children used {cpu:.1} s of CPU = {:.1} s on {cores} cores", cpu / cores as f64);
    let (to_stock, to_ideal) = (ours_s / stock_t.as_secs_f64(), ours_s / ideal);
    println!(
        "   ratio to stock: {to_stock:.2}x {}   ratio to ideal: {to_ideal:.2}x {}",
        target::at_most(to_stock, 0.60, "x"),
        target::at_most(to_ideal, 1.25, "x")
    );
    println!(
        "   (stricter reading: serial jobs with make -j{cores} sum to {work_j:.1} s; / {cores} cores = {:.1} s, ratio {:.2}x)",
        work_j / cores as f64,
        ours_s / (work_j / cores as f64).max(critical)
    );
    if std::env::var_os("DKMS_TRIGGER_BENCH_VERBOSE").is_some() {
        println!("--- dkms-trigger finalize\n{ours_out}--- dkms-trigger finalize --jobs 1\n{serial_out}---");
    }
    println!(
        "   correctness (asserted): each (module, kernel) pair built at most once ({} jobs, {} compiles); depmod runs: {ours_depmods} for 3 kernels, at most one each",
        pairs.len(),
        ours_builds
    );
}

/// User + system time of the children from bash's `times` output (its second line, "0m1.5s 0m0.3s").
fn children_cpu(out: &str) -> f64 {
    let secs = |t: &str| -> f64 {
        let (m, s) = t.trim_end_matches('s').split_once('m').unwrap_or(("0", "0"));
        m.parse::<f64>().unwrap_or(0.0) * 60.0 + s.parse::<f64>().unwrap_or(0.0)
    };
    let line = out.lines().rev().find(|l| l.split_whitespace().count() == 2 && l.contains('m')).unwrap_or("");
    line.split_whitespace().map(secs).sum()
}

fn main() {
    if std::env::var_os("DKMS_TRIGGER_BENCH_ONLY_TRANSACTION").is_none() {
        noop();
    }
    if std::env::var_os("DKMS_TRIGGER_BENCH_ONLY_NOOP").is_some() {
        return;
    }
    if nix::unistd::geteuid().is_root() {
        transaction();
    } else {
        println!("\n2. (the transaction benchmark needs root: mount namespaces and the real dkms)");
    }
}
