//! dkms.conf evaluation against real bash, and against the installed dkms 3.0.10 where it decides.

use super::eval::text;
use super::recipe::{parse_version, Dialect};
use super::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const K55: &str = "6.1.0-55-amd64";
const K56: &str = "6.1.0-56-amd64";

/// A scratch tree: sources under src/, overrides under etc/, fake kernels under lib/.
struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        let fx = Fx { dir: tempfile::tempdir().unwrap() };
        fs::create_dir_all(fx.path("etc")).unwrap();
        fx
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// A kernel whose build directory holds `config` as .config (none when None).
    fn kernel(&self, kver: &str, arch: &str, config: Option<&str>) -> KernelContext {
        let build = self.path(&format!("lib/{kver}/build"));
        fs::create_dir_all(&build).unwrap();
        if let Some(c) = config {
            fs::write(build.join(".config"), c).unwrap();
        }
        KernelContext {
            kernelver: kver.into(),
            arch: arch.into(),
            kernel_config: build.join(".config"),
            kernel_source_dir: build,
        }
    }

    fn kernels(&self) -> Vec<KernelContext> {
        vec![self.kernel(K55, "x86_64", None), self.kernel(K56, "x86_64", None)]
    }

    /// A module `m` version 1.0 whose dkms.conf is `body` after the two required lines.
    fn module(&self, m: &str, body: &str, kernels: Vec<KernelContext>) -> Request {
        let conf =
            self.write(&format!("src/{m}-1.0/dkms.conf"), &format!("PACKAGE_NAME={m}\nPACKAGE_VERSION=1.0\n{body}"));
        Request { module: m.into(), version: "1.0".into(), conf, kernels }
    }

    fn opts(&self) -> Options {
        Options {
            root: crate::root::Root::host(),
            dkms_tree: self.path("var/lib/dkms"),
            source_tree: self.path("src"),
            install_tree: self.path("lib"),
            override_dir: self.path("etc"),
            timeout: Duration::from_secs(20),
            parallel: 2,
            dkms_version: None,
            os_release: None,
        }
    }

    /// `opts` for that dkms version.
    fn dkms(&self, version: &str) -> Options {
        Options { dkms_version: Some(version.into()), ..self.opts() }
    }

    fn eval(&self, req: Request) -> Evaluated {
        self.eval_with(req, &self.opts()).unwrap()
    }

    fn eval_with(&self, req: Request, opts: &Options) -> Result<Evaluated, String> {
        evaluate(&[req], opts).pop().unwrap()
    }
}

fn kernel<'a>(e: &'a Evaluated, k: &str) -> &'a ConfValues {
    e.per_kernel[k].as_ref().unwrap()
}

fn version(v: &str) -> Options {
    Options { dkms_version: Some(v.into()), ..Fx::new().opts() }
}

#[test]
fn build_exclusive_kernel_from_kernelver_matches_one_of_two() {
    let fx = Fx::new();
    let req = fx.module("m", "case $kernelver in *-55-*) BUILD_EXCLUSIVE_KERNEL='^5\\.' ;; esac\n", fx.kernels());
    let e = fx.eval(req);
    assert!(!e.kernel_independent);
    assert_eq!(kernel(&e, K55).build_exclusive_kernel.as_deref(), Some("^5\\."));
    assert_eq!(
        kernel(&e, K55).excluded.as_deref(),
        Some("BUILD_EXCLUSIVE_KERNEL '^5\\.' does not match 6.1.0-55-amd64")
    );
    assert_eq!(kernel(&e, K56).build_exclusive_kernel, None);
    assert_eq!(kernel(&e, K56).excluded, None);
}

#[test]
fn build_exclusive_kernel_regex_is_bash_ere() {
    let fx = Fx::new();
    let e = fx.eval(fx.module("m", "BUILD_EXCLUSIVE_KERNEL='^6\\.1\\.0-(56|57)-'\n", fx.kernels()));
    assert!(e.kernel_independent);
    assert!(kernel(&e, K55).excluded.as_deref().unwrap().contains("does not match 6.1.0-55-amd64"));
    assert_eq!(kernel(&e, K56).excluded, None);
    // An invalid regex makes dkms's `[[ ! $k =~ $re ]]` true: excluded.
    let e = fx.eval(fx.module("n", "BUILD_EXCLUSIVE_KERNEL='('\n", fx.kernels()));
    assert!(kernel(&e, K56).excluded.is_some());
}

#[test]
fn build_exclusive_arch() {
    let fx = Fx::new();
    let kernels = vec![fx.kernel(K55, "x86_64", None), fx.kernel(K56, "aarch64", None)];
    let e = fx.eval(fx.module("m", "BUILD_EXCLUSIVE_ARCH='^(aarch64|arm64)$'\n", kernels));
    assert_eq!(
        kernel(&e, K55).excluded.as_deref(),
        Some("BUILD_EXCLUSIVE_ARCH '^(aarch64|arm64)$' does not match x86_64")
    );
    assert_eq!(kernel(&e, K56).excluded, None);
    assert_eq!(kernel(&e, K56).build_exclusive_arch.as_deref(), Some("^(aarch64|arm64)$"));
}

#[test]
fn build_exclusive_config_against_the_kernel_config() {
    let fx = Fx::new();
    let config = "CONFIG_FOO=y\nCONFIG_BAR=m\n# CONFIG_BAZ is not set\nCONFIG_NAME=\"yes\"\n";
    let kernels = vec![fx.kernel(K55, "x86_64", Some(config)), fx.kernel(K56, "x86_64", None)];
    let case = |m: &str, value: &str| {
        let e = fx.eval(fx.module(m, &format!("BUILD_EXCLUSIVE_CONFIG=\"{value}\"\n"), kernels.clone()));
        // No .config at all: dkms skips the test.
        assert_eq!(kernel(&e, K56).excluded, None, "{value}");
        assert_eq!(kernel(&e, K55).build_exclusive_config.as_deref(), Some(value));
        kernel(&e, K55).excluded.clone()
    };
    assert_eq!(case("a", "CONFIG_FOO CONFIG_BAR !CONFIG_BAZ"), None);
    let config_path = fx.path("lib/6.1.0-55-amd64/build/.config");
    assert_eq!(
        case("b", "CONFIG_FOO CONFIG_BAZ"),
        Some(format!("BUILD_EXCLUSIVE_CONFIG 'CONFIG_BAZ': CONFIG_BAZ is not set in {}", config_path.display()))
    );
    assert_eq!(
        case("c", "!CONFIG_BAR"),
        Some(format!("BUILD_EXCLUSIVE_CONFIG '!CONFIG_BAR': CONFIG_BAR is set in {}", config_path.display()))
    );
    // `=\"yes\"` is not `=[ym]`; a pattern goes to grep -E as in dkms 3.0.10.
    assert!(case("d", "CONFIG_NAME").is_some());
    assert_eq!(case("e", "CONFIG_F.O"), None);
    assert!(case("f", "!CONFIG_(FOO|QUX)").is_some());
}

