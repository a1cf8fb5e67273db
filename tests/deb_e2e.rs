//! Real end-to-end tests of the Debian package (docs/debian.md): the .deb that `make deb` builds is
//! installed with the real apt and dpkg into a chroot of each supported Debian release made by
//! mmdebstrap from the release's packages: Debian 12 (bookworm: dkms 3.0.10, kernel 6.1, gcc-12,
//! one linux-kbuild-6.1) and Debian 13 (trixie: dkms 3.2, kernel 6.12, gcc-14, one linux-kbuild
//! per ABI, headers that depend on the kernel image). Next to the real dkms: real linux-headers
//! packages (the two newest ABIs of the release's default series, chosen when the chroot is built)
//! and module packages made dh_dkms-style by tests/deb/mkmodule.sh, whose postinst runs dkms's own
//! common.postinst. Every scenario is a module with one test per release (`s1_....::trixie`); the
//! expectations that differ between releases are read from the chroot (which kernels use a kbuild
//! tree, whether a kernel image is installed), never from the release's name.
//!
//! Needs root, network the first time (then the base tarballs are cached in
//! /var/cache/dkms-trigger-tests, see tests/deb/base.sh) and about 2 GB per release under /var/tmp.
//! Never skips: when the package or a chroot cannot be built, every test fails and says why.
//!
//! The chroots are overlay layers, each made once and shared (a layer is never changed once another
//! is stacked on it):
//!
//! ```text
//! (per release, under /var/tmp/dkms-trigger-deb-e2e/SUITE)
//! base     cached tarball: dkms, toolchain, headers K1 installed, headers K2 downloaded
//! takeover pre-dkms installed while dkms's own autoinstall is in charge; then dkms-trigger
//! s1       headers K2 + two dependent module packages in one apt run; then a hand-built module
//! <test>   one layer per scenario, on top of `takeover` or `s1`
//! ```
//!
//! Builds are counted with the generated modules' build recorder (/var/log/dkms-test-builds.log, one
//! line per compile with the package whose maintainer script ran it).
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

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
    let o = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
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

/// A Debian release the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    Bookworm,
    Trixie,
}

impl Rel {
    fn suite(self) -> &'static str {
        match self {
            Rel::Bookworm => "bookworm",
            Rel::Trixie => "trixie",
        }
    }

    fn index(self) -> usize {
        self as usize
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
        // Next to the parent: the layers of one release share a directory.
        let dir = parent.dir.parent().expect("a layer lives in a release directory").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let mut lowers = vec![parent.dir.join("upper")];
        lowers.extend(parent.lowers.iter().cloned());
        Stage { dir, lowers }
    }

    /// Runs a bash script inside the chroot (tests/deb/enter.sh), with K1, K2 (the two kernels,
    /// oldest first) and T (tests/deb, read-only) set; the checkout is at /dkms-trigger-src and
    /// its dist/ at /dkms-trigger-dist, read-only.
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
            .arg("--bind")
            .arg(format!("{}:/dkms-trigger-src", repo().display()))
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

/// The package, built once on the host for every release.
struct Package {
    deb: PathBuf,
    changes: PathBuf,
    /// Holds WORK/.lock for the whole run: one run of this suite on the machine at a time (another
    /// checkout's run would delete the layers under WORK).
    _lock: File,
}

fn package() -> &'static Package {
    static PKG: OnceLock<Result<Package, String>> = OnceLock::new();
    match PKG.get_or_init(build_package) {
        Ok(p) => p,
        Err(why) => panic!("the Debian package could not be built: {why}"),
    }
}

fn build_package() -> Result<Package, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("must run as root (apt, mmdebstrap, mount namespaces)".into());
    }
    std::fs::create_dir_all(WORK).map_err(|e| format!("creating {WORK}: {e}"))?;
    let lock = File::create(Path::new(WORK).join(".lock")).map_err(|e| e.to_string())?;
    fs2::FileExt::lock_exclusive(&lock).map_err(|e| format!("locking {WORK}/.lock: {e}"))?;
    // Layers of the layout before releases had directories of their own.
    for e in std::fs::read_dir(WORK).map_err(|e| e.to_string())?.flatten() {
        let name = e.file_name();
        if name != ".lock" && ![Rel::Bookworm, Rel::Trixie].iter().any(|r| name == r.suite()) {
            std::fs::remove_dir_all(e.path()).map_err(|err| format!("removing {}: {err}", e.path().display()))?;
        }
    }
    host_step("host packages (tests/deb/setup.sh)", &mut Command::new(repo().join("tests/deb/setup.sh")))?;
    host_step("make deb", Command::new("make").arg("deb").current_dir(repo()))?;
    let version =
        host_step("changelog version", Command::new("dpkg-parsechangelog").arg("-SVersion").current_dir(repo()))?
            .stdout
            .trim()
            .to_string();
    let arch = host_step("architecture", Command::new("dpkg").arg("--print-architecture"))?.stdout.trim().to_string();
    let deb = repo().join(format!("dist/dkms-trigger_{version}_{arch}.deb"));
    let changes = repo().join(format!("dist/dkms-trigger_{version}_{arch}.changes"));
    if !deb.is_file() {
        return Err(format!("make deb did not produce {}", deb.display()));
    }
    Ok(Package { deb, changes, _lock: lock })
}

/// Everything prepared once per release: the base chroot and its kernels.
struct Env {
    deb: PathBuf,
    base: Stage,
    k1: String,
    k2: String,
    /// Holds WORK/SUITE/.lock: one run of this suite at a time.
    _lock: File,
}

fn env(rel: Rel) -> &'static Env {
    static ENV: [OnceLock<Result<Env, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    match ENV[rel.index()].get_or_init(|| prepare(rel)) {
        Ok(e) => e,
        Err(why) => panic!("the {} test chroot could not be prepared: {why}", rel.suite()),
    }
}

/// WORK/SUITE: the layers of one release.
fn work(rel: Rel) -> PathBuf {
    Path::new(WORK).join(rel.suite())
}

