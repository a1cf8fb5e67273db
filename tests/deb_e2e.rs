//! Real end-to-end tests of the Debian package (docs/debian.md): the .deb that `make deb` builds is
//! installed with the real apt and dpkg into a Debian 12 chroot made by mmdebstrap from the
//! distribution's packages, next to the real dkms 3.0.10, real linux-headers packages (the two
//! newest ABIs the archive offers, chosen when the chroot is built) and module packages made
//! dh_dkms-style by tests/deb/mkmodule.sh, whose postinst runs dkms's own common.postinst.
//!
//! Needs root, network the first time (then the base tarball is cached in
//! /var/cache/dkms-trigger-tests, see tests/deb/base.sh) and about 2 GB under /var/tmp. Never skips:
//! when the package or the chroot cannot be built, every test fails and says why.
//!
//! The chroots are overlay layers, each made once and shared (a layer is never changed once another
//! is stacked on it):
//!
//! ```text
//! base     cached tarball: dkms, toolchain, headers K1 installed, headers K2 downloaded
//! takeover pre-dkms installed while dkms's own autoinstall is in charge; then dkms-trigger
//! s1       headers K2 + two dependent module packages in one apt run; then a hand-built module
//! <test>   one layer per scenario, on top of `takeover` or `s1`
//! ```
//!
//! Builds are counted with the generated modules' build recorder (/var/log/dkms-test-builds.log, one
//! line per compile with the package whose maintainer script ran it).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

const WORK: &str = "/var/tmp/dkms-trigger-deb-e2e";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Output of one command.
#[derive(Debug, Clone)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    secs: f64,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn show(&self) -> String {
        format!(
            "exit {} after {:.1}s\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.secs, self.stdout, self.stderr
        )
    }

    #[track_caller]
    fn ok(&self, what: &str) -> &Self {
        assert_eq!(self.code, 0, "{what} failed: {}", self.show());
        self
    }
}

fn run(cmd: &mut Command) -> Out {
    let start = Instant::now();
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        secs: start.elapsed().as_secs_f64(),
    }
}

fn host_step(what: &str, cmd: &mut Command) -> Result<Out, String> {
    let o = run(cmd);
    eprintln!("deb_e2e: {what}: {:.1}s", o.secs);
    if o.code == 0 {
        Ok(o)
    } else {
        Err(format!("{what} failed: {}", o.show()))
    }
}

/// One overlay layer of a chroot: `dir/upper` holds its changes; `lowers` are the layers below,
/// top first.
#[derive(Debug, Clone)]
struct Stage {
    dir: PathBuf,
    lowers: Vec<PathBuf>,
}

impl Stage {
    /// A new layer on top of `parent` (which must not change any more).
    fn child(parent: &Stage, name: &str) -> Stage {
        let dir = Path::new(WORK).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let mut lowers = vec![parent.dir.join("upper")];
        lowers.extend(parent.lowers.iter().cloned());
        Stage { dir, lowers }
    }

    /// Runs a bash script inside the chroot (tests/deb/enter.sh), with K1, K2 (the two kernels,
    /// oldest first) and T (tests/deb, read-only) set.
    fn sh(&self, script: &str) -> Out {
        let lower: Vec<String> = self.lowers.iter().map(|p| p.display().to_string()).collect();
        let full = format!("read -r K1 K2 </etc/dkms-trigger-tests/kernels; T=/dkms-trigger-tests\n{script}");
        run(Command::new(repo().join("tests/deb/enter.sh"))
            .arg("--stage")
            .arg(&self.dir)
            .arg("--lower")
            .arg(lower.join(":"))
            .arg("--bind")
            .arg(format!("{}:/dkms-trigger-tests", repo().join("tests/deb").display()))
            .arg("--bind")
            .arg(format!("{}:/dkms-trigger-dist", repo().join("dist").display()))
            .arg("--")
            .arg(full))
    }

    /// Every build the module build recorder saw, in order.
    fn builds(&self) -> Vec<Build> {
        let o = self.sh("cat /var/log/dkms-test-builds.log 2>/dev/null || true");
        o.ok("reading the build log");
        o.stdout.lines().filter_map(Build::parse).collect()
    }

    /// mtime (with fraction) of every built module in dkms's tree: "M/V/K" -> time.
    fn ko_times(&self) -> BTreeMap<String, f64> {
        let o = self.sh("find /var/lib/dkms -path '*/module/*.ko*' -printf '%P %T@\\n'");
        o.ok("listing built modules");
        o.stdout
            .lines()
            .filter_map(|l| {
                let (p, t) = l.rsplit_once(' ')?;
                // M/V/K/ARCH/module/M.ko
                let parts: Vec<&str> = p.split('/').collect();
                if parts.len() != 6 {
                    return None;
                }
                Some((format!("{}/{}/{}", parts[0], parts[1], parts[2]), t.parse().ok()?))
            })
            .collect()
    }

