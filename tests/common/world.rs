//! `World`: a throwaway DKMS world in a private mount namespace, so the real `dkms` and the real
//! `dkms-trigger` can run with their production paths (`--root /`) without touching the host.
//!
//! Layout: a temp dir holds one upper/work pair per overlay and one "fresh" dir per bind mount. Each
//! [`World::run`] starts a new `unshare` (mount + PID namespace) that mounts them again and runs a
//! bash script, so every run sees the state the previous runs left, and the test reads the results
//! on the host through [`World::upper`]. Defaults:
//!
//! | world path | how | why |
//! |---|---|---|
//! | `/usr/src`, the modules dir (`/usr/lib/modules` on merged /usr), `/etc`, `/var`, `/usr/local` | overlay | host content visible, writes kept apart |
//! | `/var/lib/dkms`, `/var/lib/dkms-trigger`, `/var/log/dkms-trigger`, `/etc/dkms-trigger`, `/boot`, `/root`, `/var/log/dkms-world` | fresh empty dir | no host state leaks in |
//! | everything else on the root filesystem (except `/tmp`) | read-only | an unforeseen write fails loudly instead of changing the host |
//!
//! `/etc` and `/var` are overlaid whole (not just `/etc/dkms`, `/etc/kernel`) so that directories the
//! host lacks, such as `/etc/dkms-trigger` or `/var/lib/dkms-trigger`, can be created inside the world.
//! Side effect: mounts *below* an overlaid directory on the host (Docker's `/etc/hosts`,
//! `/etc/resolv.conf`) are hidden inside the world; nothing here needs them.
//! `/tmp` stays the host's (dkms's scratch files); `/run` is read-only when it is on the root fs.
//!
//! One `run` at a time per world (the same upper dir must not be mounted twice); concurrency belongs
//! inside one script. The PID namespace means every process a script started dies with it.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::dkms::{parse_status, BuildRecord, StatusEntry, BUILD_LOG, BUILD_LOG_DIR};
use super::sh_quote;

/// The dkms-trigger binary of this package, as built by cargo for the integration tests.
pub const PACKAGE_BIN: &str = env!("CARGO_BIN_EXE_dkms-trigger");
/// Where [`WorldBuilder::bin`] makes the binary available inside the world (first in `PATH`).
pub const BIN_IN_WORLD: &str = "/usr/local/sbin/dkms-trigger";
/// Exit code of the generated mount setup when it fails (the test's script did not run).
const SETUP_FAILED: i32 = 199;
const SETUP_MARKER: &str = "dkms-world: setup failed:";
/// `run` gives up (and kills the namespace) after this long unless `DKMS_WORLD_TIMEOUT` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Overlay,
    Fresh,
}

#[derive(Debug, Clone)]
struct Mount {
    /// Absolute, symlink-free path in the world (same as on the host).
    target: PathBuf,
    kind: Kind,
    /// Upper dir (overlay) or the bound dir (fresh): where the world's changes land on the host.
    host_dir: PathBuf,
    /// Overlay work dir.
    work: Option<PathBuf>,
}

/// Options for a [`World`]; [`World::new`] is `World::builder().build()`.
#[derive(Debug, Clone)]
pub struct WorldBuilder {
    overlays: Vec<PathBuf>,
    fresh: Vec<(PathBuf, u32)>,
    bin: Option<PathBuf>,
    env: Vec<(String, String)>,
    read_only_rest: bool,
}

impl Default for WorldBuilder {
    fn default() -> Self {
        WorldBuilder {
            overlays: ["/usr/src", "/lib/modules", "/etc", "/var", "/usr/local"].iter().map(PathBuf::from).collect(),
            fresh: vec![
                (PathBuf::from("/var/lib/dkms"), 0o755),
                (PathBuf::from("/var/lib/dkms-trigger"), 0o700),
                (PathBuf::from("/var/log/dkms-trigger"), 0o700),
                (PathBuf::from("/etc/dkms-trigger"), 0o755),
                (PathBuf::from("/boot"), 0o755),
                (PathBuf::from("/root"), 0o700),
                (PathBuf::from(BUILD_LOG_DIR), 0o755),
            ],
            bin: Some(PathBuf::from(PACKAGE_BIN)),
            env: Vec::new(),
            read_only_rest: true,
        }
    }
}