#[test]
fn kernel_min_max_and_obsolete_by() {
    let fx = Fx::new();
    let e = fx.eval(fx.module("a", "BUILD_EXCLUSIVE_KERNEL_MIN=6.1.0-56\n", fx.kernels()));
    assert_eq!(
        kernel(&e, K55).excluded.as_deref(),
        Some("BUILD_EXCLUSIVE_KERNEL_MIN '6.1.0-56' is above 6.1.0-55-amd64")
    );
    assert_eq!(kernel(&e, K56).excluded, None);
    let e = fx.eval(fx.module("b", "BUILD_EXCLUSIVE_KERNEL_MAX=6.1.0-55-amd64\n", fx.kernels()));
    assert_eq!(kernel(&e, K55).excluded, None);
    assert_eq!(
        kernel(&e, K56).excluded.as_deref(),
        Some("BUILD_EXCLUSIVE_KERNEL_MAX '6.1.0-55-amd64' is below 6.1.0-56-amd64")
    );
    // Numbers compare as numbers: 6.10 is above 6.9.
    let e =
        fx.eval(fx.module("c", "BUILD_EXCLUSIVE_KERNEL_MIN=6.9\n", vec![fx.kernel("6.10.0-1-amd64", "x86_64", None)]));
    assert_eq!(kernel(&e, "6.10.0-1-amd64").excluded, None);
    // VER strings compare as strings: 6.1.0-56-amd64 is above a MAX of 6.1.0-56, as in dkms.
    let e = fx.eval(fx.module("d", "OBSOLETE_BY=6.1.0-56\n", fx.kernels()));
    assert_eq!(kernel(&e, K56).build_exclusive_kernel_max.as_deref(), Some("6.1.0-56"));
    assert_eq!(kernel(&e, K56).excluded.as_deref(), Some("OBSOLETE_BY '6.1.0-56' is below 6.1.0-56-amd64"));
    assert_eq!(kernel(&e, K55).excluded, None);
    // dkms 3.0.10 does not carry MIN/MAX out of the conf at all, but OBSOLETE_BY it does (and it
    // refuses a conf without a DEST_MODULE_LOCATION).
    let old = version("3.0.10");
    let body = "BUILD_EXCLUSIVE_KERNEL_MIN=6.1.0-56\nDEST_MODULE_LOCATION=/extra\n";
    let e = fx.eval_with(fx.module("e", body, fx.kernels()), &old).unwrap();
    assert_eq!((kernel(&e, K55).build_exclusive_kernel_min.as_ref(), kernel(&e, K55).excluded.as_ref()), (None, None));
    let e = fx
        .eval_with(fx.module("f", "OBSOLETE_BY=6.1.0-56\nDEST_MODULE_LOCATION=/extra\n", fx.kernels()), &old)
        .unwrap();
    assert!(kernel(&e, K56).excluded.is_some());
}

/// One function of the evaluator program, to run it on its own.
fn program_function(name: &str) -> &'static str {
    let start = batch::PROGRAM.find(&format!("\n{name}() {{")).unwrap() + 1;
    let len = batch::PROGRAM[start..].find("\n}\n").unwrap() + 2;
    &batch::PROGRAM[start..start + len]
}

#[test]
fn ver_matches_dkms_sed() {
    // dkms's VER(), verbatim.
    let sed = r"VER() { echo $1 | sed -e 's:\([^0-9]\)\([0-9]\):\1 \2:g' -e 's:\([0-9]\)\([^0-9]\):\1 \2:g' \
        -e 's:\(.*\): \1 :' -e 's: \([0-9]\) : 00\1 :g' -e 's: \([0-9][0-9]\) : 0\1 :g' -e 's: ::g'; }";
    let check = r#"for s in 6.1.0-56-amd64 2.6.9-1cvs200409091247 5 10.20.300.4000 a1b22c333 rc-6.1.0 \
        'x y 7' 6.10 1.2.3-4.5 4.19.0+1 9; do
        __dt_ver "$s"; [[ $__dt_v == "$(VER "$s")" ]] || echo "$s: $__dt_v != $(VER "$s")"; done"#;
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{}\n{sed}\n{check}", program_function("__dt_ver")))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn override_files_in_dkms_order_and_per_kernel() {
    let fx = Fx::new();
    // Each file appends its name; carried variables reach the next file, others do not.
    let req = fx.module("m", "BUILD_DEPENDS=(conf)\nhelper=from-conf\n", fx.kernels());
    fx.write("etc/m.conf", "BUILD_DEPENDS+=(m $helper)\n");
    fx.write("etc/m-1.0.conf", "BUILD_DEPENDS+=(m-v)\n");
    fx.write(&format!("etc/m-1.0-{K56}.conf"), "BUILD_DEPENDS+=(m-v-k)\n");
    fx.write(&format!("etc/m-1.0-{K56}-x86_64.conf"), "BUILD_DEPENDS+=(m-v-k-a)\n");
    fx.write(&format!("etc/m--{K56}.conf"), "BUILD_DEPENDS+=(m--k)\n");
    fx.write(&format!("etc/m--{K56}-x86_64.conf"), "BUILD_DEPENDS+=(m--k-a)\n");
    fx.write(&format!("etc/m-1.0-{K55}-aarch64.conf"), "BUILD_DEPENDS+=(wrong-arch)\n");
    let e = fx.eval(req.clone());
    assert!(!e.kernel_independent);
    assert_eq!(e.generic.build_depends, ["conf", "m", "m-v"]);
    assert_eq!(kernel(&e, K55).build_depends, ["conf", "m", "m-v"]);
    assert_eq!(kernel(&e, K56).build_depends, ["conf", "m", "m-v", "m-v-k", "m-v-k-a"]);
    // dkms 3.1.6 added M--K.conf and M--K-A.conf after the others.
    let e = fx.eval_with(req, &Options { dkms_version: Some("3.1.6".into()), ..fx.opts() }).unwrap();
    assert_eq!(kernel(&e, K56).build_depends, ["conf", "m", "m-v", "m-v-k", "m-v-k-a", "m--k", "m--k-a"]);
    assert_eq!(kernel(&e, K55).build_depends, ["conf", "m", "m-v"]);
}

#[test]
fn per_kernel_override_of_a_dependent_conf() {
    let fx = Fx::new();
    let req = fx.module("m", "MAKE=\"make KVER=$kernelver\"\nAUTOINSTALL=yes\n", fx.kernels());
    fx.write(&format!("etc/m-1.0-{K55}.conf"), "AUTOINSTALL=\n");
    let e = fx.eval(req);
    assert!(!e.kernel_independent);
    assert_eq!(kernel(&e, K55).autoinstall, Autoinstall::No);
    assert_eq!(kernel(&e, K56).autoinstall, Autoinstall::Yes);
    assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
}

/// How many times each file was sourced, from a conf that appends to a counter file.
fn counted(fx: &Fx, m: &str, extra: &str) -> (Evaluated, usize) {
    let counter = fx.path(&format!("{m}.count"));
    let body = format!("echo x >> '{}'\n{extra}", counter.display());
    let e = fx.eval(fx.module(m, &body, fx.kernels()));
    (e, fs::read_to_string(counter).unwrap().lines().count())
}