    /// `dkms status` as "M/V K" -> state word.
    fn dkms_status(&self) -> BTreeMap<String, String> {
        let o = self.sh("dkms status");
        o.ok("dkms status");
        parse_dkms_status(&o.stdout)
    }

    fn exists(&self, path: &str) -> bool {
        self.sh(&format!("test -e '{path}'")).code == 0
    }

    fn dpkg_status(&self, pkg: &str) -> String {
        self.sh(&format!("dpkg-query -W -f='${{db:Status-Abbrev}}' {pkg} 2>/dev/null || true"))
            .stdout
            .trim()
            .to_string()
    }
}

fn parse_dkms_status(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        // "pre/1.0, 6.1.0-55-amd64, x86_64: installed"
        let Some((head, state)) = l.split_once(": ") else { continue };
        let f: Vec<&str> = head.split(", ").collect();
        if f.len() >= 2 {
            m.insert(format!("{} {}", f[0], f[1]), state.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    m
}

/// One line of the build recorder: `build NAME VERSION KVER TIME by=PKG`.
#[derive(Debug, Clone, PartialEq)]
struct Build {
    module: String,
    version: String,
    kernel: String,
    time: f64,
    by: String,
}

impl Build {
    fn parse(l: &str) -> Option<Build> {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 6 || f[0] != "build" {
            return None;
        }
        Some(Build {
            module: f[1].into(),
            version: f[2].into(),
            kernel: f[3].into(),
            time: f[4].parse().ok()?,
            by: f[5].strip_prefix("by=")?.into(),
        })
    }
}

/// Builds per (module, kernel).
fn count(builds: &[Build]) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for b in builds {
        *m.entry((b.module.clone(), b.kernel.clone())).or_insert(0) += 1;
    }
    m
}

fn pairs(list: &[(&str, &str)]) -> BTreeMap<(String, String), usize> {
    list.iter().map(|(m, k)| ((m.to_string(), k.to_string()), 1)).collect()
}

/// Everything prepared once: the package, the base chroot, the kernels.
struct Env {
    deb: PathBuf,
    changes: PathBuf,
    base: Stage,
    k1: String,
    k2: String,
    /// Holds WORK/.lock: one run of this suite at a time.
    _lock: File,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    match ENV.get_or_init(prepare) {
        Ok(e) => e,
        Err(why) => panic!("the Debian test chroot could not be prepared: {why}"),
    }
}

fn prepare() -> Result<Env, String> {
    let started = Instant::now();
    if !nix::unistd::Uid::effective().is_root() {
        return Err("must run as root (apt, mmdebstrap, mount namespaces)".into());
    }
    host_step("host packages (tests/deb/setup.sh)", &mut Command::new(repo().join("tests/deb/setup.sh")))?;
    host_step("make deb", Command::new("make").arg("deb").current_dir(repo()))?;
    let version = host_step("changelog version", Command::new("dpkg-parsechangelog").arg("-SVersion").current_dir(repo()))?
        .stdout
        .trim()
        .to_string();
    let arch = host_step("architecture", Command::new("dpkg").arg("--print-architecture"))?.stdout.trim().to_string();
    let deb = repo().join(format!("dist/dkms-trigger_{version}_{arch}.deb"));
    let changes = repo().join(format!("dist/dkms-trigger_{version}_{arch}.changes"));
    if !deb.is_file() {
        return Err(format!("make deb did not produce {}", deb.display()));
    }
    let tarball = host_step("base chroot (tests/deb/base.sh)", &mut Command::new(repo().join("tests/deb/base.sh")))?
        .stdout
        .trim()
        .to_string();

    std::fs::create_dir_all(WORK).map_err(|e| format!("creating {WORK}: {e}"))?;
    let lock = File::create(Path::new(WORK).join(".lock")).map_err(|e| e.to_string())?;
    fs2::FileExt::lock_exclusive(&lock).map_err(|e| format!("locking {WORK}/.lock: {e}"))?;
    // Layers left by a filtered or kept run (see Cleanup).
    for e in std::fs::read_dir(WORK).map_err(|e| e.to_string())?.flatten() {
        if e.file_name() != ".lock" {
            std::fs::remove_dir_all(e.path()).map_err(|err| format!("removing {}: {err}", e.path().display()))?;
        }
    }
    let base_dir = Path::new(WORK).join("base");
    std::fs::create_dir_all(base_dir.join("upper")).map_err(|e| e.to_string())?;
    host_step(
        "extracting the base chroot",
        Command::new("tar")
            .args(["--zstd", "-xpf", &tarball, "--numeric-owner", "-C"])
            .arg(base_dir.join("upper")),
    )?;
    let kernels = std::fs::read_to_string(base_dir.join("upper/etc/dkms-trigger-tests/kernels"))
        .map_err(|e| format!("the base chroot has no kernel choice: {e}"))?;
    let ks: Vec<&str> = kernels.split_whitespace().collect();
    if ks.len() != 2 {
        return Err(format!("bad kernel choice {kernels:?}"));
    }
    eprintln!("deb_e2e: kernels {} and {}; prepared in {:.0}s", ks[0], ks[1], started.elapsed().as_secs_f64());
    Ok(Env {
        deb,
        changes,
        base: Stage { dir: base_dir, lowers: vec![] },
        k1: ks[0].to_string(),
        k2: ks[1].to_string(),
        _lock: lock,
    })
}

/// The `takeover` layer and what happened while it was made.
struct Takeover {
    stage: Stage,
    /// Builds before dkms-trigger was installed (pre-dkms by dkms's own common.postinst).
    builds_before: Vec<Build>,
    install: Out,
    builds_after: Vec<Build>,
    ko_before: BTreeMap<String, f64>,
    ko_after: BTreeMap<String, f64>,
    no_autoinstall: bool,
    marker: bool,
    status: Out,
    spool: Out,
}

fn takeover() -> &'static Takeover {
    static T: OnceLock<Result<Takeover, String>> = OnceLock::new();
    match T.get_or_init(make_takeover) {
        Ok(t) => t,
        Err(why) => panic!("{why}"),
    }
}