impl WorldBuilder {
    /// Also overlay this existing host directory (e.g. `/usr/sbin`, `/usr/lib/dkms`).
    pub fn overlay(mut self, dir: impl AsRef<Path>) -> Self {
        self.overlays.push(dir.as_ref().to_path_buf());
        self
    }

    /// Also bind a fresh empty directory (mode 0755) over this path. It must exist on the host or lie
    /// inside an overlaid directory (then it is created there).
    pub fn fresh(mut self, dir: impl AsRef<Path>) -> Self {
        self.fresh.push((dir.as_ref().to_path_buf(), 0o755));
        self
    }

    /// The dkms-trigger binary to expose as [`BIN_IN_WORLD`] (default: this package's binary).
    pub fn bin(mut self, path: impl AsRef<Path>) -> Self {
        self.bin = Some(path.as_ref().to_path_buf());
        self
    }

    /// Expose no dkms-trigger binary.
    pub fn no_bin(mut self) -> Self {
        self.bin = None;
        self
    }

    /// An environment variable for every script run in the world.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Leave the rest of the root filesystem writable inside the world (default: read-only).
    pub fn writable_rest(mut self) -> Self {
        self.read_only_rest = false;
        self
    }

    /// Creates the world and checks, by mounting it once, that this machine can host it. Panics with
    /// an explanation when it cannot (not root, no `unshare`, no overlayfs): these tests never pass
    /// silently.
    pub fn build(self) -> World {
        if !nix::unistd::geteuid().is_root() {
            panic!("dkms-world: the World needs root (unshare -m, mount); run the real-dkms tests as root");
        }
        if Command::new("unshare").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
            panic!("dkms-world: `unshare` (util-linux) is missing; run tests/setup/install-deps.sh");
        }
        let base = std::env::var_os("DKMS_WORLD_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let base = fs::canonicalize(&base).unwrap_or_else(|e| panic!("dkms-world: temp base {}: {e}", base.display()));
        let tmp = tempfile::Builder::new()
            .prefix("dkms-world.")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("dkms-world: creating a temp dir in {}: {e}", base.display()));
        let dir = tmp.path().to_path_buf();
        let dir_str = dir.to_str().expect("temp dir path is UTF-8");
        assert!(!dir_str.contains([',', ':', '\n']), "dkms-world: temp dir {dir_str} unusable in overlay options");

        let mut mounts = Vec::new();
        for (i, o) in self.overlays.iter().enumerate() {
            let target = canonical_host_dir(o);
            if dir.starts_with(&target) || target.starts_with(&dir) {
                panic!(
                    "dkms-world: the world's temp dir {} lies inside the overlaid {}; set DKMS_WORLD_TMPDIR",
                    dir.display(),
                    target.display()
                );
            }
            let slug = format!("{i}{}", target.to_string_lossy().replace('/', "-"));
            let upper = dir.join("upper").join(&slug);
            let work = dir.join("work").join(&slug);
            fs::create_dir_all(&upper).unwrap();
            fs::create_dir_all(&work).unwrap();
            mounts.push(Mount { target, kind: Kind::Overlay, host_dir: upper, work: Some(work) });
        }
        for (i, (f, mode)) in self.fresh.iter().enumerate() {
            let target = resolve_host_symlinks(f);
            let slug = format!("{i}{}", target.to_string_lossy().replace('/', "-"));
            let host_dir = dir.join("fresh").join(slug);
            fs::create_dir_all(&host_dir).unwrap();
            fs::set_permissions(&host_dir, fs::Permissions::from_mode(*mode)).unwrap();
            mounts.push(Mount { target, kind: Kind::Fresh, host_dir, work: None });
        }
        // Parents before children; for the same path the overlay first.
        mounts.sort_by(|a, b| {
            (a.target.components().count(), a.kind == Kind::Fresh)
                .cmp(&(b.target.components().count(), b.kind == Kind::Fresh))
        });
        // A fresh mount point missing on the host must be created inside an overlay, never on the host.
        for m in mounts.iter().filter(|m| m.kind == Kind::Fresh) {
            if !m.target.is_dir() {
                let covered = mounts
                    .iter()
                    .any(|o| o.kind == Kind::Overlay && m.target.starts_with(&o.target) && m.target != o.target);
                assert!(
                    covered,
                    "dkms-world: {} does not exist on the host and no overlay covers it; add an overlay on a parent",
                    m.target.display()
                );
            }
        }