#[test]
fn kernel_independent_conf_is_evaluated_once() {
    let fx = Fx::new();
    let (e, sourced) = counted(&fx, "m", "# for every arch\nBUILD_EXCLUSIVE_KERNEL='-56-'\n");
    assert!(e.kernel_independent);
    assert_eq!(sourced, 1);
    // The exclusion is still per kernel.
    assert!(kernel(&e, K55).excluded.is_some());
    assert_eq!(kernel(&e, K56).excluded, None);
    assert_eq!(e.generic.excluded, kernel(&e, K55).excluded);
}

#[test]
fn kernel_dependent_conf_is_evaluated_per_kernel() {
    let fx = Fx::new();
    let (e, sourced) = counted(&fx, "m", "BUILT_MODULE_NAME=(m-${kernelver%%-*})\n");
    assert!(!e.kernel_independent);
    // The generic evaluation, then each kernel.
    assert_eq!(sourced, 3);
    assert_eq!(kernel(&e, K56).built_module_name, ["m-6.1.0"]);
    // An override that reads the kernel makes the module dependent too.
    fx.write("etc/n.conf", "PACKAGE_VERSION=$kernelver\n");
    let (e, sourced) = counted(&fx, "n", "");
    assert!(!e.kernel_independent);
    assert_eq!(sourced, 3);
    assert_eq!(kernel(&e, K55).package_version, K55);
}

#[test]
fn dkms_variables_are_set() {
    let fx = Fx::new();
    let os = fx.write("os-release", "ID=rocky\nID_LIKE=\"rhel centos fedora\"\n");
    let k = fx.kernel(K56, "x86_64", None);
    let body = "BUILT_MODULE_NAME=(\"$module\" \"$module_version\" \"$kernelver\" \"$arch\" \"$kernel_source_dir\" \
                \"$kernel_config\" \"$dkms_tree\" \"$source_tree\" \"$install_tree\" \"$running_distribution\")\n";
    let opts = Options { os_release: Some(os), ..fx.opts() };
    let e = fx.eval_with(fx.module("m", body, vec![k.clone()]), &opts).unwrap();
    let paths = [&k.kernel_source_dir, &k.kernel_config, &opts.dkms_tree, &opts.source_tree, &opts.install_tree];
    let mut expected = vec!["m".to_string(), "1.0".into(), K56.into(), "x86_64".into()];
    expected.extend(paths.iter().map(|p| p.display().to_string()));
    expected.push("rhel centos fedora".into());
    assert_eq!(kernel(&e, K56).built_module_name, expected);
}

#[test]
fn command_substitution_runs() {
    let fx = Fx::new();
    let e =
        fx.eval(fx.module("m", "PACKAGE_VERSION=$(echo 2.0)\nBUILT_MODULE_NAME=(`echo a` $(echo b))\n", fx.kernels()));
    assert_eq!(e.generic.package_version, "2.0");
    assert_eq!(kernel(&e, K55).built_module_name, ["a", "b"]);
}

#[test]
fn hanging_conf_times_out_alone() {
    let fx = Fx::new();
    let pid_file = fx.path("bg.pid");
    let hang = format!("sleep 300 & echo $! > '{}'\nwhile :; do :; done\n", pid_file.display());
    // Nine modules in batches of three: the hung one is in the middle of the second batch,
    // so the module after it goes to a new bash.
    let requests: Vec<Request> = (0..9)
        .map(|i| fx.module(&format!("m{i}"), if i == 4 { &hang } else { "BUILD_DEPENDS=base\n" }, fx.kernels()))
        .collect();
    let opts = Options { timeout: Duration::from_secs(1), parallel: 1, ..fx.opts() };
    let started = Instant::now();
    let out = evaluate(&requests, &opts);
    assert!(started.elapsed() < Duration::from_secs(10));
    for (i, result) in out.iter().enumerate() {
        match result {
            Err(e) if i == 4 => assert!(e.contains("timed out after 1 s"), "{e}"),
            Ok(e) if i != 4 => assert_eq!(kernel(e, K56).build_depends, ["base"]),
            other => panic!("module {i}: {other:?}"),
        }
    }
    // Its process group went with it: the background sleep is gone (or a zombie).
    let pid = fs::read_to_string(pid_file).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    let gone = || fs::read_to_string(&stat).map_or(true, |s| s.rsplit(')').next().unwrap().trim().starts_with('Z'));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone(), "the conf's background process survived");
}

#[test]
fn timeout_is_per_evaluation() {
    let fx = Fx::new();
    // 4 evaluations (generic and three kernels) of 0.4 s each, under a 1 s timeout.
    let mut kernels = fx.kernels();
    kernels.push(fx.kernel("6.1.0-57-amd64", "x86_64", None));
    let req = fx.module("m", "sleep 0.4\nMAKE=\"make KVER=$kernelver\"\n", kernels);
    let e = fx.eval_with(req, &Options { timeout: Duration::from_secs(1), ..fx.opts() }).unwrap();
    assert!(e.per_kernel.values().all(Result::is_ok));
}

#[test]
fn hang_in_one_kernel_override_breaks_only_that_kernel() {
    let fx = Fx::new();
    let k57 = fx.kernel("6.1.0-57-amd64", "x86_64", None);
    let mut kernels = fx.kernels();
    kernels.push(k57);
    let req = fx.module("m", "AUTOINSTALL=yes\n", kernels);
    fx.write(&format!("etc/m-1.0-{K56}.conf"), "sleep 300\n");
    let opts = Options { timeout: Duration::from_secs(1), ..fx.opts() };
    let e = fx.eval_with(req, &opts).unwrap();
    assert!(e.per_kernel[K56].as_ref().unwrap_err().contains("timed out after 1 s"));
    assert_eq!(kernel(&e, K55).autoinstall, Autoinstall::Yes);
    assert_eq!(kernel(&e, "6.1.0-57-amd64").autoinstall, Autoinstall::Yes);
}