fn make_takeover() -> Result<Takeover, String> {
    let e = env();
    let stage = Stage::child(&e.base, "takeover");
    let pre = stage.sh("$T/mkmodule.sh pre 1.0 >/dev/null && apt-get install -y /root/debs/pre-dkms_1.0-1_all.deb");
    if pre.code != 0 {
        return Err(format!("installing pre-dkms with dkms's own autoinstall: {}", pre.show()));
    }
    let builds_before = stage.builds();
    let ko_before = stage.ko_times();
    let deb = e.deb.file_name().unwrap().to_string_lossy().into_owned();
    let install = stage.sh(&format!("apt-get install -y /dkms-trigger-dist/{deb}"));
    eprintln!("deb_e2e: installing dkms-trigger: {:.1}s", install.secs);
    if install.code != 0 {
        return Err(format!("apt-get install dkms-trigger: {}", install.show()));
    }
    Ok(Takeover {
        builds_after: stage.builds(),
        ko_after: stage.ko_times(),
        no_autoinstall: stage.exists("/etc/dkms/no-autoinstall"),
        marker: stage.exists("/var/lib/dkms-trigger/created-no-autoinstall"),
        status: stage.sh("dkms-trigger status"),
        spool: stage.sh("dkms-trigger spool --json"),
        stage,
        builds_before,
        install,
        ko_before,
    })
}

/// The `s1` layer: headers K2 and two dependent module packages in one apt run.
struct S1 {
    stage: Stage,
    apt: Out,
    /// Builds during the apt run.
    builds: Vec<Build>,
    dpkg_log: String,
    dkms_status: BTreeMap<String, String>,
}

fn s1() -> &'static S1 {
    static S: OnceLock<Result<S1, String>> = OnceLock::new();
    match S.get_or_init(make_s1) {
        Ok(s) => s,
        Err(why) => panic!("{why}"),
    }
}

fn make_s1() -> Result<S1, String> {
    let t = takeover();
    let stage = Stage::child(&t.stage, "s1");
    // tuser needs tbase (BUILD_DEPENDS, and its make refuses to run before tbase is installed for
    // the kernel); tbase-dkms Depends on tuser-dkms, so dpkg configures the dependent first.
    let gen = stage.sh(
        "$T/mkmodule.sh tuser 1.0 --build-depends tbase --requires-installed tbase >/dev/null
         $T/mkmodule.sh tbase 1.0 --depends tuser-dkms >/dev/null",
    );
    if gen.code != 0 {
        return Err(format!("generating the S1 modules: {}", gen.show()));
    }
    let before = stage.builds().len();
    let apt = stage.sh(
        "apt-get install -y linux-headers-$K2 /root/debs/tbase-dkms_1.0-1_all.deb /root/debs/tuser-dkms_1.0-1_all.deb",
    );
    eprintln!("deb_e2e: S1 apt run: {:.1}s", apt.secs);
    let builds = stage.builds()[before..].to_vec();
    let dpkg_log = stage.sh("cat /var/log/dpkg.log").stdout;
    let dkms_status = stage.dkms_status();
    // A module built by hand (AUTOINSTALL=""), for the later scenarios: no event may touch it.
    let hand = stage.sh(
        "$T/mkmodule.sh handmade 1.0 --autoinstall '' --source-only >/dev/null
         dkms add -m handmade -v 1.0 >/dev/null
         for k in $K1 $K2; do dkms install -m handmade -v 1.0 -k $k >/dev/null; done",
    );
    if hand.code != 0 {
        return Err(format!("building the hand-made module: {}", hand.show()));
    }
    Ok(S1 { stage, apt, builds, dpkg_log, dkms_status })
}

