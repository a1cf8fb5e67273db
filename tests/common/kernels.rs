//! The two test kernels of this machine, by the one rule tests/setup/install-deps.sh installs
//! them with (`tests/setup/newest-headers.sh --installed`). Plain std, so that the library's
//! real-system unit test (src/inventory/tests.rs) includes this file too.

use std::path::Path;
use std::process::Command;

/// The kernel versions of the two newest installed linux-headers packages with usable headers,
/// oldest first, as `newest-headers.sh --installed` prints them (flavour: the script's default, or
/// `DKMS_TRIGGER_TEST_FLAVOUR`). Panics with the script's explanation when there are fewer than
/// two: the real-system tests need both, and they never pass silently.
pub fn test_kernels() -> [String; 2] {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/setup/newest-headers.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--installed")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ks: Vec<&str> = stdout.split_whitespace().collect();
    match (out.status.success(), ks.as_slice()) {
        (true, [k1, k2]) => [k1.to_string(), k2.to_string()],
        _ => panic!(
            "no two test kernels ({} --installed: {}, printed {ks:?}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}