#[test]
fn syntax_errors_and_failing_commands_keep_what_was_set_before_them() {
    let fx = Fx::new();
    // dkms sources the conf and carries on: what was assigned before the error stays, nothing
    // after it runs.
    let e = fx.eval(fx.module("m", "AUTOINSTALL=yes\nif then fi (\nBUILD_DEPENDS=lost\n", fx.kernels()));
    assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
    assert_eq!(kernel(&e, K55).autoinstall, Autoinstall::Yes);
    assert!(kernel(&e, K56).build_depends.is_empty());
    // An unterminated quote swallows the rest of the file.
    let e = fx.eval(fx.module("u", "AUTOINSTALL=yes\nMAKE=\"make\nBUILD_DEPENDS=lost\n", fx.kernels()));
    assert_eq!(kernel(&e, K56).autoinstall, Autoinstall::Yes);
    assert!(kernel(&e, K56).build_depends.is_empty());
    // A compound command that does not parse is skipped whole.
    let e = fx.eval(fx.module("c", "AUTOINSTALL=yes\nif true; then\n BUILD_DEPENDS=lost\n done\nfi\n", fx.kernels()));
    assert_eq!(kernel(&e, K55).autoinstall, Autoinstall::Yes);
    assert!(kernel(&e, K55).build_depends.is_empty());
    // A failing command, mid-file or last (status 2 as a syntax error has), changes nothing.
    let e = fx.eval(fx.module("n", "AUTOINSTALL=yes\nfalse\nBUILD_DEPENDS=after\n(exit 2)\n", fx.kernels()));
    assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
    assert_eq!(kernel(&e, K56).build_depends, ["after"]);
    // Parsed with extglob on, as dkms parses it: no error here, so the later line counts.
    let e = fx.eval(fx.module("q", "case x in @(a|x)) AUTOINSTALL=yes ;; esac\nBUILD_DEPENDS=b\n", fx.kernels()));
    assert_eq!((e.generic.autoinstall, &e.generic.build_depends[..]), (Autoinstall::Yes, &["b".to_string()][..]));
    // An error before PACKAGE_VERSION leaves the conf without it: refused, as dkms refuses it.
    let conf = fx.write("src/v-1.0/dkms.conf", "PACKAGE_NAME=v\nif then\nPACKAGE_VERSION=1.0\n");
    let req = Request { module: "v".into(), version: "1.0".into(), conf: conf.clone(), kernels: fx.kernels() };
    assert_eq!(fx.eval_with(req, &fx.opts()).unwrap_err(), format!("{} sets no PACKAGE_VERSION", conf.display()));
    // In a per-kernel override the error only cuts that file short.
    let req = fx.module("p", "AUTOINSTALL=yes\n", fx.kernels());
    fx.write(&format!("etc/p-1.0-{K55}.conf"), "BUILD_DEPENDS=kept\nX=\"unterminated\nAUTOINSTALL=\n");
    let e = fx.eval(req);
    assert_eq!(kernel(&e, K55).autoinstall, Autoinstall::Yes);
    assert_eq!(kernel(&e, K55).build_depends, ["kept"]);
    assert!(kernel(&e, K56).build_depends.is_empty());
}

#[test]
fn crlf_keeps_the_carriage_returns_like_dkms_3_0_10() {
    let fx = Fx::new();
    let conf =
        fx.write("src/c-1.0/dkms.conf", "PACKAGE_NAME=\"c\"\r\nPACKAGE_VERSION=\"1.0\"\r\nAUTOINSTALL=\"yes\"\r\n\r\n");
    let req = Request { module: "c".into(), version: "1.0".into(), conf, kernels: fx.kernels() };
    let e = fx.eval(req.clone());
    assert_eq!(e.generic.package_name, "c\r");
    assert_eq!(e.generic.autoinstall, Autoinstall::Other("yes\r".into()));
    let e = fx.eval_with(req, &version("3.1.5")).unwrap();
    assert_eq!(e.generic.package_name, "c");
    assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
    let conf =
        fx.write("src/d-1.0/dkms.conf", "PACKAGE_NAME=d\r\nPACKAGE_VERSION=1\r\nif true; then\r\n  X=1\r\nfi\r\n");
    let req = Request { module: "d".into(), version: "1.0".into(), conf, kernels: fx.kernels() };
    // `then\r` is no keyword: the `if` never ends, and dkms keeps what came before it.
    let e = fx.eval(req);
    assert_eq!((e.generic.package_name.as_str(), e.generic.package_version.as_str()), ("d\r", "1\r"));
}

#[test]
fn output_on_stdout_and_stderr_and_fd_3_cannot_forge_values() {
    let fx = Fx::new();
    // Were any of these to reach the evaluator's output, the F record would fail the module.
    let forged = r"printf 'e\0Fforged\0e\0r1\0kPACKAGE_NAME\0v0:forged\0e\0'";
    // A `"` in a carried value makes dkms's re-read of it run the rest as code, in the
    // evaluator's own shell rather than in the conf's subshell.
    let escape = r#"MAKE='"; printf "e\0Fforged\0e\0"; printf "e\0Fforged\0e\0" >&3; "'"#;
    let body = format!("{forged}\n{forged} >&2\n{forged} >&3\necho junk\n{escape}\nAUTOINSTALL=yes\n");
    let e = fx.eval(fx.module("m", &body, fx.kernels()));
    assert_eq!(e.generic.package_name, "m");
    assert_eq!(kernel(&e, K55).package_name, "m");
    assert_eq!(kernel(&e, K56).autoinstall, Autoinstall::Yes);
}

/// When the scratch directory goes while bash runs (another process's pruning, as in the CI failure
/// of 2026-11-30), every conf would read as empty: the error names the directory, not the conf.
#[test]
fn a_scratch_directory_removed_mid_evaluation_is_named() {
    let fx = Fx::new();
    let req = fx.module("gone", "PACKAGE_NAME=gone\nrm -rf \"${__dt_tmp%/*}\"\n", fx.kernels());
    let err = fx.eval_with(req, &fx.opts()).unwrap_err();
    assert!(err.contains("scratch directory") && err.contains("was removed while it ran"), "{err}");
    assert!(!err.contains("sets no PACKAGE_NAME"), "{err}");
}

#[test]
fn missing_package_name_or_unreadable_conf_is_an_error() {
    let fx = Fx::new();
    let conf = fx.write("src/m-1.0/dkms.conf", "PACKAGE_VERSION=1.0\n");
    let req = Request { module: "m".into(), version: "1.0".into(), conf: conf.clone(), kernels: fx.kernels() };
    assert_eq!(fx.eval_with(req, &fx.opts()).unwrap_err(), format!("{} sets no PACKAGE_NAME", conf.display()));
    let missing = fx.path("src/none/dkms.conf");
    let req = Request { module: "n".into(), version: "1.0".into(), conf: missing.clone(), kernels: fx.kernels() };
    let err = fx.eval_with(req, &fx.opts()).unwrap_err();
    assert!(err.starts_with(&format!("cannot read {}", missing.display())), "{err}");
    // Only for the kernel where a dependent conf drops it.
    let e = fx.eval(fx.module("k", "[[ $kernelver = *-55-* ]] && PACKAGE_NAME=\n", fx.kernels()));
    assert!(e.per_kernel[K55].as_ref().unwrap_err().ends_with("sets no PACKAGE_NAME"));
    assert_eq!(kernel(&e, K56).package_name, "k");
}