const AUTO: [&str; 3] = ["pre", "tbase", "tuser"];

/// Held by every test: when the last test of a full run ends (passed or failed), the layers under
/// WORK (about 1 GB) are deleted, unless DKMS_TRIGGER_DEB_KEEP is set to look at them. A filtered
/// run leaves them; the next run deletes them before it starts.
struct Cleanup;

impl Cleanup {
    fn guard() -> Cleanup {
        Cleanup
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        static DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let total = include_str!("deb_e2e.rs").matches(concat!("#[", "test]")).count();
        let done = DONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if done < total {
            return;
        }
        if std::env::var_os("DKMS_TRIGGER_DEB_KEEP").is_some() {
            eprintln!("deb_e2e: keeping the layers in {WORK}");
            return;
        }
        for e in std::fs::read_dir(WORK).into_iter().flatten().flatten() {
            if e.file_name() != ".lock" {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------

#[test]
fn deb_builds_and_lintian_reports_no_errors_and_only_accepted_warnings() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let o = run(Command::new("lintian").args(["--fail-on", "error", "--tag-display-limit", "0"]).arg(&e.changes));
    // Exit 0: lintian ran to the end and found no error (1 is lintian's own failure, 2 an error tag);
    // a lintian that crashed prints no tags, so its output alone proves nothing.
    assert_eq!(o.code, 0, "lintian did not run cleanly: {}", o.show());
    let accepted = std::fs::read_to_string(repo().join("debian/README.source")).unwrap();
    let accepted: Vec<&str> = accepted
        .lines()
        .filter_map(|l| l.strip_prefix("- `")?.split('`').next())
        .collect();
    let mut bad = Vec::new();
    for l in o.all().lines() {
        // "W: dkms-trigger: tag-name [context]"
        let mut f = l.split_whitespace();
        let (Some(level), Some(_pkg), Some(tag)) = (f.next(), f.next(), f.next()) else { continue };
        match level {
            "E:" => bad.push(l.to_string()),
            "W:" if !accepted.contains(&tag) => bad.push(l.to_string()),
            _ => {}
        }
    }
    assert!(bad.is_empty(), "lintian errors or warnings not accepted in debian/README.source:\n{}\n\n{}", bad.join("\n"), o.show());
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&e.deb));
    for f in [
        "./usr/sbin/dkms-trigger",
        "./etc/kernel/postinst.d/dkms-trigger",
        "./etc/kernel/header_postinst.d/dkms-trigger",
        "./etc/kernel/prerm.d/dkms-trigger",
    ] {
        assert!(contents.stdout.lines().any(|l| l.ends_with(f) && l.starts_with("-rwxr-xr-x")), "{f} 0755 in {}", contents.stdout);
    }
}

#[test]
fn installing_the_package_takes_over_autoinstall_and_rebuilds_nothing_up_to_date() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let t = takeover();
    // Before: dkms's own common.postinst built pre-dkms inside its package's postinst.
    assert_eq!(count(&t.builds_before), pairs(&[("pre", &e.k1)]), "{:?}", t.builds_before);
    assert_eq!(t.builds_before[0].by, "pre-dkms");
    // Installing dkms-trigger (postinst configure: a full rescan) built nothing.
    assert_eq!(t.builds_after, t.builds_before, "{}", t.install.show());
    assert_eq!(t.ko_after, t.ko_before, "built modules were touched");
    assert!(t.no_autoinstall && t.marker, "no-autoinstall {} marker {}", t.no_autoinstall, t.marker);
    t.status.ok("dkms-trigger status");
    let line = t.status.stdout.lines().find(|l| l.contains("pre")).unwrap_or_default();
    assert!(line.contains("installed"), "status shows pre installed: {}", t.status.show());
    t.spool.ok("dkms-trigger spool --json");
    let spool: serde_json::Value =
        serde_json::from_str(&t.spool.stdout).unwrap_or_else(|e| panic!("{e}: {}", t.spool.show()));
    assert!(spool["problem"].is_null(), "the spool is readable: {}", t.spool.show());
    assert_eq!(spool["intents"].as_array().map(Vec::len), Some(0), "nothing left pending: {}", t.spool.show());
}

