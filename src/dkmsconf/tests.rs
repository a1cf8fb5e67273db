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
    // dkms 3.0.10 does not carry MIN/MAX out of the conf at all, but OBSOLETE_BY it does.
    let old = version("3.0.10");
    let e = fx.eval_with(fx.module("e", "BUILD_EXCLUSIVE_KERNEL_MIN=6.1.0-56\n", fx.kernels()), &old).unwrap();
    assert_eq!((kernel(&e, K55).build_exclusive_kernel_min.as_ref(), kernel(&e, K55).excluded.as_ref()), (None, None));
    let e = fx.eval_with(fx.module("f", "OBSOLETE_BY=6.1.0-56\n", fx.kernels()), &old).unwrap();
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
fn syntax_error_is_an_error_but_a_failing_last_command_is_not() {
    let fx = Fx::new();
    let err = fx.eval_with(fx.module("m", "AUTOINSTALL=yes\nif then fi (\n", fx.kernels()), &fx.opts()).unwrap_err();
    assert!(err.starts_with("syntax error: "), "{err}");
    assert!(err.contains("line 4"), "{err}");
    let e = fx.eval(fx.module("n", "AUTOINSTALL=yes\n(exit 2)\n", fx.kernels()));
    assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
    let e = fx.eval(fx.module("o", "AUTOINSTALL=yes\nfalse\n", fx.kernels()));
    assert_eq!(kernel(&e, K55).autoinstall, Autoinstall::Yes);
    // Parsed with extglob on, as dkms parses it.
    let e = fx.eval(fx.module("q", "case x in @(a|x)) AUTOINSTALL=yes ;; esac\n(exit 2)\n", fx.kernels()));
    assert_eq!(e.generic.autoinstall, Autoinstall::Yes);
    // In a per-kernel override it breaks only that kernel.
    let req = fx.module("p", "AUTOINSTALL=yes\n", fx.kernels());
    fx.write(&format!("etc/p-1.0-{K55}.conf"), "X=\"unterminated\n");
    let e = fx.eval(req);
    assert!(e.per_kernel[K55].as_ref().unwrap_err().starts_with("syntax error: "));
    assert_eq!(kernel(&e, K56).autoinstall, Autoinstall::Yes);
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
    assert!(fx.eval_with(req, &fx.opts()).unwrap_err().starts_with("syntax error: "));
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
    let req = fx.module("m", "NO_WEAK_MODULES=no\nbuild_exclude=yes\n", fx.kernels());
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

/// The same confs through dkms 3.0.10's own read_conf (its functions, sourced from the
/// installed /usr/sbin/dkms) and through `evaluate`. Fails, never skips, where that dkms is not
/// installed.
#[test]
fn agrees_with_the_installed_dkms_3_0_10() {
    let dkms = Path::new("/usr/sbin/dkms");
    let is_3_0_10 = fs::read_to_string(dkms).is_ok_and(|t| t.contains("echo $\"dkms-3.0.10\""));
    // Debian 12's dkms; tests/setup/install-deps.sh installs it. Not a silent skip: without it
    // this comparison cannot be made, and that must show.
    assert!(is_3_0_10, "no dkms 3.0.10 at {}: run tests/setup/install-deps.sh", dkms.display());
    let fx = Fx::new();
    let k = fx.kernel(K56, "x86_64", Some("CONFIG_FOO=y\n"));
    let bodies = [
        "BUILD_EXCLUSIVE_KERNEL='^5\\.'\nAUTOINSTALL=' yes'\n",
        "BUILD_EXCLUSIVE_CONFIG='CONFIG_FOO !CONFIG_BAR'\nBUILD_DEPENDS=(a 'b c')\n",
        "BUILD_EXCLUSIVE_CONFIG='CONFIG_BAR'\nBUILD_EXCLUSIVE_ARCH=x86_64\n",
        "BUILT_MODULE_NAME=('a  b' ' lead' $'x\\ny' 'd$module' 'e\\\\f' '$(echo sub)')\nDEST_MODULE_LOCATION=/extra\n",
        "BUILT_MODULE_NAME=('q\"x')\nAUTOINSTALL=yes\nDEST_MODULE_LOCATION=/extra\nNO_WEAK_MODULES=no\n",
        "OBSOLETE_BY=6.1\nbuild_exclude=yes\nBUILD_EXCLUSIVE_KERNEL_MIN=9\nPACKAGE_VERSION=$kernelver\n",
        "AUTOINSTALL=$(echo yes)\nexit 0\n",
        "AUTOINSTALL=yes\nfalse\n",
    ];
    let opts = version("3.0.10");
    for (i, body) in bodies.iter().enumerate() {
        let m = format!("dt-oracle-{i}");
        let req = fx.module(&m, body, vec![k.clone()]);
        let script = format!(
            "eval \"$(sed -n '1,/^# Set a standard path/p' /usr/sbin/dkms)\"\n\
             current_os=Linux module={m} module_version=1.0 ksourcedir_fromcli=1 kconfig_fromcli=1\n\
             kernel_source_dir='{}' kernel_config='{}'\n\
             read_conf {K56} x86_64 '{}' >/dev/null 2>&1\n\
             printf '%s\\0' \"$PACKAGE_NAME\" \"$PACKAGE_VERSION\" \"$AUTOINSTALL\" \"${{BUILD_DEPENDS[*]}}\" \
             \"${{BUILT_MODULE_NAME[*]}}\" \"${{DEST_MODULE_LOCATION[*]}}\" \"$NO_WEAK_MODULES\" \"$build_exclude\"",
            k.kernel_source_dir.display(),
            k.kernel_config.display(),
            req.conf.display()
        );
        let out = Command::new("bash").arg("-c").arg(script).current_dir("/").output().unwrap();
        let theirs: Vec<String> = out.stdout.split(|&b| b == 0).map(text).collect();
        let e = fx.eval_with(req, &opts);
        let ours = match &e {
            Ok(e) => {
                let v = kernel(e, K56);
                vec![
                    v.package_name.clone(),
                    v.package_version.clone(),
                    match &v.autoinstall {
                        Autoinstall::Yes => "yes".into(),
                        Autoinstall::No => String::new(),
                        Autoinstall::Other(raw) => raw.clone(),
                    },
                    v.build_depends.join(" "),
                    v.built_module_name.join(" "),
                    v.dest_module_location.join(" "),
                    if v.no_weak_modules { "no".into() } else { String::new() },
                    if v.excluded.is_some() { "yes".into() } else { String::new() },
                ]
            }
            // dkms ends up without a name or version too (read_conf fails).
            Err(err) => {
                assert!(err.contains("sets no PACKAGE_"), "{body}: {err}");
                assert!(theirs[0].is_empty() || theirs[1].is_empty(), "{body}: {theirs:?}");
                continue;
            }
        };
        assert_eq!(ours[..], theirs[..8], "{body}");
    }
}