/// The module records and values that dkms's read_conf refuses, version by version (read from
/// the dkms sources; 3.0.10's are also compared with the installed one below).
#[test]
fn refuses_what_read_conf_refuses_by_dkms_version() {
    let fx = Fx::new();
    let one = "BUILT_MODULE_NAME[0]=m\nDEST_MODULE_LOCATION[0]=/updates/dkms\n";
    // (body after PACKAGE_NAME/PACKAGE_VERSION, versions that refuse it, versions that accept it)
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        ("one record", one, &[], &["3.0.10", "3.2.2", "3.4.3"]),
        ("name defaults to PACKAGE_NAME", "DEST_MODULE_LOCATION=/extra\n", &[], &["3.0.10", "3.1.7", "3.4.3"]),
        ("no record at all", "AUTOINSTALL=yes\n", &["3.0.10"], &["3.0.11", "3.1.6", "3.2.2", "3.4.3"]),
        (
            "second record without a name",
            "BUILT_MODULE_NAME[0]=a\nDEST_MODULE_LOCATION=(/updates /updates)\n",
            &["3.0.10", "3.1.6", "3.2.2", "3.4.3"],
            &[],
        ),
        ("name ends in .ko", "BUILT_MODULE_NAME=m.ko\nDEST_MODULE_LOCATION=/updates\n", &["3.0.10", "3.4.3"], &[]),
        ("dest name ends in .o", &format!("{one}DEST_MODULE_NAME=m.o\n"), &["3.0.10", "3.4.3"], &[]),
        ("location outside the three", "BUILT_MODULE_NAME=m\nDEST_MODULE_LOCATION=/misc\n", &["3.0.10", "3.4.3"], &[]),
        (
            "record without a location",
            "BUILT_MODULE_NAME=(a b)\nDEST_MODULE_LOCATION=/extra\n",
            &["3.0.10", "3.4.3"],
            &[],
        ),
        // Records are counted by elements up to 3.2.1, by the highest index from 3.2.2.
        (
            "sparse location array",
            "BUILT_MODULE_NAME=(a b)\nDEST_MODULE_LOCATION=(/extra /extra)\nBUILT_MODULE_LOCATION[4]=x\n",
            &["3.2.2", "3.4.3"],
            &["3.0.10", "3.2.1"],
        ),
        // 3.1.7 checks that read_conf's own arrays (which a conf may set) match the records.
        (
            "stray built_module_name",
            &format!("{one}built_module_name[2]=x\n"),
            &["3.1.7", "3.4.3"],
            &["3.0.10", "3.1.6"],
        ),
        ("AUTOINSTALL=1", &format!("{one}AUTOINSTALL=1\n"), &["3.1.7", "3.4.3"], &["3.0.10", "3.1.6"]),
        ("AUTOINSTALL=No", &format!("{one}AUTOINSTALL=No\n"), &[], &["3.0.10", "3.1.7", "3.4.3"]),
        ("NO_WEAK_MODULES=true", &format!("{one}NO_WEAK_MODULES=true\n"), &["3.2.0", "3.4.3"], &["3.0.10", "3.1.8"]),
        (
            "BUILD_DEPENDS_REBUILD=1",
            &format!("{one}BUILD_DEPENDS_REBUILD=1\n"),
            &["3.2.0", "3.4.3"],
            &["3.0.10", "3.1.8"],
        ),
    ];
    for (i, (what, body, refused, accepted)) in cases.iter().enumerate() {
        let m = format!("r{i}");
        let req = fx.module(&m, &body.replace("=m\n", &format!("={m}\n")), fx.kernels());
        for v in refused.iter() {
            let err = fx.eval_with(req.clone(), &fx.dkms(v)).expect_err(&format!("{what}: dkms {v} refuses it"));
            assert!(err.starts_with(&format!("{}: ", req.conf.display())), "{what}: {err}");
        }
        for v in accepted.iter() {
            let e =
                fx.eval_with(req.clone(), &fx.dkms(v)).unwrap_or_else(|e| panic!("{what}: dkms {v} accepts it: {e}"));
            assert!(e.per_kernel.values().all(Result::is_ok), "{what}: {v}");
        }
        // An unknown dkms: only what every version refuses (PACKAGE_NAME, PACKAGE_VERSION).
        assert!(fx.eval_with(req, &fx.opts()).is_ok(), "{what}: unknown dkms version");
    }
    let err = fx.eval_with(
        fx.module("w", "BUILT_MODULE_NAME=(a b)\nDEST_MODULE_LOCATION=/extra\n", vec![]),
        &fx.dkms("3.0.10"),
    );
    assert!(err.unwrap_err().ends_with("No 'DEST_MODULE_LOCATION' directive specified for record #1"));
    // What a per-kernel override breaks, it breaks for that kernel only; what the conf itself
    // breaks, a plain `dkms add` (no per-kernel file applies) refuses: the whole module.
    let req = fx.module("k", one.replace("=m\n", "=k\n").as_str(), fx.kernels());
    fx.write(&format!("etc/k-1.0-{K55}.conf"), "DEST_MODULE_LOCATION=/opt\n");
    let e = fx.eval_with(req, &fx.dkms("3.0.10")).unwrap();
    assert!(e.per_kernel[K55]
        .as_ref()
        .unwrap_err()
        .contains("does not begin with '/kernel', '/updates', or '/extra' in record #0"));
    assert!(kernel(&e, K56).excluded.is_none());
    let req = fx.module("j", "DEST_MODULE_LOCATION=/opt\n", fx.kernels());
    fx.write(&format!("etc/j-1.0-{K55}.conf"), "DEST_MODULE_LOCATION=/extra\n");
    assert!(fx.eval_with(req, &fx.dkms("3.0.10")).is_err());
    // Kernel-dependent confs are checked per kernel.
    let req = fx.module("d", "[[ $kernelver = *-55-* ]] || DEST_MODULE_LOCATION=/extra\n", fx.kernels());
    let e = fx.eval_with(req, &fx.dkms("3.0.10")).unwrap();
    assert!(e.per_kernel[K55].as_ref().unwrap_err().ends_with("No 'DEST_MODULE_LOCATION' directive specified."));
    assert_eq!(kernel(&e, K56).dest_module_location, ["/extra"]);
    let body =
        "BUILT_MODULE_NAME=f\nDEST_MODULE_LOCATION=/extra\n[[ $kernelver = *-55-* ]] && DEST_MODULE_LOCATION=/opt\n";
    let e = fx.eval_with(fx.module("f", body, fx.kernels()), &fx.dkms("3.2.2")).unwrap();
    assert!(e.per_kernel[K55].is_err());
    assert_eq!(kernel(&e, K56).built_module_name, ["f"]);
}

#[test]
fn arrays_with_several_entries() {
    let fx = Fx::new();
    let body = "BUILT_MODULE_NAME[0]=a\nBUILT_MODULE_NAME[1]=b\nBUILT_MODULE_NAME[2]=c\n\
                DEST_MODULE_LOCATION=(/updates/dkms /extra /kernel/drivers)\nBUILD_DEPENDS=(\"x y\" z)\n";
    let e = fx.eval(fx.module("m", body, fx.kernels()));
    assert_eq!(e.generic.built_module_name, ["a", "b", "c"]);
    assert_eq!(kernel(&e, K56).dest_module_location, ["/updates/dkms", "/extra", "/kernel/drivers"]);
    // autoinstall word-splits the dependencies.
    assert_eq!(kernel(&e, K56).build_depends, ["x", "y", "z"]);
}