#[test]
fn s1_one_apt_run_builds_both_dependent_modules_for_every_kernel_once_after_configure() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let s = s1();
    s.apt.ok("the S1 apt run");
    // dpkg configured the dependent before its dependency (the S1 trap).
    let pos = |what: &str| s.dpkg_log.find(what).unwrap_or_else(|| panic!("{what} in dpkg.log:\n{}", s.dpkg_log));
    assert!(pos("configure tuser-dkms") < pos("configure tbase-dkms"), "{}", s.dpkg_log);
    // Each pair exactly once, all by the trigger's finalizer (nothing inside a package's own
    // maintainer script), the dependency first on every kernel.
    let want = pairs(&[
        ("pre", &e.k2),
        ("tbase", &e.k1),
        ("tbase", &e.k2),
        ("tuser", &e.k1),
        ("tuser", &e.k2),
    ]);
    assert_eq!(count(&s.builds), want, "{:?}\n{}", s.builds, s.apt.show());
    assert!(s.builds.iter().all(|b| b.by == "dkms-trigger"), "{:?}", s.builds);
    for k in [&e.k1, &e.k2] {
        let at = |m: &str| s.builds.iter().position(|b| b.module == m && &b.kernel == k).unwrap();
        assert!(at("tbase") < at("tuser"), "tbase before tuser on {k}: {:?}", s.builds);
    }
    for m in AUTO {
        for k in [&e.k1, &e.k2] {
            assert_eq!(s.dkms_status.get(&format!("{m}/1.0 {k}")).map(String::as_str), Some("installed"), "{m} on {k}: {:?}", s.dkms_status);
        }
    }
    // The kernel hooks were silent (run-parts --report names a hook only when it prints).
    assert!(!s.apt.all().contains("header_postinst.d/dkms-trigger"), "{}", s.apt.show());
}

#[test]
fn s3_module_failing_on_one_kernel_warns_and_a_failing_module_upgrade_fails_its_transaction() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let stage = Stage::child(&takeover().stage, "s3");
    stage.sh("$T/mkmodule.sh flaky 1.0 --fail-on $K2 >/dev/null; $T/mkmodule.sh flaky 2.0 --fail-on all >/dev/null").ok("generating flaky");
    // 1. flaky 1.0 by plain dpkg: the file trigger registers and builds it for K1, the only kernel
    //    with headers so far.
    let n = stage.builds().len();
    stage.sh("dpkg -i /root/debs/flaky-dkms_1.0-1_all.deb").ok("dpkg -i flaky 1.0");
    assert_eq!(count(&stage.builds()[n..]), pairs(&[("flaky", &e.k1)]));

    // 2. Headers for K2, where flaky does not compile: apt succeeds, with a warning naming it.
    let n = stage.builds().len();
    let apt = stage.sh("apt-get install -y linux-headers-$K2");
    apt.ok("installing headers for a kernel a module fails on");
    let warn = apt.all().lines().filter(|l| l.contains("warning") && l.contains("flaky") && l.contains(&e.k2)).count();
    assert!(warn >= 1, "a visible warning about flaky on {}: {}", e.k2, apt.show());
    assert_eq!(count(&stage.builds()[n..]), pairs(&[("flaky", &e.k2), ("pre", &e.k2)]), "the other modules are built");
    let st = stage.dkms_status();
    assert_eq!(st.get(&format!("pre/1.0 {}", e.k2)).map(String::as_str), Some("installed"), "{st:?}");
    let status = stage.sh("dkms-trigger status");
    status.ok("dkms-trigger status");
    assert!(
        status.stdout.lines().any(|l| l.contains("flaky") && l.contains("failed")),
        "status shows the failure: {}",
        status.show()
    );

    // 3. An upgrade to flaky 2.0, which does not build anywhere: that package's transaction fails.
    //    The module package itself configures fine (common.postinst steps aside); the build runs
    //    in dkms-trigger's trigger, whose failure makes dpkg, and so apt, exit non-zero and leaves
    //    dkms-trigger half-configured.
    let apt = stage.sh("apt-get install -y /root/debs/flaky-dkms_2.0-1_all.deb");
    assert_ne!(apt.code, 0, "a module upgrade that fails to build fails the apt run: {}", apt.show());
    assert!(apt.all().contains("flaky/2.0"), "{}", apt.show());
    assert_eq!(stage.dpkg_status("flaky-dkms"), "ii");
    assert_eq!(stage.dpkg_status("dkms-trigger"), "iF", "dkms-trigger is left half-configured");
    // 4. The next apt run configures it again; the same failure is not retried.
    let n = stage.builds().len();
    stage.sh("apt-get install -y -f").ok("the next apt run");
    assert_eq!(stage.dpkg_status("dkms-trigger"), "ii");
    assert_eq!(stage.builds().len(), n, "a failure with the same inputs is not retried by a rescan");
}

