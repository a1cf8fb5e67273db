//! The foundation through the real binary: record/spool/config on fake roots, under concurrency,
//! SIGKILL, a corrupt spool, a full disk and hostile input.
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_dkms-trigger");

fn dt(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--root").arg(root).args(args).output().expect("run dkms-trigger")
}

fn spool_dir(root: &Path) -> PathBuf {
    root.join("var/lib/dkms-trigger")
}

fn spool_json(root: &Path) -> serde_json::Value {
    let out = dt(root, &["spool", "--json"]);
    assert!(out.status.success(), "spool --json: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("spool --json is JSON")
}

fn kernels_in_spool(root: &Path) -> Vec<String> {
    let v = spool_json(root);
    assert!(v["problem"].is_null(), "spool must parse: {}", v["problem"]);
    v["intents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "kernel-added")
        .map(|i| i["args"]["kernel"].as_str().unwrap().to_string())
        .collect()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// xorshift64: enough randomness for kill timings without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn record_then_list_and_clear() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    assert!(dt(r, &["record", "--source", "dpkg:linux-image-6.1.0-47-amd64", "kernel-added", "6.1.0-47-amd64"])
        .status
        .success());
    assert!(dt(r, &["record", "headers-changed", "6.1.0-47-amd64", "--force"]).status.success());
    let out = dt(r, &["record", "kernel-added", "6.1.0-47-amd64"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "record is silent when all is well");
    let v = spool_json(r);
    assert_eq!(v["version"], 1);
    let intents = v["intents"].as_array().unwrap();
    assert_eq!(intents.len(), 2);
    assert_eq!(intents[0]["count"], 2);
    assert_eq!(intents[0]["sources"][0], "dpkg:linux-image-6.1.0-47-amd64");
    assert_eq!(intents[1]["args"]["force"], true);

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(spool_dir(r)).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(fs::metadata(spool_dir(r).join("spool.toml")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(spool_dir(r).join("spool.lock")).unwrap().permissions().mode() & 0o777, 0o600);

    let out = dt(r, &["spool", "clear"]);
    assert_eq!(out.status.code(), Some(2), "clear without --yes is refused");
    assert_eq!(spool_json(r)["intents"].as_array().unwrap().len(), 2);
    assert!(dt(r, &["spool", "clear", "--yes"]).status.success());
    assert_eq!(spool_json(r)["intents"].as_array().unwrap().len(), 0);
}

#[test]
fn concurrent_records_lose_nothing() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().to_path_buf();
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let k = format!("6.1.0-{w}-{i}");
                    let out = dt(&r, &["record", "kernel-added", &k]);
                    assert!(out.status.success(), "{k}: {}", String::from_utf8_lossy(&out.stderr));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // Every kernel exactly once: no intent lost, none written twice (as two entries, or as one
    // entry counted twice).
    let v = spool_json(&r);
    assert!(v["problem"].is_null(), "spool must parse: {}", v["problem"]);
    let intents = v["intents"].as_array().unwrap();
    let twice: Vec<&serde_json::Value> = intents.iter().filter(|i| i["count"] != 1).collect();
    assert!(twice.is_empty(), "{} intents recorded once but counted more, first: {:?}", twice.len(), twice.first());
    let mut got = kernels_in_spool(&r);
    got.sort();
    let mut want: Vec<String> = (0..64).flat_map(|w| (0..50).map(move |i| format!("6.1.0-{w}-{i}"))).collect();
    want.sort();
    assert_eq!(got.len(), intents.len(), "only kernel-added intents were recorded");
    if got != want {
        let dup: Vec<&String> = got.windows(2).filter(|p| p[0] == p[1]).map(|p| &p[0]).collect();
        let lost: Vec<&String> = want.iter().filter(|k| got.binary_search(k).is_err()).collect();
        panic!(
            "every one of the 3,200 intents must be present once: {} entries; {} duplicated (first {:?}); {} lost (first {:?})",
            got.len(),
            dup.len(),
            &dup[..dup.len().min(3)],
            lost.len(),
            &lost[..lost.len().min(3)]
        );
    }
}

#[test]
fn sigkill_never_tears_the_spool_or_loses_acknowledged_intents() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    // Some history, so that kills can land while a sizeable file is being read or written.
    for i in 0..50 {
        assert!(dt(r, &["record", "toolchain-changed", &format!("base-{i}")]).status.success());
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    let mut acknowledged = Vec::new();
    let mut killed = 0;
    for i in 0..240 {
        let k = format!("kill-{i}");
        let mut child = Command::new(BIN)
            .arg("--root")
            .arg(r)
            .args(["record", "kernel-added", &k])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next() % 4000));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            acknowledged.push(k);
        } else {
            killed += 1;
        }
        if i % 20 == 0 {
            kernels_in_spool(r); // parses at every sampled moment
        }
    }
    let present = kernels_in_spool(r);
    for k in &acknowledged {
        assert!(present.contains(k), "{k} was acknowledged (exit 0) but is missing (seed {seed})");
    }
    assert!(killed >= 20, "the test must actually kill records mid-flight (killed {killed}, seed {seed})");
    // The next record removes temp files left by killed writers.
    assert!(dt(r, &["record", "rescan"]).status.success());
    let leftovers: Vec<_> = fs::read_dir(spool_dir(r))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "stale temp files: {leftovers:?}");
}