#[test]
fn values_go_through_safe_source_like_dkms() {
    let fx = Fx::new();
    let body = "BUILD_EXCLUSIVE_KERNEL='^6\\.1 .*$'\n\
                BUILT_MODULE_NAME=('a  b' ' lead' $'x\\ny' 'd$module' \"it's\" 'e\\\\f')\n\
                AUTOINSTALL=yes\n";
    let e = fx.eval(fx.module("m", body, fx.kernels()));
    let v = kernel(&e, K56);
    assert_eq!(v.built_module_name, ["a b", " lead", "x y", "dm", "it's", "e\\f"]);
    assert_eq!(v.build_exclusive_kernel.as_deref(), Some("^6\\.1 .*$"));
    assert_eq!(v.autoinstall, Autoinstall::Yes);
    // A stray `"` breaks dkms's re-read: whatever dkms carries after it is lost.
    let e = fx.eval(fx.module(
        "n",
        "BUILT_MODULE_NAME=('q\"x')\nAUTOINSTALL=yes\nDEST_MODULE_LOCATION=/extra\n",
        fx.kernels(),
    ));
    assert_eq!(e.generic.autoinstall, Autoinstall::No);
    assert!(e.generic.dest_module_location.is_empty());
    assert_eq!(e.generic.package_name, "n");
}

#[test]
fn autoinstall_variants() {
    for (raw, class) in [
        ("", Autoinstall::No),
        ("no", Autoinstall::No),
        ("NO", Autoinstall::No),
        ("yes", Autoinstall::Yes),
        ("YES", Autoinstall::Yes),
        ("Yes", Autoinstall::Yes),
        ("y", Autoinstall::Other("y".into())),
        ("1", Autoinstall::Other("1".into())),
        ("true", Autoinstall::Other("true".into())),
        (" yes", Autoinstall::Other(" yes".into())),
    ] {
        assert_eq!(Autoinstall::classify(raw), class, "{raw:?}");
    }
    let fx = Fx::new();
    for (m, line, class) in [
        ("a", "", Autoinstall::No),
        ("b", "AUTOINSTALL=YES", Autoinstall::Yes),
        ("c", "AUTOINSTALL=' yes'", Autoinstall::Other(" yes".into())),
        ("d", "AUTOINSTALL=no", Autoinstall::No),
    ] {
        assert_eq!(fx.eval(fx.module(m, line, fx.kernels())).generic.autoinstall, class, "{line}");
    }
}

#[test]
fn no_weak_modules_and_build_exclude_by_dkms_version() {
    let fx = Fx::new();
    // (3.0.10 refuses a conf without a DEST_MODULE_LOCATION.)
    let req = fx.module("m", "NO_WEAK_MODULES=no\nbuild_exclude=yes\nDEST_MODULE_LOCATION=/extra\n", fx.kernels());
    let old = fx.eval_with(req.clone(), &version("3.0.10")).unwrap();
    assert!(old.generic.no_weak_modules);
    assert_eq!(kernel(&old, K55).excluded.as_deref(), Some("dkms.conf sets build_exclude='yes'"));
    let new = fx.eval_with(req, &version("3.4.3")).unwrap();
    assert!(!new.generic.no_weak_modules);
    assert_eq!(kernel(&new, K55).excluded, None);
    let e = fx.eval_with(fx.module("n", "NO_WEAK_MODULES=YES\n", vec![]), &version("3.4.3")).unwrap();
    assert!(e.generic.no_weak_modules);
}

#[test]
fn no_kernels_gives_the_generic_evaluation_only() {
    let fx = Fx::new();
    let e = fx.eval(fx.module("m", "MAKE=\"make -C $kernel_source_dir\"\nAUTOINSTALL=yes\n", vec![]));
    assert!(e.per_kernel.is_empty());
    assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
}

#[test]
fn versions() {
    assert_eq!(parse_version("3.0.10"), Some([3, 0, 10]));
    assert_eq!(parse_version("3.0.10-8+deb12u1"), Some([3, 0, 10]));
    assert_eq!(parse_version("3.4"), Some([3, 4, 0]));
    assert_eq!(parse_version("dkms"), None);
    assert!(Dialect::new(Some("3.0.10")).conf_build_exclude && !Dialect::new(Some("3.0.10")).min_max);
    assert!(Dialect::new(None).min_max && !Dialect::new(None).unversioned_overrides);
}

/// The installed dkms, which must be Debian 12's 3.0.10 (tests/setup/install-deps.sh installs
/// it). Not a silent skip: without it the comparisons cannot be made, and that must show.
fn installed_dkms_3_0_10() -> &'static Path {
    let dkms = Path::new("/usr/sbin/dkms");
    let is_3_0_10 = fs::read_to_string(dkms).is_ok_and(|t| t.contains("echo $\"dkms-3.0.10\""));
    assert!(is_3_0_10, "no dkms 3.0.10 at {}: run tests/setup/install-deps.sh", dkms.display());
    dkms
}

/// What both sides are compared on, as bash words over dkms's variables: PACKAGE_NAME,
/// PACKAGE_VERSION, AUTOINSTALL, BUILD_DEPENDS, BUILT_MODULE_NAME, DEST_MODULE_LOCATION, and
/// whether NO_WEAK_MODULES and build_exclude are set (all 3.0.10 asks of them).
const COMPARED: &str = r#""$PACKAGE_NAME" "$PACKAGE_VERSION" "$AUTOINSTALL" "${BUILD_DEPENDS[*]}" "${BUILT_MODULE_NAME[*]}" "${DEST_MODULE_LOCATION[*]}" "${NO_WEAK_MODULES:+yes}" "${build_exclude:+yes}""#;

/// What the real dkms 3.0.10 makes of `req`'s conf for kernel `k`: `dkms add -k K` run on a
/// private tree (--dkmstree, --sourcetree, --installtree in the fixture; the host's
/// /var/lib/dkms is never touched), then dkms's own variables as it exits, written by an EXIT
/// trap that BASH_ENV sets in its shell. Ok(values) when it adds the module; Err(its complaint)
/// when it refuses the conf (exit 8, "Bad conf file"). Anything else fails the test.
fn dkms_3_0_10(fx: &Fx, req: &Request, k: &KernelContext) -> Result<Vec<String>, String> {
    let dkms = installed_dkms_3_0_10();
    let values = fx.path(&format!("{}.values", req.module));
    // Later dkms versions set an EXIT trap of their own, which exits: ours goes first, $? kept.
    let trap = r#"unset BASH_ENV
if [[ $0 == DKMS ]]; then
    __dt_dump() { printf '%s\0' COMPARED >'VALUES'; }
    trap() {
        if [[ $# == 2 && $2 == EXIT ]]; then
            builtin trap "__dt_st=\$?; __dt_dump; (exit \$__dt_st); $1" EXIT
        else
            builtin trap "$@"
        fi
    }
    builtin trap __dt_dump EXIT
fi
"#;
    let trap = trap.replace("DKMS", &dkms.display().to_string()).replace("COMPARED", COMPARED);
    let env = fx.write(&format!("{}.bash_env", req.module), &trap.replace("VALUES", &values.display().to_string()));
    fs::create_dir_all(fx.path("var/lib/dkms")).unwrap();
    let out = Command::new(dkms)
        .args(["add", "-m", &req.module, "-v", &req.version, "-k", &k.kernelver, "-a", &k.arch])
        .arg("--dkmstree")
        .arg(fx.path("var/lib/dkms"))
        .arg("--sourcetree")
        .arg(fx.path("src"))
        .arg("--installtree")
        .arg(fx.path("lib"))
        .arg("--kernelsourcedir")
        .arg(&k.kernel_source_dir)
        .arg("--config")
        .arg(&k.kernel_config)
        .env_clear()
        .env("PATH", batch::PATH)
        .env("LC_ALL", "C")
        .env("BASH_ENV", env)
        .current_dir("/")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            let mut v: Vec<String> = fs::read(&values).unwrap().split(|&b| b == 0).map(text).collect();
            v.pop();
            Ok(v)
        }
        Some(8) if stderr.contains("Bad conf file") => Err(stderr.lines().filter(|l| l.contains("Error!")).collect()),
        _ => panic!("dkms add {}: {}\n{}{stderr}", req.module, out.status, String::from_utf8_lossy(&out.stdout)),
    }
}