#[test]
fn s4_dpkg_reconfigure_headers_rebuilds_every_autoinstall_module_for_that_kernel_only() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let stage = Stage::child(&s1().stage, "s4-reconfigure");
    let n = stage.builds().len();
    let before = stage.ko_times();
    stage.sh("dpkg-reconfigure linux-headers-$K2").ok("dpkg-reconfigure");
    let builds = stage.builds()[n..].to_vec();
    assert_eq!(count(&builds), pairs(&[("pre", &e.k2), ("tbase", &e.k2), ("tuser", &e.k2)]), "{builds:?}");
    let after = stage.ko_times();
    assert_changed_exactly(&before, &after, &AUTO.iter().map(|m| format!("{m}/1.0/{}", e.k2)).collect::<Vec<_>>());
}

#[test]
fn s4_same_kver_headers_upgrade_forces_a_rebuild_for_that_kernel_only() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let stage = Stage::child(&s1().stage, "s4-upgrade");
    let deb = stage
        .sh("v=$(dpkg-query -W -f='${Version}' linux-headers-$K1); $T/repack.sh /var/cache/apt/archives/linux-headers-${K1}_*.deb \"$v+dkmstest1\"")
        .ok("repackaging the headers")
        .stdout
        .trim()
        .to_string();
    let n = stage.builds().len();
    let before = stage.ko_times();
    // The two dpkg calls apt makes (unpack and configure without triggers, then the pending
    // triggers), with a look at what the headers' hook recorded in between: a forced rebuild (the
    // ctime drift of the reinstalled headers alone would also rebuild).
    let upgrade = stage.sh(&format!("dpkg --no-triggers -i {deb}"));
    upgrade.ok("upgrading the headers package to the same KVER");
    let spool = stage.sh("dkms-trigger spool");
    assert!(spool.stdout.contains(&format!("headers-changed {} --force", e.k1)), "{}", spool.show());
    let plan = stage.sh("dkms-trigger plan");
    for m in AUTO {
        assert!(plan.stdout.lines().any(|l| l.contains("rebuild") && l.contains(&format!("{m}/1.0"))), "{}", plan.show());
    }
    let trig = stage.sh("dpkg --configure --pending");
    trig.ok("dpkg --configure --pending (the trigger)");
    let builds = stage.builds()[n..].to_vec();
    assert_eq!(count(&builds), pairs(&[("pre", &e.k1), ("tbase", &e.k1), ("tuser", &e.k1)]), "{builds:?}\n{}", trig.show());
    let after = stage.ko_times();
    assert_changed_exactly(&before, &after, &AUTO.iter().map(|m| format!("{m}/1.0/{}", e.k1)).collect::<Vec<_>>());
}

#[test]
fn s2_kbuild_upgrade_by_plain_dpkg_rebuilds_every_kernel_using_it_and_nothing_else() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let stage = Stage::child(&s1().stage, "s2-kbuild");
    let deb = stage
        .sh("kb=$(cat /etc/dkms-trigger-tests/kbuild); v=$(dpkg-query -W -f='${Version}' $kb)
             $T/repack.sh /var/cache/apt/archives/${kb}_*.deb \"$v+dkmstest1\" \
                 --append usr/lib/$kb/scripts/Makefile.modfinal '# dkms-trigger test: a changed tool file'")
        .ok("repackaging linux-kbuild")
        .stdout
        .trim()
        .to_string();
    let n = stage.builds().len();
    let before = stage.ko_times();
    let dpkg = stage.sh(&format!("dpkg -i {deb}"));
    dpkg.ok("dpkg -i linux-kbuild");
    let builds = stage.builds()[n..].to_vec();
    let mut want = Vec::new();
    for m in AUTO {
        for k in [e.k1.as_str(), e.k2.as_str()] {
            want.push((m, k));
        }
    }
    assert_eq!(count(&builds), pairs(&want), "{builds:?}\n{}", dpkg.show());
    let changed: Vec<String> = want.iter().map(|(m, k)| format!("{m}/1.0/{k}")).collect();
    assert_changed_exactly(&before, &stage.ko_times(), &changed);
}