#[test]
fn corrupt_spool_is_moved_aside_and_rescan_recorded() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    assert!(dt(r, &["record", "kernel-added", "a1"]).status.success());
    let garbage = b"version = 1\n[[intent]\nkind = \xff\n";
    fs::write(spool_dir(r).join("spool.toml"), garbage).unwrap();

    let listed = dt(r, &["spool"]);
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stderr).contains("unreadable"), "listing warns without moving");
    assert_eq!(fs::read(spool_dir(r).join("spool.toml")).unwrap(), garbage, "a read-only listing changes nothing");

    let out = dt(r, &["record", "kernel-added", "b2"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("warning: ") && err.contains("corrupt-"), "{err}");
    let aside: Vec<PathBuf> = fs::read_dir(spool_dir(r))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("spool.toml.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(fs::read(&aside[0]).unwrap(), garbage, "the corrupt file is kept as it was");
    let v = spool_json(r);
    let kinds: Vec<&str> = v["intents"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["rescan", "kernel-added"]);
}

#[test]
fn newer_kinds_are_kept_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(spool_dir(r)).unwrap();
    fs::write(
        spool_dir(r).join("spool.toml"),
        "version = 1\nnext_seq = 3\n[[intent]]\nkind = \"kernel-signed\"\nkernel = \"k\"\nseq = 2\n",
    )
    .unwrap();
    assert!(dt(r, &["record", "rescan"]).status.success());
    let v = spool_json(r);
    let intents = v["intents"].as_array().unwrap();
    assert_eq!(intents.len(), 2);
    assert_eq!(intents[0]["kind"], "kernel-signed");
    assert_eq!(intents[0]["understood"], false);
    let text = String::from_utf8(dt(r, &["spool"]).stdout).unwrap();
    assert!(text.contains("not understood, kept"), "{text}");
}