        let host_mnt_ns = fs::read_link("/proc/self/ns/mnt").expect("read /proc/self/ns/mnt");
        let mut world = World {
            tmp: Some(tmp),
            dir,
            mounts,
            env: self.env,
            read_only_rest: self.read_only_rest,
            host_mnt_ns: host_mnt_ns.to_string_lossy().into_owned(),
            bin: None,
        };
        world.write_setup();
        if let Some(bin) = self.bin {
            let bin = fs::canonicalize(&bin).unwrap_or_else(|e| panic!("dkms-world: bin {}: {e}", bin.display()));
            let link = world.upper(BIN_IN_WORLD);
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&bin, &link).unwrap();
            world.bin = Some(bin);
        }
        // Prove the namespace works before any test relies on it.
        let out = world.run("test -d /usr/src && : > /var/lib/dkms/.world-probe && rm /var/lib/dkms/.world-probe");
        assert!(
            out.status.success(),
            "dkms-world: probe run failed (rc {:?}); is overlayfs available?\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        world
    }
}

/// A throwaway DKMS world; see the module documentation. Removed on drop unless `DKMS_WORLD_KEEP`
/// is set (then its path is printed).
#[derive(Debug)]
pub struct World {
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    mounts: Vec<Mount>,
    env: Vec<(String, String)>,
    read_only_rest: bool,
    host_mnt_ns: String,
    bin: Option<PathBuf>,
}

impl World {
    /// The default world (see [`WorldBuilder`]).
    pub fn new() -> World {
        WorldBuilder::default().build()
    }

    pub fn builder() -> WorldBuilder {
        WorldBuilder::default()
    }

    /// The world's temp dir on the host (also `$DKMS_WORLD` inside).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The dkms-trigger binary exposed as [`BIN_IN_WORLD`], if any.
    pub fn bin(&self) -> Option<&Path> {
        self.bin.as_deref()
    }

    fn setup_path(&self) -> PathBuf {
        self.dir.join("setup.sh")
    }

    fn write_setup(&self) {
        let mut s = String::new();
        s.push_str("# Generated by tests/common/world.rs: mounts the world, then the test's script runs.\n");
        s.push_str(&format!("__world_fail() {{ echo \"{SETUP_MARKER} $*\" >&2; exit {SETUP_FAILED}; }}\n"));
        s.push_str(&format!(
            "[ \"$(readlink /proc/self/ns/mnt)\" != {} ] || __world_fail 'not in a private mount namespace; refusing to mount'\n",
            sh_quote(&self.host_mnt_ns)
        ));
        s.push_str("mount --make-rprivate / || __world_fail 'mount --make-rprivate /'\n");
        if self.read_only_rest {
            // Keep /tmp (and the world's own dir) writable when / turns read-only below.
            s.push_str("mountpoint -q /tmp || mount --bind /tmp /tmp || __world_fail 'bind /tmp'\n");
            if !self.dir.starts_with("/tmp") {
                let d = sh_quote(&self.dir.to_string_lossy());
                s.push_str(&format!("mount --bind {d} {d} || __world_fail 'bind the world dir'\n"));
            }
        }
        for m in &self.mounts {
            let t = sh_quote(&m.target.to_string_lossy());
            let h = m.host_dir.to_string_lossy();
            match m.kind {
                Kind::Overlay => {
                    let w = m.work.as_ref().unwrap().to_string_lossy();
                    let opts = format!("lowerdir={},upperdir={h},workdir={w}", m.target.display());
                    s.push_str(&format!(
                        "mount -t overlay dkms-world -o {} {t} || __world_fail 'overlay on '{t}\n",
                        sh_quote(&opts)
                    ));
                }
                Kind::Fresh => {
                    s.push_str(&format!(
                        "{{ [ -d {t} ] || mkdir -p {t}; }} && mount --bind {} {t} || __world_fail 'bind over '{t}\n",
                        sh_quote(&h)
                    ));
                }
            }
        }
        if self.read_only_rest {
            s.push_str("mount -o remount,bind,ro / || __world_fail 'remount / read-only'\n");
        }
        s.push_str("unset -f __world_fail\ncd /\n");
        fs::write(self.setup_path(), s).unwrap();
    }

