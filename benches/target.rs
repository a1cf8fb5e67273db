//! Labels a benchmark figure against its target. Figures are printed with their label, never
//! asserted: timing depends on the machine and on what else runs on it. What the benchmarks do
//! assert is correctness (nothing lost, nothing built twice, nothing built by a no-op).
#![allow(dead_code)] // each benchmark includes this file and uses part of it

/// `(target <= 3 ms: met)` or `(target <= 3 ms: MISSED)` for a figure where lower is better.
pub fn at_most(value: f64, target: f64, unit: &str) -> String {
    format!("(target <= {target} {unit}: {})", if value <= target { "met" } else { "MISSED" })
}

/// For a figure printed for context, without a target of its own.
pub const NO_TARGET: &str = "(no target)";