#[test]
fn removing_the_headers_of_a_kernel_removes_its_builds_and_nothing_else() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let stage = Stage::child(&s1().stage, "remove-headers");
    let n = stage.builds().len();
    let before = stage.ko_times();
    let apt = stage.sh("apt-get purge -y linux-headers-$K1 linux-headers-${K1%-*}-common");
    apt.ok("removing the K1 headers");
    assert_eq!(stage.builds().len(), n, "nothing built");
    let after = stage.ko_times();
    let gone: Vec<&String> = before.keys().filter(|k| k.ends_with(&format!("/{}", e.k1))).collect();
    assert_eq!(gone.len(), 4, "pre, tbase, tuser and handmade were built for K1: {before:?}");
    for (k, t) in &before {
        if k.ends_with(&format!("/{}", e.k1)) {
            assert!(!after.contains_key(k), "{k} removed: {after:?}");
        } else {
            assert_eq!(after.get(k), Some(t), "{k} untouched");
        }
    }
    let st = stage.dkms_status();
    assert!(st.keys().all(|k| !k.ends_with(&e.k1)), "{st:?}");
    assert!(!stage.exists(&format!("/lib/modules/{}/updates/dkms/pre.ko", e.k1)));
}

#[test]
fn removing_the_package_gives_autoinstall_back_to_dkms() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let stage = Stage::child(&takeover().stage, "giveback");
    stage.sh("apt-get remove -y dkms-trigger").ok("apt-get remove dkms-trigger");
    assert!(!stage.exists("/etc/dkms/no-autoinstall"));
    assert_eq!(stage.dpkg_status("dkms-trigger"), "rc", "removed, conffiles (the kernel hooks) kept");
    assert!(stage.exists("/etc/kernel/header_postinst.d/dkms-trigger"));
    // Headers for K2: dkms's own hook builds pre inside the headers' postinst; our leftover hook
    // steps aside.
    let n = stage.builds().len();
    let apt = stage.sh("apt-get install -y linux-headers-$K2");
    apt.ok("installing headers after the removal");
    let builds = stage.builds()[n..].to_vec();
    assert_eq!(count(&builds), pairs(&[("pre", &e.k2)]), "{builds:?}\n{}", apt.show());
    assert_eq!(builds[0].by, format!("linux-headers-{}", e.k2));
    // A module package: dkms's common.postinst builds it again.
    let n = stage.builds().len();
    stage.sh("$T/mkmodule.sh late 1.0 >/dev/null && apt-get install -y /root/debs/late-dkms_1.0-1_all.deb").ok("late-dkms");
    let builds = stage.builds()[n..].to_vec();
    assert_eq!(count(&builds), pairs(&[("late", &e.k1), ("late", &e.k2)]), "{builds:?}");
    assert!(builds.iter().all(|b| b.by == "late-dkms"), "{builds:?}");
    // Purge: the hooks and the tool's state go too.
    stage.sh("apt-get purge -y dkms-trigger").ok("apt-get purge dkms-trigger");
    assert_eq!(stage.dpkg_status("dkms-trigger"), "", "purged");
    for f in ["/etc/kernel/header_postinst.d/dkms-trigger", "/etc/kernel/postinst.d/dkms-trigger", "/var/lib/dkms-trigger"] {
        assert!(!stage.exists(f), "{f} removed by purge");
    }
}

#[test]
fn upgrading_the_package_keeps_the_takeover_and_rebuilds_nothing() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let stage = Stage::child(&s1().stage, "upgrade-self");
    let deb = e.deb.file_name().unwrap().to_string_lossy().into_owned();
    let n = stage.builds().len();
    let before = stage.ko_times();
    let o = stage.sh(&format!(
        "v=$(dpkg-query -W -f='${{Version}}' dkms-trigger); d=$($T/repack.sh /dkms-trigger-dist/{deb} \"$v+1\"); apt-get install -y $d"
    ));
    o.ok("upgrading dkms-trigger");
    assert_eq!(stage.builds().len(), n, "nothing built: {}", o.show());
    assert_eq!(stage.ko_times(), before);
    assert!(stage.exists("/etc/dkms/no-autoinstall") && stage.exists("/var/lib/dkms-trigger/created-no-autoinstall"));
    assert_eq!(stage.dpkg_status("dkms-trigger"), "ii");
}

#[test]
fn prerm_hook_removes_a_kernels_builds_at_once_and_only_on_remove() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let stage = Stage::child(&s1().stage, "prerm-hook");
    let n = stage.builds().len();
    let before = stage.ko_times();
    // The image prerm runs the hooks for "remove" only; an upgrade must not remove anything.
    let o = stage.sh("DEB_MAINT_PARAMS=upgrade /etc/kernel/prerm.d/dkms-trigger $K1 /boot/vmlinuz-$K1");
    o.ok("prerm.d hook on upgrade");
    assert_eq!(stage.ko_times(), before);
    let o = stage.sh("DEB_MAINT_PARAMS=remove /etc/kernel/prerm.d/dkms-trigger $K1 /boot/vmlinuz-$K1");
    o.ok("prerm.d hook on remove");
    assert!(o.all().lines().count() <= 1, "at most one line: {}", o.show());
    let after = stage.ko_times();
    for (k, t) in &before {
        if k.ends_with(&format!("/{}", e.k1)) {
            assert!(!after.contains_key(k), "{k} removed: {after:?}");
        } else {
            assert_eq!(after.get(k), Some(t), "{k} untouched");
        }
    }
    assert_eq!(stage.builds().len(), n, "nothing built");
}

