//! Planning cost: `plan --rescan` (inventory scan, dkms.conf evaluation, fingerprints, planner) on
//! a fake root of 50 kernels x 100 modules, with dkms.conf files that do not use kernel variables
//! and with files that all do. Targets (p50, 50 x 100): <= 1 s and <= 10 s; the 10 x 30 rows are for
//! context. Prints every figure labelled against its target; asserts only that the plan is empty
//! (every pair is installed and current).
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

#[path = "fakeroot.rs"]
mod fakeroot;
#[path = "target.rs"]
mod target;

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dkms-trigger");

fn time_plan(root: &std::path::Path, runs: usize) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new(BIN).arg("--root").arg(root).args(["plan", "--rescan"]).output().unwrap();
            let d = t.elapsed();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("nothing to do"), "the fake root is up to date, the plan must be empty:\n{text}");
            d
        })
        .collect();
    times.sort();
    (times[times.len() / 2], *times.last().unwrap())
}

fn main() {
    println!("plan --rescan on a fake root (release binary, every pair installed and current)");
    println!("{:>8} {:>8} {:>22} {:>9} {:>9}", "kernels", "modules", "dkms.conf", "p50 s", "max s");
    for (kernels, modules) in [(10, 30), (50, 100)] {
        for dependent in [false, true] {
            let t = tempfile::tempdir().unwrap();
            fakeroot::build(t.path(), kernels, modules, dependent);
            let (p50, max) = time_plan(t.path(), 5);
            let kind = if dependent { "uses $kernelver" } else { "kernel-independent" };
            let verdict = match (kernels, dependent) {
                (50, false) => target::at_most(p50.as_secs_f64(), 1.0, "s p50"),
                (50, true) => target::at_most(p50.as_secs_f64(), 10.0, "s p50"),
                _ => target::NO_TARGET.into(),
            };
            println!(
                "{kernels:>8} {modules:>8} {kind:>22} {:>9.3} {:>9.3}  {verdict}",
                p50.as_secs_f64(),
                max.as_secs_f64()
            );
        }
    }
}