#[test]
fn hostile_input_exits_2_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let long = "a".repeat(4096);
    let cases: Vec<Vec<&str>> = vec![
        vec!["record", "kernel-added", "../../etc"],
        vec!["record", "kernel-added", ""],
        vec!["record", "kernel-added", &long],
        vec!["record", "kernel-added", "6.1\n0"],
        vec!["record", "kernel-added", "6.1\u{7}0"],
        vec!["record", "kernel-added", "6.1\u{1b}[31m"],
        vec!["record", "headers-changed", "a/b"],
        vec!["record", "module-changed", "../x/1.0"],
        vec!["record", "module-changed", "x/../1.0"],
        vec!["record", "module-changed", "x"],
        vec!["record", "rebuild", "-m", "x y"],
        vec!["record", "rebuild", "-k", "."],
        vec!["record", "toolchain-changed", "ok", ".."],
        vec!["record", "--source", "a\u{1}b", "rescan"],
        vec!["record", "no-such-kind"],
    ];
    for args in &cases {
        let out = dt(r, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?} explains itself: {err}");
        assert!(!spool_dir(r).exists(), "{args:?} wrote something");
    }
    // Non-UTF-8 bytes.
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(BIN)
        .arg("--root")
        .arg(r)
        .args(["record", "kernel-added"])
        .arg(std::ffi::OsStr::from_bytes(b"6.1\xff\xfe"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!spool_dir(r).exists());
    // The argument is named in the message.
    let out = dt(r, &["record", "kernel-added", "../../etc"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("<KVER>"));
}

#[test]
fn symlinked_spool_dir_or_file_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::create_dir_all(r.join("var/lib")).unwrap();
    symlink(elsewhere.path(), spool_dir(r)).unwrap();
    let out = dt(r, &["record", "rescan"]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symlink"));
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing written through the link");

    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    assert!(dt(r, &["record", "rescan"]).status.success());
    let target = elsewhere.path().join("victim");
    fs::write(&target, "precious").unwrap();
    fs::remove_file(spool_dir(r).join("spool.toml")).unwrap();
    symlink(&target, spool_dir(r).join("spool.toml")).unwrap();
    let out = dt(r, &["record", "rescan"]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious");

    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(spool_dir(r)).unwrap();
    symlink(&target, spool_dir(r).join("spool.lock")).unwrap();
    assert_eq!(dt(r, &["record", "rescan"]).status.code(), Some(6));
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
}

#[test]
fn non_root_cannot_mutate() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let mut cmd = Command::new(BIN);
    cmd.arg("--root").arg(r).args(["record", "rescan"]);
    if is_root() {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be run as root"));
    assert!(!spool_dir(r).exists());
}

#[test]
fn full_disk_keeps_the_previous_spool() {
    // A real ENOSPC needs a tiny filesystem: a tmpfs in a private mount namespace. This must not be
    // skipped: without unshare/mount the test fails.
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(spool_dir(r)).unwrap();
    let script = format!(
        r#"set -e
mount -t tmpfs -o size=64k,mode=0700 tmpfs '{dir}'
'{bin}' --root '{root}' record kernel-added before-full
cp '{dir}/spool.toml' '{dir}/../expected'
dd if=/dev/zero of='{dir}/filler' bs=4k 2>/dev/null || true
set +e
'{bin}' --root '{root}' record --source "$(printf 'x%.0s' $(seq 1 200))" toolchain-changed after-full
echo "rc=$?"
cmp '{dir}/spool.toml' '{dir}/../expected' && echo same
ls -a '{dir}'
"#,
        dir = spool_dir(r).display(),
        bin = BIN,
        root = r.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the mount namespace test could not run: {stderr}");
    assert!(stdout.contains("rc=5"), "record on a full disk exits 5 (storage): {stdout} {stderr}");
    assert!(stderr.contains("No space left on device") && stderr.contains("left unchanged"), "{stderr}");
    assert!(stdout.contains("same"), "the previous spool is intact: {stdout}");
    assert!(!stdout.contains(".tmp"), "no temp file left behind: {stdout}");
}

#[test]
fn config_command_shows_origins_and_rejects_bad_values() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(r.join("etc/dkms-trigger/config.d")).unwrap();
    fs::write(r.join("etc/dkms-trigger/config.toml"), "jobs = 3\nfrobnicate = 1\n").unwrap();
    fs::write(r.join("etc/dkms-trigger/config.d/50-site.toml"), "[on_failure]\nkernel_event = \"error\"\n").unwrap();
    let out = dt(r, &["config"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("jobs = 3  # ") && text.contains("config.toml"), "{text}");
    assert!(text.contains("kernel_event = \"error\"  # ") && text.contains("50-site.toml"), "{text}");
    assert!(text.contains("kernels = \"all\"  # default"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key 'frobnicate'"));

    fs::write(r.join("etc/dkms-trigger/config.d/60-bad.toml"), "job_timeout = \"1h\"\n").unwrap();
    let out = dt(r, &["config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("60-bad.toml") && err.contains("job_timeout") && err.contains("integer"), "{err}");
}

#[test]
fn version_without_dkms_says_so_and_exits_0() {
    // The runner's PATH is fixed, so "no dkms" is a root whose configuration names one that is
    // nowhere in it.
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(r.join("etc/dkms-trigger")).unwrap();
    fs::write(r.join("etc/dkms-trigger/config.toml"), "dkms = \"no-such-dkms\"\n").unwrap();
    for flag in ["--version", "-V"] {
        let out = dt(r, &[flag]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{flag}: {text} {}", String::from_utf8_lossy(&out.stderr));
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(concat!("dkms-trigger ", env!("CARGO_PKG_VERSION"))), "{text}");
        let dkms = lines.next().unwrap_or_default();
        assert!(dkms.starts_with("dkms (no-such-dkms): not found in /usr/local/sbin:"), "{flag}: {text}");
    }
    // Without a command, and without --version, it is a usage error as before.
    let out = dt(r, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn generated_man_page_and_completions_come_from_the_binary() {
    let run = |args: &[&str]| Command::new(BIN).args(args).output().expect("run dkms-trigger");
    let man = run(&["generate", "man"]);
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH DKMS-TRIGGER 8") && page.contains(".SH \"EXIT STATUS\""), "{page}");
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["generate", "completion", shell]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("remove-kernel"), "{shell}");
    }
    // Hidden: not in the help a person reads.
    let help = run(&["--help"]);
    assert!(!String::from_utf8_lossy(&help.stdout).contains("generate"));
}