/// Our evaluation with dkms 3.0.10's dialect, for kernel `k`, in the order of COMPARED.
fn ours_3_0_10(result: &Result<Evaluated, String>, k: &str) -> Result<Vec<String>, String> {
    let v = result.as_ref().map_err(String::clone)?.per_kernel[k].as_ref().map_err(String::clone)?;
    let set = |on: bool| if on { "yes".to_string() } else { String::new() };
    Ok(vec![
        v.package_name.clone(),
        v.package_version.clone(),
        format!("{:?}", v.autoinstall),
        v.build_depends.join(" "),
        v.built_module_name.join(" "),
        v.dest_module_location.join(" "),
        set(v.no_weak_modules),
        set(v.excluded.is_some()),
    ])
}

/// Evaluates every case and runs the installed dkms 3.0.10 on it; fails listing every case where
/// one refuses what the other accepts or their values differ.
fn compare_with_dkms_3_0_10(fx: &Fx, cases: &[(&str, Request)], k: &KernelContext) {
    let requests: Vec<Request> = cases.iter().map(|(_, r)| r.clone()).collect();
    let results = evaluate(&requests, &fx.dkms("3.0.10"));
    let mut differences = Vec::new();
    for ((what, req), result) in cases.iter().zip(&results) {
        let theirs = dkms_3_0_10(fx, req, k).map(|mut v| {
            // BUILD_DEPENDS as dkms's autoinstall splits it; AUTOINSTALL classified.
            v[2] = format!("{:?}", Autoinstall::classify(&v[2]));
            v[3] = v[3].split([' ', '\t', '\n']).filter(|d| !d.is_empty()).collect::<Vec<_>>().join(" ");
            v
        });
        let ours = ours_3_0_10(result, &k.kernelver);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(_), Err(_)) => {}
            _ => differences.push(format!("{what:?} ({}):\n  ours: {ours:?}\n  dkms: {theirs:?}", req.module)),
        }
    }
    assert!(differences.is_empty(), "differences with dkms 3.0.10:\n{}", differences.join("\n"));
}

/// The same confs through `evaluate` and through the installed dkms 3.0.10: values after
/// safe_source's re-read, BUILD_EXCLUSIVE, what 3.0.10 drops.
#[test]
fn agrees_with_the_installed_dkms_3_0_10() {
    installed_dkms_3_0_10();
    let fx = Fx::new();
    let k = fx.kernel(K56, "x86_64", Some("CONFIG_FOO=y\n"));
    let bodies = [
        "BUILD_EXCLUSIVE_KERNEL='^5\\.'\nAUTOINSTALL=' yes'\nDEST_MODULE_LOCATION=/extra\n",
        "BUILD_EXCLUSIVE_CONFIG='CONFIG_FOO !CONFIG_BAR'\nBUILD_DEPENDS=(a 'b c')\nDEST_MODULE_LOCATION=/extra\n",
        "BUILD_EXCLUSIVE_CONFIG='CONFIG_BAR'\nBUILD_EXCLUSIVE_ARCH=x86_64\nDEST_MODULE_LOCATION=/extra\n",
        "BUILT_MODULE_NAME=('a  b' ' lead' $'x\\ny' 'd$module' 'e\\\\f' '$(echo sub)')\n\
         DEST_MODULE_LOCATION=(/extra /extra /extra /extra /extra /extra)\n",
        // A stray `"` loses every variable carried after it: here DEST_MODULE_LOCATION, so
        // 3.0.10 refuses the conf; after STRIP only AUTOINSTALL and NO_WEAK_MODULES are lost.
        "BUILT_MODULE_NAME=('q\"x')\nAUTOINSTALL=yes\nDEST_MODULE_LOCATION=/extra\nNO_WEAK_MODULES=no\n",
        "STRIP=('q\"x')\nAUTOINSTALL=yes\nDEST_MODULE_LOCATION=/extra\nNO_WEAK_MODULES=no\n",
        "OBSOLETE_BY=6.1\nbuild_exclude=yes\nBUILD_EXCLUSIVE_KERNEL_MIN=9\nPACKAGE_VERSION=$kernelver\n\
         DEST_MODULE_LOCATION=/extra\n",
        "AUTOINSTALL=$(echo yes)\nexit 0\n",
        "AUTOINSTALL=yes\nDEST_MODULE_LOCATION=/extra\nfalse\n",
    ];
    let cases: Vec<(&str, Request)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (*b, fx.module(&format!("dt-oracle-{i}"), b, vec![k.clone()])))
        .collect();
    compare_with_dkms_3_0_10(&fx, &cases, &k);
}