#[test]
fn kernel_hook_outside_dpkg_records_and_finalizes_at_once_quietly() {
    let _cleanup = Cleanup::guard();
    let e = env();
    let stage = Stage::child(&takeover().stage, "outside-dpkg");
    stage.sh("dkms unbuild -m pre -v 1.0 -k $K1 >/dev/null").ok("unbuild pre");
    let n = stage.builds().len();
    // What installkernel does for a self-built kernel: run the postinst.d hooks, outside dpkg.
    let o = stage.sh("/etc/kernel/postinst.d/dkms-trigger $K1 /boot/vmlinuz-$K1");
    o.ok("the postinst.d hook outside dpkg");
    assert!(o.all().lines().count() <= 1, "at most one line: {}", o.show());
    let builds = stage.builds()[n..].to_vec();
    assert_eq!(count(&builds), pairs(&[("pre", &e.k1)]), "{builds:?}");
    assert_eq!(builds[0].by, "-", "built right away, not from a package");
    assert_eq!(stage.dkms_status().get(&format!("pre/1.0 {}", e.k1)).map(String::as_str), Some("installed"));
    // With the tool gone (package removed, hooks left as conffiles), the hooks step aside.
    let o = stage.sh(
        "mv /usr/sbin/dkms-trigger /root/; for h in postinst.d header_postinst.d prerm.d; do /etc/kernel/$h/dkms-trigger $K1; done",
    );
    o.ok("hooks without the tool");
    assert_eq!(o.all(), "", "{}", o.show());
}

#[test]
fn noop_trigger_run_is_silent_and_builds_nothing() {
    let _cleanup = Cleanup::guard();
    let stage = Stage::child(&s1().stage, "noop");
    let n = stage.builds().len();
    // The handler as dpkg runs it for a file trigger, 5 times, timed inside the chroot.
    let o = stage.sh(
        "for i in 1 2 3 4 5; do
             s=$(date +%s%N); /var/lib/dpkg/info/dkms-trigger.postinst triggered /usr/src >/tmp/out 2>&1
             e=$(date +%s%N); cat /tmp/out; echo \"ms=$(( (e - s) / 1000000 ))\"
         done",
    );
    o.ok("postinst triggered");
    let ms: Vec<u64> = o.stdout.lines().filter_map(|l| l.strip_prefix("ms=")?.parse().ok()).collect();
    let noise: Vec<&str> = o.stdout.lines().filter(|l| !l.starts_with("ms=")).collect();
    assert!(noise.is_empty(), "a no-op trigger run prints nothing: {}", o.show());
    let mut sorted = ms.clone();
    sorted.sort();
    // The cost is printed for docs/debian.md, not asserted: timings belong to measurements.
    eprintln!("deb_e2e: no-op trigger run (postinst triggered /usr/src), ms: {ms:?}, median {}", sorted[2]);
    // Through dpkg: a package that only drops a file under /usr/src.
    let o = stage.sh(
        "mkdir -p /tmp/p/DEBIAN /tmp/p/usr/src/noop-doc && echo hi >/tmp/p/usr/src/noop-doc/README
         printf 'Package: noop-doc\\nVersion: 1\\nArchitecture: all\\nMaintainer: t <t@t.invalid>\\nDescription: t\\n' >/tmp/p/DEBIAN/control
         dpkg-deb --root-owner-group -b /tmp/p /tmp/noop-doc.deb >/dev/null
         s=$(date +%s%N); dpkg -i /tmp/noop-doc.deb; e=$(date +%s%N); echo \"ms=$(( (e - s) / 1000000 ))\"",
    );
    o.ok("dpkg -i a package under /usr/src");
    assert!(o.stdout.contains("Processing triggers for dkms-trigger"), "{}", o.show());
    assert_eq!(o.stderr, "", "{}", o.show());
    eprintln!("deb_e2e: dpkg -i of a package firing the /usr/src trigger: {}", o.stdout.lines().last().unwrap_or(""));
    assert_eq!(stage.builds().len(), n, "nothing built");
}

/// Asserts that exactly the `changed` built modules ("M/V/K") got a newer file, and every other
/// one kept its time.
#[track_caller]
fn assert_changed_exactly(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, changed: &[String]) {
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "the same modules are built");
    for (k, t) in before {
        let now = after[k];
        if changed.contains(k) {
            assert!(now > *t, "{k} rebuilt (newer build time): before {t}, after {now}");
        } else {
            assert_eq!(now, *t, "{k} untouched");
        }
    }
}