fn prepare(rel: Rel) -> Result<Env, String> {
    let started = Instant::now();
    let deb = package().deb.clone();
    let suite = rel.suite();
    let tarball = host_step(
        &format!("{suite} base chroot (tests/deb/base.sh)"),
        Command::new(repo().join("tests/deb/base.sh")).arg(suite),
    )?
    .stdout
    .trim()
    .to_string();

    let work = work(rel);
    std::fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    let lock = File::create(work.join(".lock")).map_err(|e| e.to_string())?;
    fs2::FileExt::lock_exclusive(&lock).map_err(|e| format!("locking {}/.lock: {e}", work.display()))?;
    // Layers left by a filtered or kept run (see Cleanup).
    for e in std::fs::read_dir(&work).map_err(|e| e.to_string())?.flatten() {
        if e.file_name() != ".lock" {
            std::fs::remove_dir_all(e.path()).map_err(|err| format!("removing {}: {err}", e.path().display()))?;
        }
    }
    let base_dir = work.join("base");
    std::fs::create_dir_all(base_dir.join("upper")).map_err(|e| e.to_string())?;
    host_step(
        &format!("extracting the {suite} base chroot"),
        Command::new("tar").args(["--zstd", "-xpf", &tarball, "--numeric-owner", "-C"]).arg(base_dir.join("upper")),
    )?;
    let kernels = std::fs::read_to_string(base_dir.join("upper/etc/dkms-trigger-tests/kernels"))
        .map_err(|e| format!("the base chroot has no kernel choice: {e}"))?;
    let ks: Vec<&str> = kernels.split_whitespace().collect();
    if ks.len() != 2 {
        return Err(format!("bad kernel choice {kernels:?}"));
    }
    eprintln!("deb_e2e: {suite}: kernels {} and {}; prepared in {:.0}s", ks[0], ks[1], started.elapsed().as_secs_f64());
    Ok(Env {
        deb,
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

fn takeover(rel: Rel) -> &'static Takeover {
    static T: [OnceLock<Result<Takeover, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    match T[rel.index()].get_or_init(|| make_takeover(rel)) {
        Ok(t) => t,
        Err(why) => panic!("{}: {why}", rel.suite()),
    }
}

fn make_takeover(rel: Rel) -> Result<Takeover, String> {
    let e = env(rel);
    let stage = Stage::child(&e.base, "takeover");
    let pre = stage.sh("$T/mkmodule.sh pre 1.0 >/dev/null && apt-get install -y /root/debs/pre-dkms_1.0-1_all.deb");
    if pre.code != 0 {
        return Err(format!("installing pre-dkms with dkms's own autoinstall: {}", pre.show()));
    }
    let builds_before = stage.builds();
    let ko_before = stage.ko_times();
    let deb = e.deb.file_name().unwrap().to_string_lossy().into_owned();
    let install = stage.sh(&format!("apt-get install -y /dkms-trigger-dist/{deb}"));
    eprintln!("deb_e2e: {}: installing dkms-trigger: {:.1}s", rel.suite(), install.secs);
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

fn s1(rel: Rel) -> &'static S1 {
    static S: [OnceLock<Result<S1, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    match S[rel.index()].get_or_init(|| make_s1(rel)) {
        Ok(s) => s,
        Err(why) => panic!("{}: {why}", rel.suite()),
    }
}

fn make_s1(rel: Rel) -> Result<S1, String> {
    let t = takeover(rel);
    let stage = Stage::child(&t.stage, "s1");
    // tuser needs tbase (BUILD_DEPENDS, and its make refuses to run before tbase is installed for
    // the kernel); tbase-dkms Depends on tuser-dkms, so dpkg configures the dependent first.
    let gen = stage.sh("$T/mkmodule.sh tuser 1.0 --build-depends tbase --requires-installed tbase >/dev/null
         $T/mkmodule.sh tbase 1.0 --depends tuser-dkms >/dev/null");
    if gen.code != 0 {
        return Err(format!("generating the S1 modules: {}", gen.show()));
    }
    let before = stage.builds().len();
    let apt = stage.sh(
        "apt-get install -y linux-headers-$K2 /root/debs/tbase-dkms_1.0-1_all.deb /root/debs/tuser-dkms_1.0-1_all.deb",
    );
    // Not asserted here (the initramfs issue's own tests count them): how often this apt run made
    // an initramfs, for the record (update-initramfs prints one line per generation).
    let initramfs = apt.all().lines().filter(|l| l.contains("update-initramfs: Generating")).count();
    eprintln!("deb_e2e: {}: S1 apt run: {:.1}s, initramfs generations: {initramfs}", rel.suite(), apt.secs);
    let builds = stage.builds()[before..].to_vec();
    let dpkg_log = stage.sh("cat /var/log/dpkg.log").stdout;
    let dkms_status = stage.dkms_status();
    // A module built by hand (AUTOINSTALL=""), for the later scenarios: no event may touch it.
    let hand = stage.sh("$T/mkmodule.sh handmade 1.0 --autoinstall '' --source-only >/dev/null
         dkms add -m handmade -v 1.0 >/dev/null
         for k in $K1 $K2; do dkms install -m handmade -v 1.0 -k $k >/dev/null; done");
    if hand.code != 0 {
        return Err(format!("building the hand-made module: {}", hand.show()));
    }
    Ok(S1 { stage, apt, builds, dpkg_log, dkms_status })
}

const AUTO: [&str; 3] = ["pre", "tbase", "tuser"];

/// Held by every test: when the last test of a release ends in a full run (passed or failed), that
/// release's layers (about 1 GB) are deleted, unless DKMS_TRIGGER_DEB_KEEP is set to look at them.
/// A filtered run leaves them; the next run deletes them before it starts.
struct Cleanup(Rel);

impl Cleanup {
    fn guard(rel: Rel) -> Cleanup {
        Cleanup(rel)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static DONE: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
        // One test per release for each scenario (`both!` below).
        let total = include_str!("deb_e2e.rs").lines().filter(|l| l.starts_with(concat!("both", "!("))).count();
        let done = DONE[self.0.index()].fetch_add(1, Ordering::SeqCst) + 1;
        if done < total {
            return;
        }
        let work = work(self.0);
        if std::env::var_os("DKMS_TRIGGER_DEB_KEEP").is_some() {
            eprintln!("deb_e2e: keeping the layers in {}", work.display());
            return;
        }
        for e in std::fs::read_dir(&work).into_iter().flatten().flatten() {
            if e.file_name() != ".lock" {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// `both!(scenario);` makes the module `scenario` with the tests `bookworm` and `trixie`, each
/// running `fn scenario(rel: Rel)` on its release.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[test]
            fn bookworm() {
                let _cleanup = Cleanup::guard(Rel::Bookworm);
                super::$name(Rel::Bookworm);
            }
            #[test]
            fn trixie() {
                let _cleanup = Cleanup::guard(Rel::Trixie);
                super::$name(Rel::Trixie);
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------------

both!(deb_builds_and_lintian_reports_no_errors_and_only_accepted_warnings);
/// bookworm: the host's `make deb` (Debian 12's rustc is older than Rust 1.85: a rustup toolchain
/// and dpkg-buildpackage -d), checked by the host's lintian. trixie: `make deb` inside the trixie
/// chroot with Debian's own cargo and rustc, the declared Build-Depends installed and checked (no
/// -d), then trixie's lintian; that package must hold the same files.
fn deb_builds_and_lintian_reports_no_errors_and_only_accepted_warnings(rel: Rel) {
    let (lintian, listing) = match rel {
        Rel::Bookworm => {
            let p = package();
            let o =
                run(Command::new("lintian").args(["--fail-on", "error", "--tag-display-limit", "0"]).arg(&p.changes));
            (o, run(Command::new("dpkg-deb").arg("-c").arg(&p.deb)))
        }
        Rel::Trixie => {
            let e = env(rel);
            let stage = Stage::child(&e.base, "make-deb");
            let deps = stage.sh(
                "apt-get install -y -q --no-install-recommends build-essential lintian \
                     $(sed -n 's/^Build-Depends: *//p' /dkms-trigger-src/debian/control | tr -d ',' | sed 's/([^)]*)//g')",
            );
            deps.ok("installing the declared Build-Depends from the release's archive");
            // cargo fetches the crates over HTTPS: the chroot trusts what the host trusts (a
            // machine may reach crates.io through a proxy with its own certificate authority).
            let ca = ["CARGO_HTTP_CAINFO", "SSL_CERT_FILE"]
                .iter()
                .filter_map(std::env::var_os)
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
            std::fs::create_dir_all(stage.dir.join("upper/root")).unwrap();
            std::fs::copy(&ca, stage.dir.join("upper/root/host-ca.crt"))
                .unwrap_or_else(|e| panic!("copying {}: {e}", ca.display()));
            let build = stage.sh("export CARGO_HTTP_CAINFO=/root/host-ca.crt
                 mkdir -p /root/src/dkms-trigger && cd /root/src/dkms-trigger
                 tar -C /dkms-trigger-src --exclude=./target --exclude=./dist --exclude=./.git --exclude='./.tmp*' \
                     --exclude=./debian/dkms-trigger --exclude=./debian/.debhelper -cf - . | tar -xf -
                 dpkg-checkbuilddeps
                 make deb 2>&1");
            build.ok("make deb with Debian's own toolchain");
            assert!(
                build.stdout.lines().any(|l| l.trim_end() == "dpkg-buildpackage -b -us -uc"),
                "built without -d: {}",
                build.show()
            );
            let o = stage.sh("lintian --fail-on error --tag-display-limit 0 /root/src/dkms-trigger/dist/*.changes");
            (o, stage.sh("dpkg-deb -c /root/src/dkms-trigger/dist/*.deb"))
        }
    };
    // Exit 0: lintian ran to the end and found no error (1 is lintian's own failure, 2 an error tag);
    // a lintian that crashed prints no tags, so its output alone proves nothing.
    assert_eq!(lintian.code, 0, "lintian did not run cleanly: {}", lintian.show());
    let accepted = std::fs::read_to_string(repo().join("debian/README.source")).unwrap();
    let accepted: Vec<&str> = accepted.lines().filter_map(|l| l.strip_prefix("- `")?.split('`').next()).collect();
    let mut bad = Vec::new();
    for l in lintian.all().lines() {
        // "W: dkms-trigger: tag-name [context]"
        let mut f = l.split_whitespace();
        let (Some(level), Some(_pkg), Some(tag)) = (f.next(), f.next(), f.next()) else { continue };
        match level {
            "E:" => bad.push(l.to_string()),
            "W:" if !accepted.contains(&tag) => bad.push(l.to_string()),
            _ => {}
        }
    }
    assert!(
        bad.is_empty(),
        "lintian errors or warnings not accepted in debian/README.source:\n{}\n\n{}",
        bad.join("\n"),
        lintian.show()
    );
    listing.ok("dpkg-deb -c");
    // The boot unit where the release keeps units (debian/rules asks systemd's pkg-config file).
    let unit = match rel {
        Rel::Bookworm => "./lib/systemd/system/dkms-trigger.service",
        Rel::Trixie => "./usr/lib/systemd/system/dkms-trigger.service",
    };
    assert!(
        listing.stdout.lines().any(|l| l.ends_with(unit) && l.starts_with("-rw-r--r--")),
        "{unit} 0644 in {}",
        listing.stdout
    );
    for f in [
        "./usr/sbin/dkms-trigger",
        "./etc/kernel/postinst.d/dkms-trigger",
        "./etc/kernel/header_postinst.d/dkms-trigger",
        "./etc/kernel/prerm.d/dkms-trigger",
    ] {
        assert!(
            listing.stdout.lines().any(|l| l.ends_with(f) && l.starts_with("-rwxr-xr-x")),
            "{f} 0755 in {}",
            listing.stdout
        );
    }
    // Generated by the binary at `make install` (src/generate.rs); dh_compress gzips the man page.
    for f in [
        "./usr/share/bash-completion/completions/dkms-trigger",
        "./usr/share/zsh/vendor-completions/_dkms-trigger",
        "./usr/share/fish/vendor_completions.d/dkms-trigger.fish",
        "./usr/share/man/man8/dkms-trigger.8.gz",
    ] {
        assert!(
            listing.stdout.lines().any(|l| l.ends_with(f) && l.starts_with("-rw-r--r--")),
            "{f} 0644 in {}",
            listing.stdout
        );
    }
}

both!(installing_the_package_takes_over_autoinstall_and_rebuilds_nothing_up_to_date);
fn installing_the_package_takes_over_autoinstall_and_rebuilds_nothing_up_to_date(rel: Rel) {
    let e = env(rel);
    let t = takeover(rel);
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

both!(s1_one_apt_run_builds_both_dependent_modules_for_every_kernel_once_after_configure);
fn s1_one_apt_run_builds_both_dependent_modules_for_every_kernel_once_after_configure(rel: Rel) {
    let e = env(rel);
    let s = s1(rel);
    s.apt.ok("the S1 apt run");
    // dpkg configured the dependent before its dependency (the S1 trap).
    let pos = |what: &str| s.dpkg_log.find(what).unwrap_or_else(|| panic!("{what} in dpkg.log:\n{}", s.dpkg_log));
    assert!(pos("configure tuser-dkms") < pos("configure tbase-dkms"), "{}", s.dpkg_log);
    // Each pair exactly once, the dependency first on every kernel. tbase and tuser, configured
    // in this run, are built by the trigger's finalizer (nothing inside a package's own
    // maintainer script); pre, configured before, may be built by K2's kernel hook ahead of the
    // initramfs (Debian 13, whose headers bring in the image) or by the finalizer.
    let want = pairs(&[("pre", &e.k2), ("tbase", &e.k1), ("tbase", &e.k2), ("tuser", &e.k1), ("tuser", &e.k2)]);
    assert_eq!(count(&s.builds), want, "{:?}\n{}", s.builds, s.apt.show());
    let k2_image = format!("linux-image-{}", e.k2);
    assert!(
        s.builds.iter().all(|b| b.by == "dkms-trigger" || (b.module == "pre" && b.by == k2_image)),
        "{:?}",
        s.builds
    );
    for k in [&e.k1, &e.k2] {
        let at = |m: &str| s.builds.iter().position(|b| b.module == m && &b.kernel == k).unwrap();
        assert!(at("tbase") < at("tuser"), "tbase before tuser on {k}: {:?}", s.builds);
    }
    for m in AUTO {
        for k in [&e.k1, &e.k2] {
            assert_eq!(
                s.dkms_status.get(&format!("{m}/1.0 {k}")).map(String::as_str),
                Some("installed"),
                "{m} on {k}: {:?}",
                s.dkms_status
            );
        }
    }
    // The kernel hooks were silent (run-parts --report names a hook only when it prints).
    assert!(!s.apt.all().contains("postinst.d/dkms-trigger"), "{}", s.apt.show());
}

both!(s3_module_failing_on_one_kernel_warns_and_a_failing_module_upgrade_fails_its_transaction);
fn s3_module_failing_on_one_kernel_warns_and_a_failing_module_upgrade_fails_its_transaction(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&takeover(rel).stage, "s3");
    stage
        .sh("$T/mkmodule.sh flaky 1.0 --fail-on $K2 >/dev/null; $T/mkmodule.sh flaky 2.0 --fail-on all >/dev/null")
        .ok("generating flaky");
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
    // Debian 13's headers bring in K2's image, whose kernel hook tries flaky ahead of the
    // initramfs: the trigger's finalize reports that failure rather than building it again.
    if apt.all().contains("the finalize at the end of this transaction reports it") {
        assert!(apt.all().contains("not built again"), "{}", apt.show());
    }
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

both!(s4_dpkg_reconfigure_headers_rebuilds_every_autoinstall_module_for_that_kernel_only);
fn s4_dpkg_reconfigure_headers_rebuilds_every_autoinstall_module_for_that_kernel_only(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "s4-reconfigure");
    let n = stage.builds().len();
    let before = stage.ko_times();
    stage.sh("dpkg-reconfigure linux-headers-$K2").ok("dpkg-reconfigure");
    let builds = stage.builds()[n..].to_vec();
    assert_eq!(count(&builds), pairs(&[("pre", &e.k2), ("tbase", &e.k2), ("tuser", &e.k2)]), "{builds:?}");
    let after = stage.ko_times();
    assert_changed_exactly(&before, &after, &AUTO.iter().map(|m| format!("{m}/1.0/{}", e.k2)).collect::<Vec<_>>());
}

both!(s4_same_kver_headers_upgrade_forces_a_rebuild_for_that_kernel_only);
fn s4_same_kver_headers_upgrade_forces_a_rebuild_for_that_kernel_only(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "s4-upgrade");
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
        assert!(
            plan.stdout.lines().any(|l| l.contains("rebuild") && l.contains(&format!("{m}/1.0"))),
            "{}",
            plan.show()
        );
    }
    let trig = stage.sh("dpkg --configure --pending");
    trig.ok("dpkg --configure --pending (the trigger)");
    let builds = stage.builds()[n..].to_vec();
    assert_eq!(
        count(&builds),
        pairs(&[("pre", &e.k1), ("tbase", &e.k1), ("tuser", &e.k1)]),
        "{builds:?}\n{}",
        trig.show()
    );
    let after = stage.ko_times();
    assert_changed_exactly(&before, &after, &AUTO.iter().map(|m| format!("{m}/1.0/{}", e.k1)).collect::<Vec<_>>());
}

both!(s2_kbuild_upgrade_by_plain_dpkg_rebuilds_every_kernel_using_it_and_nothing_else);
fn s2_kbuild_upgrade_by_plain_dpkg_rebuilds_every_kernel_using_it_and_nothing_else(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "s2-kbuild");
    let deb = stage
        .sh("kb=$(cat /etc/dkms-trigger-tests/kbuild); v=$(dpkg-query -W -f='${Version}' $kb)
             $T/repack.sh /var/cache/apt/archives/${kb}_*.deb \"$v+dkmstest1\" \
                 --append usr/lib/$kb/scripts/Makefile.modfinal '# dkms-trigger test: a changed tool file'")
        .ok("repackaging linux-kbuild")
        .stdout
        .trim()
        .to_string();
    // The kernels whose header trees use this kbuild (their scripts/ resolves into it): both on
    // Debian 12 (one linux-kbuild-6.1), K1 alone on Debian 13 (one kbuild package per ABI).
    let users = stage
        .sh("kb=$(cat /etc/dkms-trigger-tests/kbuild)
             for k in $K1 $K2; do case $(readlink -f /usr/src/linux-headers-$k/scripts) in /usr/lib/$kb/*) echo $k ;; esac; done")
        .ok("finding the kernels that use the kbuild")
        .stdout
        .clone();
    let users: Vec<&str> = users.split_whitespace().collect();
    assert!(users.contains(&e.k1.as_str()), "K1's headers use K1's kbuild: {users:?}");
    eprintln!("deb_e2e: {}: kernels using K1's kbuild: {users:?}", rel.suite());
    let n = stage.builds().len();
    let before = stage.ko_times();
    let dpkg = stage.sh(&format!("dpkg -i {deb}"));
    dpkg.ok("dpkg -i linux-kbuild");
    let builds = stage.builds()[n..].to_vec();
    let mut want = Vec::new();
    for m in AUTO {
        for k in &users {
            want.push((m, *k));
        }
    }
    assert_eq!(count(&builds), pairs(&want), "{builds:?}\n{}", dpkg.show());
    let changed: Vec<String> = want.iter().map(|(m, k)| format!("{m}/1.0/{k}")).collect();
    assert_changed_exactly(&before, &stage.ko_times(), &changed);
}

both!(a_failed_rebuild_keeps_the_last_good_build_and_what_can_succeed_is_retried);
/// Issue 12, (a) (b) (c) (f): keeper, installed and working on both kernels, stops compiling while
/// /etc/keeper-broken exists. (a) A real toolchain upgrade (the package holding gcc's files under
/// /usr/lib/gcc, repackaged with a changed file) rebuilds every module on every kernel: keeper's
/// rebuild fails, apt exits 0 with a warning, and keeper stays loadable on both kernels. (b) The
/// same through `dpkg-reconfigure linux-headers-K2`. Once the cause is gone, `finalize
/// --retry-failed` (empty spool) rebuilds it on both. (c) A finalize killed between moving the old
/// build aside and moving the new one in: the next finalize leaves it installed. (f) A rebuild that
/// hangs past job_timeout is not held against keeper: a plain finalize retries it.
fn a_failed_rebuild_keeps_the_last_good_build_and_what_can_succeed_is_retried(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "keep-last-good");
    stage
        .sh("$T/mkmodule.sh keeper 1.0 --fail-while /etc/keeper-broken --hang-while /etc/keeper-hangs >/dev/null
             apt-get install -y /root/debs/keeper-dkms_1.0-1_all.deb")
        .ok("installing keeper");
    let loadable = |when: &str| -> String {
        let mut shown = String::new();
        for k in [&e.k1, &e.k2] {
            let o = stage.sh(&format!("modinfo -k {k} -F vermagic keeper; modinfo -k {k} -n keeper"));
            assert!(
                o.code == 0 && o.stdout.starts_with(&format!("{k} ")),
                "{when}: keeper loadable on {k}: {}",
                o.show()
            );
            let st = stage.dkms_status();
            assert_eq!(st.get(&format!("keeper/1.0 {k}")).map(String::as_str), Some("installed"), "{when}: {st:?}");
            shown.push_str(&format!("$ modinfo -k {k} -F vermagic keeper; modinfo -k {k} -n keeper\n{}", o.stdout));
        }
        shown
    };
    loadable("after its install");

    // (a) the toolchain upgrade, keeper broken: the package of the compiler binary itself (gcc-12;
    // Debian 13: gcc-14-x86-64-linux-gnu), whose files under /usr/lib/gcc or /usr/libexec/gcc
    // fire dkms-trigger's dpkg trigger, and whose replaced binary changes the compiler part of
    // every fingerprint.
    let gcc = stage
        .sh("gcc=$(readlink -f \"$(command -v gcc)\"); pkg=$(dpkg -S \"$gcc\" | cut -d: -f1)
             v=$(dpkg-query -W -f='${Version}' $pkg)
             spec=$(dpkg -L $pkg | grep -E '^/usr/(lib|libexec)/gcc/.*[.]spec$' | head -n 1)
             cd /root && apt-get download -q $pkg >/dev/null
             $T/repack.sh /root/${pkg}_*.deb \"$v+dkmstest1\" ${spec:+--append \"${spec#/}\" '# dkms-trigger test: a changed toolchain file'}
             # Packages that want exactly this version (Debian 13: gcc-14 wants its
             # gcc-14-x86-64-linux-gnu) follow it, or apt would remove them.
             for r in $(dpkg-query -W -f='${Package} ${Depends}\\n' | grep -F \"$pkg (= $v)\" | cut -d' ' -f1); do
                 rv=$(dpkg-query -W -f='${Version}' $r)
                 (cd /root && apt-get download -q $r >/dev/null)
                 $T/repack.sh /root/${r}_*.deb \"$rv+dkmstest1\" --control-sed \"s/$pkg (= $v)/$pkg (= $v+dkmstest1)/\"
             done")
        .ok("repackaging the package of gcc's files")
        .stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    stage.sh("touch /etc/keeper-broken").ok("breaking keeper");
    let n = stage.builds().len();
    let apt = stage.sh(&format!("apt-get install -y {gcc}"));
    apt.ok("the toolchain upgrade with keeper broken");
    let mut want = Vec::new();
    for k in [&e.k1, &e.k2] {
        for m in ["keeper", "pre", "tbase", "tuser"] {
            want.push((m, k.as_str()));
        }
    }
    assert_eq!(count(&stage.builds()[n..]), pairs(&want), "every module rebuilt on every kernel: {}", apt.show());
    for k in [&e.k1, &e.k2] {
        assert!(
            apt.all().lines().any(|l| l.contains("warning: keeper/1.0 failed for")
                && l.contains(k.as_str())
                && l.contains("previous build is kept")),
            "a warning for keeper on {k}: {}",
            apt.show()
        );
    }
    let modinfo = loadable("after the failed toolchain rebuild");
    eprintln!("deb_e2e: {}: (a) the apt run:\n{}\n(a) after it:\n{modinfo}", rel.suite(), apt.show());
    let status = stage.sh("dkms-trigger status");
    assert!(status.stdout.contains("rebuild failed, previous build kept"), "{}", status.show());

    // (b) dpkg-reconfigure of K2's headers, keeper still broken.
    let rc = stage.sh("dpkg-reconfigure linux-headers-$K2");
    rc.ok("dpkg-reconfigure linux-headers-K2 with keeper broken");
    assert!(rc.all().contains("warning: keeper/1.0 failed for"), "{}", rc.show());
    loadable("after the failed forced rebuild");

    // The cause goes; --retry-failed with an empty spool rebuilds keeper, and only keeper, on both.
    stage.sh("rm /etc/keeper-broken").ok("mending keeper");
    let n = stage.builds().len();
    let retry = stage.sh("dkms-trigger spool --json; dkms-trigger finalize --retry-failed");
    retry.ok("finalize --retry-failed");
    assert!(retry.stdout.contains("\"intents\": []") || retry.stdout.contains("\"intents\":[]"), "{}", retry.show());
    assert_eq!(
        count(&stage.builds()[n..]),
        pairs(&[("keeper", e.k1.as_str()), ("keeper", e.k2.as_str())]),
        "{}",
        retry.show()
    );
    loadable("after the retry");
    let status = stage.sh("dkms-trigger status --json");
    assert!(!status.stdout.contains("failed") && !status.stdout.contains("stale"), "{}", status.show());

    // (c) killed with the old build moved aside and the new one not yet in place.
    // The failpoint makes the finalizer SIGKILL itself (not the last command of the script: bash
    // would exec it as the namespace's init, which ignores the signal; the shell runs with -e).
    let killed = stage.sh("dkms-trigger record rebuild -m keeper -k $K2
         DKMS_TRIGGER_FAILPOINTS=swap-after-old-moved dkms-trigger finalize || echo rc=$?");
    assert!(killed.stdout.contains("rc=137"), "killed by the failpoint: {}", killed.show());
    let gone = stage.sh("modinfo -k $K2 keeper");
    assert_ne!(gone.code, 0, "killed with the old build moved aside: nothing installed yet: {}", gone.show());
    let after = stage.sh("dkms-trigger finalize");
    after.ok("the finalize after the kill");
    loadable("after a finalize killed mid-swap and the next one");

    // (f) a hang past job_timeout, then the cause goes: a plain finalize retries it.
    stage
        .sh("mkdir -p /etc/dkms-trigger/config.d && echo 'job_timeout = 20' > /etc/dkms-trigger/config.d/50-test.toml
             touch /etc/keeper-hangs")
        .ok("making keeper hang");
    let hung = stage.sh("dkms-trigger record rebuild -m keeper -k $K1; dkms-trigger finalize");
    assert!(hung.all().contains("timeout"), "{}", hung.show());
    let status = stage.sh("dkms-trigger status --json");
    assert!(status.stdout.contains("a reason not the module's"), "{}", status.show());
    loadable("after the timeout");
    stage.sh("rm /etc/keeper-hangs").ok("mending keeper");
    let n = stage.builds().len();
    stage.sh("dkms-trigger finalize").ok("a plain finalize");
    assert_eq!(count(&stage.builds()[n..]), pairs(&[("keeper", e.k1.as_str())]), "retried without --retry-failed");
    loadable("after the automatic retry");
}

both!(a_module_source_that_cannot_be_used_fails_only_its_own_transaction);
/// Issue 12, (d) (e): a package whose dkms.conf ends with a bash syntax error is built (dkms reads
/// it that way); a package whose source dkms-trigger cannot use (a world-writable source file)
/// fails its own apt run, naming it, and neither the next headers install nor another module
/// package's apt run fails for it; dkms-trigger itself stays configured throughout.
fn a_module_source_that_cannot_be_used_fails_only_its_own_transaction(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "unusable");
    stage
        .sh("$T/mkmodule.sh late 1.0 --late-syntax-error >/dev/null
             $T/mkmodule.sh sloppy 1.0 --untrusted >/dev/null
             $T/mkmodule.sh other 1.0 >/dev/null")
        .ok("generating the modules");
    // (d)
    let n = stage.builds().len();
    stage.sh("apt-get install -y /root/debs/late-dkms_1.0-1_all.deb").ok("installing late");
    assert_eq!(count(&stage.builds()[n..]), pairs(&[("late", e.k1.as_str()), ("late", e.k2.as_str())]));
    // (e)
    let apt = stage.sh("apt-get install -y /root/debs/sloppy-dkms_1.0-1_all.deb");
    assert_ne!(apt.code, 0, "the transaction that brings an unusable source fails: {}", apt.show());
    assert!(apt.all().contains("error: sloppy/1.0 cannot be used") && apt.all().contains("writable"), "{}", apt.show());
    assert_eq!(stage.dpkg_status("dkms-trigger"), "ii", "{}", apt.show());
    let n = stage.builds().len();
    let headers = stage.sh("apt-get install -y --reinstall linux-headers-$K1");
    headers.ok("the next apt run: headers");
    assert_eq!(stage.dpkg_status("dkms-trigger"), "ii");
    let other = stage.sh("apt-get install -y /root/debs/other-dkms_1.0-1_all.deb");
    other.ok("the apt run after: another module package");
    assert_eq!(stage.dpkg_status("dkms-trigger"), "ii");
    assert_eq!(stage.dpkg_status("other-dkms"), "ii");
    let built = count(&stage.builds()[n..]);
    assert!(!built.keys().any(|(m, _)| m == "sloppy"), "never built: {built:?}");
    for k in [&e.k1, &e.k2] {
        assert!(built.contains_key(&("other".to_string(), k.to_string())), "{built:?}\n{}", other.show());
    }
    let status = stage.sh("dkms-trigger status");
    assert!(status.all().contains("sloppy"), "status lists it: {}", status.show());
}

both!(removing_the_headers_of_a_kernel_removes_its_builds_and_nothing_else);
/// Without a kernel image (Debian 12's headers do not pull one in), removing the headers is the
/// kernel's end. Where the image is installed (Debian 13's headers depend on it), the kernel stays
/// and so do its modules; purging the image (and with it the headers) removes them.
fn removing_the_headers_of_a_kernel_removes_its_builds_and_nothing_else(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "remove-headers");
    let n = stage.builds().len();
    let before = stage.ko_times();
    let image = format!("linux-image-{}", e.k1);
    let has_image = stage.dpkg_status(&image) == "ii";
    eprintln!("deb_e2e: {}: {image} installed: {has_image}", rel.suite());
    let apt = stage.sh("apt-get purge -y linux-headers-$K1 linux-headers-${K1%-*}-common");
    apt.ok("removing the K1 headers");
    assert_eq!(stage.builds().len(), n, "nothing built");
    if has_image {
        assert_eq!(stage.ko_times(), before, "the kernel is still installed: its modules stay");
        let apt = stage.sh(&format!("apt-get purge -y {image}"));
        apt.ok("purging the K1 image");
        assert_eq!(stage.builds().len(), n, "nothing built");
    }
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

both!(installing_or_reinstalling_a_kernel_image_leaves_its_modules_built_once_by_the_trigger);
/// K1's image installed (Debian 12: a first install next to its headers) or reinstalled (Debian 13,
/// where the headers brought it in). Debian 13's dkms ships /etc/kernel/preinst.d/dkms, which
/// unbuilds the kernel's AUTOINSTALL modules before an image upgrade without looking at
/// /etc/dkms/no-autoinstall: there the finalizer must build them again, once, at the end. Where no
/// such hook exists nothing is built (the image is no build input). The hand-built module is never
/// touched.
fn installing_or_reinstalling_a_kernel_image_leaves_its_modules_built_once_by_the_trigger(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "image");
    let stock_preinst = stage.exists("/etc/kernel/preinst.d/dkms");
    let n = stage.builds().len();
    let before = stage.ko_times();
    let apt = stage.sh("apt-get install -y --reinstall linux-image-$K1");
    apt.ok("installing or reinstalling the K1 image");
    let initramfs = apt.all().lines().filter(|l| l.contains("update-initramfs: Generating")).count();
    eprintln!(
        "deb_e2e: {}: image (re)install: {:.1}s, initramfs generations: {initramfs}, stock preinst.d/dkms: {stock_preinst}",
        rel.suite(),
        apt.secs
    );
    let builds = stage.builds()[n..].to_vec();
    let want: Vec<(&str, &str)> =
        if stock_preinst { AUTO.iter().map(|m| (*m, e.k1.as_str())).collect() } else { vec![] };
    assert_eq!(count(&builds), pairs(&want), "{builds:?}\n{}", apt.show());
    // By the finalizer, or by the image's own kernel hook ahead of its initramfs (docs/debian.md,
    // "One initramfs generation"): never by a module package, and the image made once.
    let image = format!("linux-image-{}", e.k1);
    assert!(builds.iter().all(|b| b.by == "dkms-trigger" || b.by == image), "{builds:?}");
    // (initramfs-tools installed in the same run, as with Debian 12's first image here, makes the
    // image a second time by its own trigger, as without dkms-trigger.)
    if !apt.all().contains("Setting up initramfs-tools ") {
        assert_eq!(initramfs, 1, "one initramfs generation: {}", apt.show());
    }
    let st = stage.dkms_status();
    for m in AUTO.iter().chain(["handmade"].iter()) {
        for k in [&e.k1, &e.k2] {
            assert_eq!(st.get(&format!("{m}/1.0 {k}")).map(String::as_str), Some("installed"), "{m} on {k}: {st:?}");
        }
    }
    let hand = format!("handmade/1.0/{}", e.k1);
    assert_eq!(stage.ko_times().get(&hand), before.get(&hand), "the hand-built module is untouched");
}

both!(a_new_kernels_initramfs_is_made_once_and_holds_its_modules);
/// Issue 14 (2): a kernel installed with its headers in one apt run gets one initramfs, made by
/// initramfs-tools' postinst.d hook after ours built the modules (a module listed in
/// /etc/initramfs-tools/modules is in it); the modules of a package configured later in the same
/// run are built at its end, which then remakes the image once. Installed first without headers
/// (Debian 13: image alone), the kernel's image is made once without modules; the headers' apt run
/// builds them and remakes the image once, with the listed module. A wrapper around mkinitramfs
/// counts generations and notes whether the module was installed when each began.
fn a_new_kernels_initramfs_is_made_once_and_holds_its_modules(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "initramfs");
    stage
        .sh("apt-get install -y initramfs-tools >/dev/null
             $T/mkmodule.sh initmod 1.0 >/dev/null
             $T/mkmodule.sh latemod 1.0 --depends linux-image-$K1 >/dev/null
             apt-get install -y /root/debs/initmod-dkms_1.0-1_all.deb >/dev/null
             echo initmod >>/etc/initramfs-tools/modules
             dpkg-divert --local --rename --divert /usr/sbin/mkinitramfs.real --add /usr/sbin/mkinitramfs >/dev/null
             cat >/usr/sbin/mkinitramfs <<'EOT'
#!/bin/sh
# Test wrapper: one line per generation, with whether initmod was installed for the kernel then.
for v; do :; done
m=no; ls /lib/modules/$v/updates/dkms/initmod.ko* >/dev/null 2>&1 && m=yes
echo \"mkinitramfs $v initmod=$m by=${DPKG_MAINTSCRIPT_PACKAGE:--}\" >>/var/log/mkinitramfs-count.log
exec /usr/sbin/mkinitramfs.real \"$@\"
EOT
             chmod 0755 /usr/sbin/mkinitramfs")
        .ok("initramfs-tools, the modules and the counting wrapper");
    let generations = |stage: &Stage| -> Vec<String> {
        let o = stage.sh("cat /var/log/mkinitramfs-count.log 2>/dev/null || true");
        o.stdout.lines().filter(|l| l.contains(&format!(" {} ", e.k1))).map(str::to_string).collect()
    };
    let in_image = |stage: &Stage| {
        let o = stage.sh("lsinitramfs /boot/initrd.img-$K1 | grep -c '/initmod\\.ko' || true");
        o.stdout.trim().parse::<u32>().unwrap_or(0) > 0
    };
    // apt leaves a package that is not installed alone; latemod-dkms goes with the image.
    let purge = |stage: &Stage| {
        stage
            .sh("apt-get purge -y linux-headers-$K1 linux-image-$K1 >/dev/null; rm -f /var/log/mkinitramfs-count.log")
            .ok("purging the K1 kernel");
    };

    // (a) image and headers together, with a module package configured after the kernel (it
    // depends on the headers, so dpkg configures it last): initmod is built by the image's hook,
    // before the one generation that matters; latemod at the end, which makes the image again.
    purge(&stage);
    let n = stage.builds().len();
    let apt = stage.sh("apt-get install -y linux-image-$K1 linux-headers-$K1");
    apt.ok("installing the K1 image and headers together");
    let gens = generations(&stage);
    eprintln!("deb_e2e: {}: image+headers apt run: {:.1}s, initramfs generations: {gens:?}", rel.suite(), apt.secs);
    assert_eq!(gens.len(), 1, "one generation: {gens:?}\n{}", apt.show());
    assert!(gens[0].contains("initmod=yes"), "the module was installed before the image was made: {gens:?}");
    assert!(in_image(&stage), "initmod is in the image");
    let builds = stage.builds()[n..].to_vec();
    let want: Vec<(&str, &str)> = AUTO.iter().chain(["initmod"].iter()).map(|m| (*m, e.k1.as_str())).collect();
    assert_eq!(count(&builds), pairs(&want), "each module once: {builds:?}");
    let image_pkg = format!("linux-image-{}", e.k1);
    assert!(builds.iter().all(|b| b.by == image_pkg), "all built by the image's hook: {builds:?}");

    // The same, with a module package that comes in the same run (it depends on the image, so
    // dpkg configures it after the image's hooks ran): its module waits for the end, which makes
    // the image once more (a kernel installed in this run: whatever its hooks put in the image).
    purge(&stage);
    let n = stage.builds().len();
    let apt = stage.sh("apt-get install -y linux-image-$K1 linux-headers-$K1 /root/debs/latemod-dkms_1.0-1_all.deb");
    apt.ok("installing the K1 kernel and a new module package together");
    let gens = generations(&stage);
    eprintln!(
        "deb_e2e: {}: image+headers+module apt run: {:.1}s, initramfs generations: {gens:?}",
        rel.suite(),
        apt.secs
    );
    assert!(gens.len() <= 2 && gens.iter().all(|g| g.contains("initmod=yes")), "{gens:?}\n{}", apt.show());
    assert!(in_image(&stage), "initmod is in the image");
    let builds = stage.builds()[n..].to_vec();
    let mut want: Vec<(&str, &str)> =
        AUTO.iter().chain(["initmod", "latemod"].iter()).map(|m| (*m, e.k1.as_str())).collect();
    want.push(("latemod", e.k2.as_str()));
    assert_eq!(count(&builds), pairs(&want), "each module once, the new one for every kernel: {builds:?}");
    assert!(
        builds.iter().any(|b| b.module == "latemod" && b.by == "dkms-trigger"),
        "the new package's module is built by the trigger, at the end: {builds:?}"
    );

    // (b) the image first, the headers in a later apt run.
    purge(&stage);
    let apt = stage.sh("apt-get install -y linux-image-$K1");
    apt.ok("installing the K1 image alone");
    let gens = generations(&stage);
    assert_eq!(gens.len(), 1, "{gens:?}\n{}", apt.show());
    assert!(gens[0].contains("initmod=no"), "no headers, no module yet: {gens:?}");
    stage.sh("rm -f /var/log/mkinitramfs-count.log").ok("resetting the count");
    let n = stage.builds().len();
    let apt = stage.sh("apt-get install -y linux-headers-$K1");
    apt.ok("installing the K1 headers later");
    let gens = generations(&stage);
    eprintln!("deb_e2e: {}: headers-later apt run: {:.1}s, initramfs generations: {gens:?}", rel.suite(), apt.secs);
    assert_eq!(gens.len(), 1, "one generation, by the finalize, with the module: {gens:?}\n{}", apt.show());
    assert!(gens[0].contains("initmod=yes"), "{gens:?}");
    assert!(in_image(&stage), "initmod is in the image");
    let builds = stage.builds()[n..].to_vec();
    let want: Vec<(&str, &str)> = AUTO.iter().chain(["initmod"].iter()).map(|m| (*m, e.k1.as_str())).collect();
    assert_eq!(count(&builds), pairs(&want), "each module once: {builds:?}");
}

both!(removing_the_package_gives_autoinstall_back_to_dkms);
fn removing_the_package_gives_autoinstall_back_to_dkms(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&takeover(rel).stage, "giveback");
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
    // By a kernel package's own maintainer script: the headers' (Debian 12), or the image's that
    // the headers pull in and that is configured first (Debian 13).
    assert!(
        [format!("linux-headers-{}", e.k2), format!("linux-image-{}", e.k2)].contains(&builds[0].by),
        "built by stock dkms inside a kernel package's postinst: {builds:?}"
    );
    // A module package: dkms's common.postinst builds it again.
    let n = stage.builds().len();
    stage
        .sh("$T/mkmodule.sh late 1.0 >/dev/null && apt-get install -y /root/debs/late-dkms_1.0-1_all.deb")
        .ok("late-dkms");
    let builds = stage.builds()[n..].to_vec();
    assert_eq!(count(&builds), pairs(&[("late", &e.k1), ("late", &e.k2)]), "{builds:?}");
    assert!(builds.iter().all(|b| b.by == "late-dkms"), "{builds:?}");
    // Purge: the hooks and the tool's state go too.
    stage.sh("apt-get purge -y dkms-trigger").ok("apt-get purge dkms-trigger");
    assert_eq!(stage.dpkg_status("dkms-trigger"), "", "purged");
    for f in
        ["/etc/kernel/header_postinst.d/dkms-trigger", "/etc/kernel/postinst.d/dkms-trigger", "/var/lib/dkms-trigger"]
    {
        assert!(!stage.exists(f), "{f} removed by purge");
    }
}

both!(upgrading_the_package_keeps_the_takeover_and_rebuilds_nothing);
fn upgrading_the_package_keeps_the_takeover_and_rebuilds_nothing(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "upgrade-self");
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

both!(prerm_hook_removes_a_kernels_builds_at_once_and_only_on_remove);
fn prerm_hook_removes_a_kernels_builds_at_once_and_only_on_remove(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "prerm-hook");
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

both!(kernel_hook_outside_dpkg_records_and_finalizes_at_once_quietly);
fn kernel_hook_outside_dpkg_records_and_finalizes_at_once_quietly(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&takeover(rel).stage, "outside-dpkg");
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

both!(the_boot_unit_completes_a_killed_finalize_and_catches_up_the_running_kernel);
/// Issue 15: the package installs dkms-trigger.service enabled (its `wants` symlink) and not
/// started, and `systemd-analyze verify` passes on it as installed. (a) A finalize SIGKILLed in the
/// middle of a build (a power cut during an upgrade) leaves its intent pending and its pair in
/// progress; the unit's command, read from the installed unit, completes it. (b) The running
/// kernel's AUTOINSTALL modules whose builds were removed behind the tool's back (as if a kernel
/// had been installed around the hooks) are built by the unit's command once, on that kernel
/// only, and the next run is idle. The chroot's uname is the host's, whose kernel is not installed
/// here: the running kernel is shown to the tool by bind-mounting a file over
/// /proc/sys/kernel/osrelease in the chroot's private mount namespace.
fn the_boot_unit_completes_a_killed_finalize_and_catches_up_the_running_kernel(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "boot");
    let unit = stage.sh("dpkg -L dkms-trigger | grep -E '/systemd/system/dkms-trigger[.]service$'");
    unit.ok("the package's unit file");
    let unit = unit.stdout.trim().to_string();
    assert!(
        ["/lib/systemd/system/dkms-trigger.service", "/usr/lib/systemd/system/dkms-trigger.service"]
            .contains(&unit.as_str()),
        "{unit}"
    );
    let wants = stage.sh("readlink -f /etc/systemd/system/multi-user.target.wants/dkms-trigger.service");
    wants.ok("the unit is enabled (its wants symlink)");
    assert_eq!(wants.stdout.trim(), stage.sh(&format!("readlink -f {unit}")).stdout.trim(), "{}", wants.show());
    // systemd-analyze from the release's own systemd (Debian 12's base chroot has none). The man
    // page named by Documentation= is checked as a file: the chroot has no man(1) to ask.
    let verify = stage.sh(&format!(
        "command -v systemd-analyze >/dev/null || apt-get install -y -q --no-install-recommends systemd >/dev/null
         test -e /usr/share/man/man8/dkms-trigger.8.gz
         systemd-analyze verify --man=no {unit}"
    ));
    verify.ok("systemd-analyze verify of the installed unit");
    let exec = stage.sh(&format!("sed -n 's/^ExecStart=//p' {unit}"));
    let exec = exec.stdout.trim().to_string();
    assert_eq!(exec, "/usr/sbin/dkms-trigger boot", "{unit}");

    // (a) a finalize killed mid-build.
    let n = stage.builds().len();
    let killed = stage.sh("$T/mkmodule.sh slow 1.0 --hang-while /etc/slow-hangs --source-only >/dev/null
         touch /etc/slow-hangs
         dkms-trigger record --source test:power-cut module-changed slow/1.0
         dkms-trigger finalize --jobs 1 >/tmp/first.log 2>&1 &
         pid=$!
         for i in $(seq 600); do grep -q '^build slow ' /var/log/dkms-test-builds.log && break; sleep 0.2; done
         echo build-started=$(grep -c '^build slow ' /var/log/dkms-test-builds.log || true)
         kill -9 $pid
         rc=0; wait $pid || rc=$?
         echo first-status=$rc
         echo in-progress-at-kill=$(grep -c in-progress /var/lib/dkms-trigger/state.toml || true)
         echo built-at-kill=$(find /var/lib/dkms/slow -path '*/module/slow.ko*' | wc -l)
         echo pending-at-kill=$(dkms-trigger spool | grep -c 'module-changed slow/1.0' || true)
         rm /etc/slow-hangs");
    killed.ok("killing a finalize mid-build");
    let said = |o: &Out, key: &str| -> String {
        o.stdout.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_default().to_string()
    };
    // The kill landed mid-build: the build had started, nothing of it was built, the finalize died
    // of SIGKILL with the pair in progress and the intent still pending.
    assert_eq!(said(&killed, "build-started"), "1", "{}", killed.show());
    assert_eq!(said(&killed, "first-status"), "137", "{}", killed.show());
    assert_eq!(said(&killed, "in-progress-at-kill"), "1", "{}", killed.show());
    assert_eq!(said(&killed, "built-at-kill"), "0", "{}", killed.show());
    assert_eq!(said(&killed, "pending-at-kill"), "1", "{}", killed.show());
    let boot = stage.sh(&exec);
    boot.ok("the unit's command after the kill");
    // Each kernel once, plus the start the kill cut short.
    let built = stage.builds()[n..].to_vec();
    let mut want = pairs(&[("slow", &e.k1), ("slow", &e.k2)]);
    *want.get_mut(&("slow".to_string(), built[0].kernel.clone())).unwrap() += 1;
    assert_eq!(count(&built), want, "{}", boot.show());
    let st = stage.dkms_status();
    for k in [&e.k1, &e.k2] {
        assert_eq!(st.get(&format!("slow/1.0 {k}")).map(String::as_str), Some("installed"), "{st:?}\n{}", boot.show());
    }
    let after = stage.sh("dkms-trigger spool; grep -c in-progress /var/lib/dkms-trigger/state.toml || true");
    assert!(!after.stdout.contains("slow/1.0") && after.stdout.trim_end().ends_with('0'), "{}", after.show());

    // (b) the running kernel's builds gone behind the tool's back.
    let n = stage.builds().len();
    stage
        .sh("for m in tuser tbase pre; do dkms remove -m $m -v 1.0 -k $K1 >/dev/null; done")
        .ok("removing K1's builds with dkms itself");
    // With the host's kernel running (not installed in the chroot), nothing to catch up.
    let host = stage.sh(&exec);
    host.ok("the unit's command, the host's kernel running");
    assert_eq!(stage.builds().len(), n, "{}", host.show());
    let boot = stage.sh(&format!(
        "echo $K1 >/tmp/osrelease && mount --bind /tmp/osrelease /proc/sys/kernel/osrelease
         {exec}
         echo ===
         {exec}"
    ));
    boot.ok("the unit's command, K1 running");
    let (first, second) = boot.stdout.split_once("===\n").unwrap_or_else(|| panic!("{}", boot.show()));
    assert!(first.contains(&format!("the running kernel {} has no DKMS build or record of", e.k1)), "{}", boot.show());
    let built = &stage.builds()[n..];
    assert_eq!(count(built), pairs(&[("pre", &e.k1), ("tbase", &e.k1), ("tuser", &e.k1)]), "{}", boot.show());
    let pos = |m: &str| built.iter().position(|b| b.module == m).unwrap();
    assert!(pos("tbase") < pos("tuser"), "the dependency first: {built:?}");
    assert_eq!(second, "", "the next boot is idle and silent: {}", boot.show());
    let st = stage.dkms_status();
    for m in AUTO {
        assert_eq!(st.get(&format!("{m}/1.0 {}", e.k1)).map(String::as_str), Some("installed"), "{st:?}");
    }
}

both!(secure_boot_status_tells_who_signed_what_and_one_warning_says_how_to_enrol_the_key);
/// Issue 15, Secure Boot. Real signing by the release's real dkms; the firmware's answers come
/// from a stand-in mokutil (tests/deb/mokutil-standin.sh, the one stand-in: a chroot has no
/// firmware). (a) As the chroot comes (no openssl, so dkms could make no key: every module built
/// unsigned; no mokutil): status says NOT SIGNED per kernel, the certificate dkms would use, and
/// that the Secure Boot state is unknown without mokutil. (b) Secure Boot on, modules rebuilt
/// unsigned: one warning naming them. (c) openssl installed and a signing key configured in
/// framework.conf.d: dkms makes the pair there and signs; the finalize prints one warning with
/// `mokutil --import` of that certificate and what the next boot does; status (text and JSON)
/// shows the modules signed by that key (its serial as openssl reads it), the certificate's path
/// and where it was configured, Secure Boot enabled and the key not enrolled. (d) Key enrolled,
/// enrolment pending, or Secure Boot off: no warning (pending: one line about the next boot); with
/// Secure Boot off the key's enrolment is not even asked.
fn secure_boot_status_tells_who_signed_what_and_one_warning_says_how_to_enrol_the_key(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&s1(rel).stage, "secureboot");
    let warnings = |o: &Out| o.stderr.lines().filter(|l| l.starts_with("warning:")).count();
    let json = |stage: &Stage| -> serde_json::Value {
        let o = stage.sh("dkms-trigger status --json");
        o.ok("status --json");
        serde_json::from_str(&o.stdout).unwrap_or_else(|err| panic!("{err}: {}", o.show()))
    };
    let sig_of = |doc: &serde_json::Value, module: &str, kernel: &str| -> serde_json::Value {
        let row = doc["modules"].as_array().unwrap().iter().find(|r| r["module"] == module).unwrap();
        let p = row["pairs"].as_array().unwrap().iter().find(|p| p["kernel"] == kernel).unwrap();
        p["signature"].clone()
    };

    // (a) the world as built: unsigned, no mokutil.
    let st = stage.sh("dkms-trigger status");
    st.ok("status");
    for k in [&e.k1, &e.k2] {
        let line = st
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{k}: ")))
            .unwrap_or_else(|| panic!("no signature line for {k}: {}", st.show()));
        assert!(line.contains("NOT SIGNED: ") && line.contains("pre/1.0") && line.contains("tuser/1.0"), "{line}");
    }
    assert!(
        st.stdout.contains("dkms signs with: /var/lib/dkms/mok.pub (dkms's default, not made yet"),
        "{}",
        st.show()
    );
    assert!(st.stdout.contains("Secure Boot: unknown (") && st.stdout.contains("install mokutil"), "{}", st.show());
    let doc = json(&stage);
    assert_eq!(sig_of(&doc, "pre", &e.k1)["state"], "unsigned", "{doc:#}");
    assert_eq!(doc["secure_boot"]["firmware"]["state"], "unknown", "{doc:#}");
    assert_eq!(doc["secure_boot"]["certificate"]["exists"], false, "{doc:#}");

    // (b) Secure Boot on, the rebuilt modules unsigned: one warning that names them.
    stage
        .sh("install -m 755 $T/mokutil-standin.sh /usr/local/sbin/mokutil
             printf 'sb=enabled\\nkey=not-enrolled\\n' >/etc/mokutil-standin")
        .ok("installing the mokutil stand-in");
    let fin = stage.sh("dkms-trigger record rebuild -m pre && dkms-trigger finalize");
    fin.ok("rebuilding pre unsigned");
    assert_eq!(warnings(&fin), 1, "{}", fin.show());
    for k in [&e.k1, &e.k2] {
        assert!(fin.stderr.contains(&format!("pre/1.0 on {k}")), "{}", fin.show());
    }
    assert!(fin.stderr.contains("are not signed, so a kernel that enforces module signatures"), "{}", fin.show());

    // (c) a key configured in framework.conf.d and openssl to make it: dkms signs.
    let setup = stage.sh("apt-get install -y -q --no-install-recommends openssl >/dev/null
         mkdir -m 700 /root/mok
         printf 'mok_signing_key=/root/mok/signing.key\\nmok_certificate=/root/mok/signing.der\\n' \
            >/etc/dkms/framework.conf.d/50-signing.conf
         : >/var/log/mokutil-standin.log");
    setup.ok("openssl and a configured key");
    let fin = stage.sh("dkms-trigger record rebuild -m pre && dkms-trigger finalize");
    fin.ok("rebuilding pre signed");
    assert_eq!(warnings(&fin), 1, "{}", fin.show());
    assert!(fin.stderr.contains("\n  mokutil --import /root/mok/signing.der\n"), "{}", fin.show());
    assert!(fin.stderr.contains("MokManager") && fin.stderr.contains("Enroll MOK"), "{}", fin.show());
    assert!(!fin.stderr.contains("not signed"), "{}", fin.show());
    let asked = stage.sh("cat /var/log/mokutil-standin.log");
    assert_eq!(asked.stdout, "--sb-state\n--test-key /root/mok/signing.der\n", "{}", asked.show());
    let serial = stage.sh("openssl x509 -inform DER -in /root/mok/signing.der -noout -serial");
    serial.ok("the certificate dkms made");
    let hex = serial.stdout.trim().trim_start_matches("serial=").trim_start_matches("00").to_string();
    let doc = json(&stage);
    for k in [&e.k1, &e.k2] {
        let sig = sig_of(&doc, "pre", k);
        assert_eq!(sig["state"], "signed", "{doc:#}");
        assert_eq!(sig["by_dkms_key"], true, "{doc:#}");
        let (_, file) = sig["files"].as_object().unwrap().iter().next().unwrap();
        assert_eq!(file["signer"], "DKMS module signing key", "{doc:#}");
        assert_eq!(file["key"].as_str().unwrap().replace(':', ""), hex, "{doc:#}");
        assert_eq!(sig_of(&doc, "tuser", k)["state"], "unsigned", "not rebuilt, still unsigned: {doc:#}");
    }
    let cert = &doc["secure_boot"]["certificate"];
    assert_eq!(cert["path"], "/root/mok/signing.der", "{doc:#}");
    assert_eq!(cert["from"], "/etc/dkms/framework.conf.d/50-signing.conf", "{doc:#}");
    assert_eq!(cert["exists"], true, "{doc:#}");
    assert_eq!(doc["secure_boot"]["firmware"]["state"], "enabled", "{doc:#}");
    assert_eq!(doc["secure_boot"]["firmware"]["enrolment"], "not-enrolled", "{doc:#}");
    let st = stage.sh("dkms-trigger status");
    st.ok("status");
    eprintln!("deb_e2e: {}: the warning:\n{}\nstatus:\n{}", rel.suite(), fin.stderr, st.stdout);
    assert!(st.stdout.contains("signed by the dkms key: pre/1.0"), "{}", st.show());
    assert!(
        st.stdout.contains("dkms signs with: /root/mok/signing.der (/etc/dkms/framework.conf.d/50-signing.conf, key "),
        "{}",
        st.show()
    );
    assert!(st.stdout.contains("Secure Boot: enabled\n  the dkms certificate is not enrolled"), "{}", st.show());
    assert!(st.stdout.contains("run `mokutil --import /root/mok/signing.der`"), "{}", st.show());

    // (d) enrolled, pending, Secure Boot off: no warning.
    for (answers, info, asked) in [
        ("sb=enabled\\nkey=enrolled", None, "--sb-state\n--test-key /root/mok/signing.der\n"),
        (
            "sb=enabled\\nkey=pending",
            Some("waiting to be enrolled: at the next boot MokManager"),
            "--sb-state\n--test-key /root/mok/signing.der\n",
        ),
        ("sb=disabled\\nkey=not-enrolled", None, "--sb-state\n"),
        ("sb=noefi\\nkey=not-enrolled", None, "--sb-state\n"),
    ] {
        let fin = stage.sh(&format!(
            "printf '{answers}\\n' >/etc/mokutil-standin; : >/var/log/mokutil-standin.log
             dkms-trigger record rebuild -m pre && dkms-trigger finalize"
        ));
        fin.ok(answers);
        assert_eq!(warnings(&fin), 0, "{answers}: {}", fin.show());
        if let Some(info) = info {
            assert!(fin.stdout.contains(info), "{answers}: {}", fin.show());
        }
        let log = stage.sh("cat /var/log/mokutil-standin.log");
        assert_eq!(log.stdout, asked, "{answers}: {}", fin.show());
    }
}

both!(noop_trigger_run_is_silent_and_builds_nothing);
fn noop_trigger_run_is_silent_and_builds_nothing(rel: Rel) {
    let stage = Stage::child(&s1(rel).stage, "noop");
    let n = stage.builds().len();
    // The handler as dpkg runs it for a file trigger, 5 times, timed inside the chroot.
    let o = stage.sh("for i in 1 2 3 4 5; do
             s=$(date +%s%N); /var/lib/dpkg/info/dkms-trigger.postinst triggered /usr/src >/tmp/out 2>&1
             e=$(date +%s%N); cat /tmp/out; echo \"ms=$(( (e - s) / 1000000 ))\"
         done");
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

both!(dkms_behaves_as_the_product_expects_of_its_version);
/// What the product relies on from dkms, checked against the real dkms of each release (3.0.10 on
/// Debian 12, 3.2 on Debian 13; docs/dkms-behaviour.md, "Between versions"): the exit codes
/// src/backend.rs maps (no headers: 1 before 3.1.5, 21 since; a missing BUILD_DEPENDS: ignored
/// before 3.1.4, 13 since; a compile error: 10), the `dkms status` wording the tests and the
/// take-over read, the tree layout src/inventory/dkms_tree.rs reads, and
/// /etc/dkms/no-autoinstall stopping common.postinst (the take-over's switch).
fn dkms_behaves_as_the_product_expects_of_its_version(rel: Rel) {
    let e = env(rel);
    let stage = Stage::child(&e.base, "dkms-probe");
    let o = stage.sh("echo version=$(dpkg-query -W -f='${Version}' dkms)
         $T/mkmodule.sh probe 1.0 --source-only >/dev/null
         $T/mkmodule.sh probeuser 1.0 --source-only --build-depends probemissing >/dev/null
         $T/mkmodule.sh probebad 1.0 --source-only --fail-on all >/dev/null
         for m in probe probeuser probebad; do dkms add -m $m -v 1.0 >/dev/null; done
         set +e
         dkms build -m probe -v 1.0 -k 0.0.0-no-headers -a x86_64 >/dev/null 2>&1; echo no_headers=$?
         dkms build -m probeuser -v 1.0 -k $K1 -a x86_64 >/dev/null 2>&1; echo missing_build_depends=$?
         dkms build -m probebad -v 1.0 -k $K1 -a x86_64 >/dev/null 2>&1; echo compile_error=$?
         dkms install -m probe -v 1.0 -k $K1 -a x86_64 --no-depmod >/dev/null 2>&1; echo install=$?
         set -e
         echo status=\"$(dkms status -m probe -v 1.0 -k $K1)\"
         ls /var/lib/dkms/probe/1.0/$K1/x86_64/module/ | sed 's/^/module_dir=/'
         readlink /var/lib/dkms/probe/1.0/source | sed 's/^/source_link=/'
         touch /etc/dkms/no-autoinstall
         $T/mkmodule.sh stopped 1.0 >/dev/null
         dpkg -i /root/debs/stopped-dkms_1.0-1_all.deb >/tmp/o 2>&1 || { cat /tmp/o; exit 1; }
         echo stopped_registered=$(test -e /var/lib/dkms/stopped && echo yes || echo no)");
    o.ok("probing dkms");
    let facts: BTreeMap<&str, &str> = o.stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let fact = |k: &str| facts.get(k).copied().unwrap_or_else(|| panic!("no {k} in {}", o.show()));
    let version = fact("version");
    let at_least =
        |v: &str| Command::new("dpkg").args(["--compare-versions", version, "ge", v]).status().unwrap().success();
    eprintln!("deb_e2e: {}: dkms {version}: {facts:?}", rel.suite());
    let ctx = o.show();
    assert_eq!(fact("no_headers"), if at_least("3.1.5") { "21" } else { "1" }, "{ctx}");
    assert_eq!(fact("missing_build_depends"), if at_least("3.1.4") { "13" } else { "0" }, "{ctx}");
    assert_eq!(fact("compile_error"), "10", "{ctx}");
    assert_eq!(fact("install"), "0", "{ctx}");
    assert_eq!(fact("status"), format!("probe/1.0, {}, x86_64: installed", e.k1), "{ctx}");
    assert!(fact("module_dir").starts_with("probe.ko"), "{ctx}");
    assert_eq!(fact("source_link"), "/usr/src/probe-1.0", "{ctx}");
    assert_eq!(fact("stopped_registered"), "no", "common.postinst honours /etc/dkms/no-autoinstall: {ctx}");
}

/// tests/setup/apt-sources.sh, which gives every test root its archive: the host's enabled `deb`
/// entries of its own release, in both formats, re-targeted at the suite; disabled ones, other file
/// names, deb-src, backports and third-party repositories left out; a clear error when nothing is
/// usable. (Runs on made-up apt directories: the host's own is what the other tests use.)
#[test]
fn test_roots_take_their_archive_from_the_hosts_apt_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let apt = dir.path();
    std::fs::create_dir_all(apt.join("sources.list.d")).unwrap();
    let sources = |suite: &str| {
        run(Command::new(repo().join("tests/setup/apt-sources.sh"))
            .arg(suite)
            .env("DKMS_TRIGGER_TEST_APT_DIR", apt)
            .env("DKMS_TRIGGER_TEST_HOST_CODENAME", "bookworm"))
    };
    let write = |name: &str, text: &str| std::fs::write(apt.join(name), text).unwrap();

    // Nothing at all, then only disabled entries: an error that says where it looked.
    let o = sources("trixie");
    assert_eq!(o.code, 1, "{}", o.show());
    assert!(o.stderr.contains("no enabled 'deb' entry for bookworm"), "{}", o.show());
    write(
        "sources.list.d/off.sources",
        "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n",
    );
    write("sources.list.d/farm.list.disabled", "deb http://disabled.invalid/debian bookworm main\n");
    let o = sources("trixie");
    assert_eq!(o.code, 1, "{}", o.show());
    assert!(o.stderr.contains("off.sources"), "names the files it read: {}", o.show());

    // deb822 (two stanzas, a continuation line, a third-party one) and one-line entries.
    write(
        "sources.list.d/debian.sources",
        "# comment\nTypes: deb deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n bookworm-updates bookworm-backports\n\
         Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
         Types: deb\nURIs: http://vendor.invalid/apt\nSuites: nodistro\nComponents: main\n",
    );
    write(
        "sources.list",
        "# deb http://commented.invalid/debian bookworm main\ndeb-src http://src.invalid/debian bookworm main\n\
         deb [signed-by=/k.gpg arch=amd64] http://other.invalid/debian bookworm main\n\
         deb http://vendor.invalid/apt cloud-sdk-bookworm main\n",
    );
    let o = sources("trixie");
    assert_eq!(o.code, 0, "{}", o.show());
    let mut got: Vec<&str> = o.stdout.lines().collect();
    got.sort();
    assert_eq!(
        got,
        [
            "deb http://mirror.invalid/debian trixie main contrib",
            "deb http://mirror.invalid/debian trixie-updates main contrib",
            "deb http://mirror.invalid/debian-security trixie-security main",
            "deb http://other.invalid/debian trixie main",
        ],
        "{}",
        o.show()
    );
}