    /// The command that runs `script` in a fresh namespace of this world (for tests that spawn and
    /// signal it themselves; killing it kills every process of the namespace).
    pub fn command(&self, script: &str) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private"]);
        c.args(["bash", "-euo", "pipefail", "-c"]);
        c.arg(format!(". {}\n{script}", sh_quote(&self.setup_path().to_string_lossy())));
        c.env_clear();
        c.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        c.env("HOME", "/root");
        c.env("LC_ALL", "C");
        c.env("DKMS_WORLD", &self.dir);
        if self.bin.is_some() {
            c.env("DKMS_TRIGGER", BIN_IN_WORLD);
        }
        for k in ["RUST_BACKTRACE", "RUST_LOG"] {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// Runs `script` with `bash -euo pipefail` inside the world and returns its output. Panics if
    /// the world could not be set up (the script did not run) or after `DKMS_WORLD_TIMEOUT` seconds.
    pub fn run(&self, script: &str) -> Output {
        let timeout = std::env::var("DKMS_WORLD_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        self.run_timeout(script, timeout)
    }

    /// [`run`](Self::run) with an explicit time limit: the namespace is killed when it expires.
    pub fn run_timeout(&self, script: &str, timeout: Duration) -> Output {
        let mut child = self.command(script).spawn().expect("spawn unshare");
        let (out, err) = (drain(child.stdout.take().unwrap()), drain(child.stderr.take().unwrap()));
        let status = wait_until(&mut child, timeout);
        let output = Output {
            status: status.unwrap_or_else(|| {
                let _ = child.kill();
                child.wait().unwrap()
            }),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        };
        if status.is_none() {
            panic!("dkms-world: script timed out after {timeout:?}:\n{script}\n{}", show(&output));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() == Some(SETUP_FAILED) && stderr.contains(SETUP_MARKER) {
            panic!(
                "dkms-world: could not set up the world (needs root, unshare and overlayfs; see {}):\n{stderr}",
                self.setup_path().display()
            );
        }
        output
    }

    /// Runs `script` and panics, showing stdout and stderr, unless it exits 0. Returns stdout.
    pub fn run_ok(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(out.status.success(), "world script failed:\n{script}\n{}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `dkms ARGS` inside the world (ARGS is shell text).
    pub fn dkms(&self, args: &str) -> Output {
        self.run(&format!("dkms {args}"))
    }

    /// `dkms status` inside the world, parsed.
    pub fn dkms_status(&self) -> Vec<StatusEntry> {
        parse_status(&self.run_ok("dkms status"))
    }

    /// Where the world's changes to `world_path` land on the host: inside an overlay's upper dir
    /// or a fresh dir. Host symlinks outside the world's mounts are followed first, so
    /// `lib/modules/K` works on merged /usr. Panics for a path outside the world's mounts.
    pub fn upper(&self, world_path: impl AsRef<Path>) -> PathBuf {
        let p = resolve_host_symlinks_outside(world_path.as_ref(), &self.mounts);
        let m = self
            .mounts
            .iter()
            .filter(|m| p.starts_with(&m.target))
            .max_by_key(|m| m.target.components().count())
            .unwrap_or_else(|| panic!("dkms-world: {} is outside the world's writable mounts", p.display()));
        m.host_dir.join(p.strip_prefix(&m.target).unwrap())
    }

    /// Same as [`upper`](Self::upper).
    pub fn path_in_upper(&self, world_path: impl AsRef<Path>) -> PathBuf {
        self.upper(world_path)
    }

    /// Writes a file into the world (between runs), creating parents in the upper dir.
    pub fn write(&self, world_path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.upper(world_path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap();
        p
    }

    /// Reads a file as the world sees it, approximately: the upper copy if there is one, else the
    /// host file below an overlay (whiteouts and opaque dirs are not interpreted; use `run` with `cat`
    /// for an exact answer). `None` if absent.
    pub fn read(&self, world_path: impl AsRef<Path>) -> Option<String> {
        let up = self.upper(&world_path);
        if up.is_file() {
            return fs::read_to_string(up).ok();
        }
        let p = resolve_host_symlinks_outside(world_path.as_ref(), &self.mounts);
        let m =
            self.mounts.iter().filter(|m| p.starts_with(&m.target)).max_by_key(|m| m.target.components().count())?;
        if m.kind == Kind::Overlay {
            fs::read_to_string(p).ok()
        } else {
            None
        }
    }

    /// A fake kernel image `/boot/vmlinuz-K` (and `/boot/config-K` copied from K's headers when they
    /// have a `.config`), as a kernel package would leave them.
    pub fn add_kernel_image(&self, kver: &str) {
        self.write(format!("/boot/vmlinuz-{kver}"), format!("dkms-world fake kernel image {kver}\n"));
        let config = Path::new("/lib/modules").join(kver).join("build/.config");
        if let Ok(c) = fs::read(config) {
            self.write(format!("/boot/config-{kver}"), c);
        }
    }

    /// A kernel that has a modules directory but no headers (`/lib/modules/K` with no `build`).
    pub fn add_kernel_without_headers(&self, kver: &str) {
        let d = self.upper(Path::new("/lib/modules").join(kver));
        fs::create_dir_all(d.join("kernel")).unwrap();
        fs::write(d.join("modules.order"), "").unwrap();
        fs::write(d.join("modules.builtin"), "").unwrap();
    }

    /// The installed module file `M.ko*` for kernel K (searched below the world's `/lib/modules/K`
    /// changes), if any.
    pub fn installed_ko(&self, module: &str, kver: &str) -> Option<PathBuf> {
        let root = self.upper(Path::new("/lib/modules").join(kver));
        find_files(&root).into_iter().find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.strip_prefix(module).map(|rest| rest.starts_with(".ko")).unwrap_or(false)
        })
    }

    /// Every generated-module build this world saw, from the build recorder
    /// (see [`Module`](super::module::Module)).
    pub fn builds(&self) -> Vec<BuildRecord> {
        fs::read_to_string(self.upper(BUILD_LOG)).map(|s| BuildRecord::parse_log(&s)).unwrap_or_default()
    }

    /// Keep the world's directory after the test (for debugging); returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(t) = self.tmp.take() {
            let _ = t.keep();
        }
        self.dir.clone()
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::env::var_os("DKMS_WORLD_KEEP").is_some() {
            eprintln!("dkms-world: kept {}", self.keep().display());
        }
    }
}

/// stdout and stderr of an output, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn wait_until(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait for unshare") {
            return Some(st);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn find_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(find_files(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out.sort();
    out
}

/// Absolute, lexically normalised form of `p` (relative paths are taken from `/`).
fn absolute(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Follows host symlinks in `p` (e.g. `/lib` -> `usr/lib`) component by component.
fn resolve_host_symlinks(p: &Path) -> PathBuf {
    resolve_host_symlinks_outside(p, &[])
}

/// Like `resolve_host_symlinks`, but stops at the first prefix that is one of `mounts` (inside the
/// world, what lies below may differ from the host).
fn resolve_host_symlinks_outside(p: &Path, mounts: &[Mount]) -> PathBuf {
    let mut p = absolute(p);
    'again: for _ in 0..40 {
        let mut prefix = PathBuf::from("/");
        for c in p.components().skip(1) {
            prefix.push(c);
            if mounts.iter().any(|m| m.target == prefix) {
                return p;
            }
            if let Ok(target) = fs::read_link(&prefix) {
                let rest = p.strip_prefix(&prefix).unwrap().to_path_buf();
                let base = prefix.parent().unwrap().join(target);
                p = absolute(&base.join(rest));
                continue 'again;
            }
        }
        return p;
    }
    panic!("dkms-world: too many symlinks resolving {}", p.display())
}

fn canonical_host_dir(p: &Path) -> PathBuf {
    let c = fs::canonicalize(p).unwrap_or_else(|e| panic!("dkms-world: cannot overlay {}: {e}", p.display()));
    assert!(c.is_dir(), "dkms-world: cannot overlay {}: not a directory", p.display());
    c
}