/// dkms.conf is bash that dkms sources and carries on from: whatever dkms 3.0.10 accepts, with
/// the values it ends up with, and only what it refuses is refused (issue 12, item 3).
#[test]
fn accepts_and_refuses_dkms_conf_like_the_installed_dkms_3_0_10() {
    installed_dkms_3_0_10();
    let fx = Fx::new();
    let k = fx.kernel(K56, "x86_64", Some("CONFIG_FOO=y\n"));
    let head = "PACKAGE_NAME=@\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]=@\nDEST_MODULE_LOCATION[0]=/updates/dkms\n";
    let with_head = |rest: &str| format!("{head}{rest}");
    let cases = [
        ("syntax error in a late line", with_head("AUTOINSTALL=yes\nBUILD_DEPENDS=(a b)\nif then fi (\nNO_WEAK_MODULES=yes\nBUILD_DEPENDS=lost\n")),
        ("syntax error inside a block", with_head("AUTOINSTALL=yes\nif true; then\n  BUILD_DEPENDS=lost\n  done\nfi\nNO_WEAK_MODULES=yes\n")),
        ("unterminated double quote at the end", with_head("AUTOINSTALL=yes\nBUILD_DEPENDS=a\nMAKE=\"make -C $kernel_source_dir\nNO_WEAK_MODULES=yes\n")),
        ("unterminated single quote at the end", with_head("AUTOINSTALL=yes\nBUILD_DEPENDS='a\n")),
        ("failing commands mid-file", with_head("false\n/nonexistent/command\nAUTOINSTALL=yes\nBUILD_DEPENDS=after\n")),
        ("failing command last", with_head("AUTOINSTALL=yes\n(exit 2)\n")),
        (
            "output on stdout and stderr",
            with_head("echo AUTOINSTALL=leaked\necho BUILD_DEPENDS=leaked >&2\necho NO_WEAK_MODULES=yes >/dev/stderr\necho build_exclude=yes >/dev/stdout\nAUTOINSTALL=yes\n"),
        ),
        ("exit 0", with_head("AUTOINSTALL=yes\nexit 0\n")),
        ("exit 1", with_head("AUTOINSTALL=yes\nexit 1\n")),
        ("exit in a command substitution", with_head("AUTOINSTALL=$(exit 1)yes\n")),
        ("no PACKAGE_NAME", "PACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]=@\nDEST_MODULE_LOCATION[0]=/updates/dkms\n".into()),
        ("no PACKAGE_VERSION", "PACKAGE_NAME=@\nBUILT_MODULE_NAME[0]=@\nDEST_MODULE_LOCATION[0]=/updates/dkms\n".into()),
        ("syntax error before PACKAGE_VERSION", "PACKAGE_NAME=@\nif then\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]=@\nDEST_MODULE_LOCATION[0]=/updates/dkms\n".into()),
        ("no BUILT_MODULE_NAME for a second record", "PACKAGE_NAME=@\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]=@\nDEST_MODULE_LOCATION=(/updates/dkms /updates/dkms)\n".into()),
        ("no BUILT_MODULE_NAME, one record", "PACKAGE_NAME=@\nPACKAGE_VERSION=1.0\nDEST_MODULE_LOCATION[0]=/updates/dkms\n".into()),
        ("no module record at all", "PACKAGE_NAME=@\nPACKAGE_VERSION=1.0\nAUTOINSTALL=yes\n".into()),
        (
            "BUILT_MODULE_NAME ends in .ko",
            "PACKAGE_NAME=@\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME=@.ko\nDEST_MODULE_NAME=@\nDEST_MODULE_LOCATION=/extra\n".into(),
        ),
        ("DEST_MODULE_NAME ends in .o", with_head("DEST_MODULE_NAME=@.o\n")),
        ("DEST_MODULE_LOCATION elsewhere", "PACKAGE_NAME=@\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME=@\nDEST_MODULE_LOCATION=/misc\n".into()),
        ("a record without DEST_MODULE_LOCATION", "PACKAGE_NAME=@\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME=(@ b)\nDEST_MODULE_LOCATION=/extra\n".into()),
        ("sparse arrays", with_head("BUILT_MODULE_LOCATION[4]=x\n")),
        ("read_conf's own array set by the conf", with_head("built_module_name[2]=x\n")),
        ("AUTOINSTALL=1", with_head("AUTOINSTALL=1\n")),
        (
            "CRLF with an if",
            "PACKAGE_NAME=@\r\nPACKAGE_VERSION=1.0\r\nBUILT_MODULE_NAME[0]=@\r\nDEST_MODULE_LOCATION[0]=/updates/dkms\r\nAUTOINSTALL=yes\r\nif true; then\r\n  BUILD_DEPENDS=x\r\nfi\r\n".into(),
        ),
    ];
    let cases: Vec<(&str, Request)> = cases
        .iter()
        .enumerate()
        .map(|(i, (what, conf))| {
            let m = format!("dt-lenient-{i}");
            let path = fx.write(&format!("src/{m}-1.0/dkms.conf"), &conf.replace('@', &m));
            (*what, Request { module: m, version: "1.0".into(), conf: path, kernels: vec![k.clone()] })
        })
        .collect();
    compare_with_dkms_3_0_10(&fx, &cases, &k);
}

/// What the leniency means for the rest (issue 12, item 5 (d) at the unit level): a module whose
/// dkms.conf has a syntax error in a late line is not broken and a finalize builds it, with the
/// values assigned before the error; one that calls `exit` is refused, as dkms refuses it.
#[test]
fn late_syntax_error_module_is_built_and_exit_module_is_broken() {
    use crate::intent::Intent;
    use crate::plan::Action;
    let tmp = tempfile::tempdir().unwrap();
    let root = crate::root::Root::open(tmp.path()).unwrap();
    let file = |rel: &str, text: &str| {
        let p = root.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    // The root's dkms says which version's rules apply (the inventory reads this line).
    file("usr/sbin/dkms", "#!/bin/bash\necho $\"dkms-3.0.10\"\n");
    file(&format!("lib/modules/{K56}/modules.dep"), "");
    file(&format!("boot/vmlinuz-{K56}"), "image");
    let headers = format!("usr/src/linux-headers-{K56}");
    file(&format!("{headers}/Makefile"), "VERSION = 6\n");
    file(&format!("{headers}/.config"), "CONFIG_X86_64=y\n");
    std::os::unix::fs::symlink(format!("/{headers}"), root.path(format!("lib/modules/{K56}/build"))).unwrap();
    let head = |m: &str| {
        format!(
            "PACKAGE_NAME={m}\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]={m}\nDEST_MODULE_LOCATION[0]=/updates/dkms\n"
        )
    };
    file("usr/src/late-1.0/dkms.conf", &format!("{}AUTOINSTALL=yes\nif then fi (\nAUTOINSTALL=\n", head("late")));
    file("usr/src/late-1.0/late.c", "int x;\n");
    file("usr/src/exits-1.0/dkms.conf", &format!("{}AUTOINSTALL=yes\nexit 0\n", head("exits")));
    file("usr/src/exits-1.0/exits.c", "int x;\n");
    let intents = vec![
        Intent::ModuleChanged { module: "late".into(), version: "1.0".into() },
        Intent::ModuleChanged { module: "exits".into(), version: "1.0".into() },
    ];
    let config = crate::config::Config::default();
    let p = crate::pipeline::prepare(&root, &config, intents, Default::default(), false, true).unwrap();
    assert_eq!(p.inventory.dkms_version.as_deref(), Some("3.0.10"));
    let late = &p.inventory.modules[&("late".to_string(), "1.0".to_string())];
    assert_eq!(late.broken, None);
    assert_eq!(late.conf.as_ref().unwrap().per_kernel[K56].as_ref().unwrap().autoinstall, Autoinstall::Yes);
    let job = p.plan.jobs.iter().find(|j| j.module == "late").expect("a job for late");
    assert_eq!((job.kernel.as_str(), &job.action), (K56, &Action::BuildInstall));
    let exits = &p.inventory.modules[&("exits".to_string(), "1.0".to_string())];
    assert!(exits.broken.as_deref().is_some_and(|b| b.contains("sets no PACKAGE_NAME")), "{exits:?}");
    assert!(!p.plan.jobs.iter().any(|j| j.module == "exits" && matches!(j.action, Action::BuildInstall)));
}
