//! Wall time of dkmsconf::evaluate for 100 modules x 50 fake kernels, with confs that do not use
//! kernel variables and with confs that all do (`cargo bench --bench eval`). No target of its own:
//! it is a part of the planning targets (benches/planning.rs). Asserts that every conf evaluated.
// Tests build fake roots and run programs directly; the one-door rule (clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

#[path = "target.rs"]
mod target;

use dkms_trigger::dkmsconf::{evaluate, KernelContext, Options, Request};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

const MODULES: usize = 100;
const KERNELS: usize = 50;

fn kernels(root: &Path) -> Vec<KernelContext> {
    (0..KERNELS)
        .map(|i| {
            let kernelver = format!("6.1.0-{i}-amd64");
            let build = root.join("lib/modules").join(&kernelver).join("build");
            fs::create_dir_all(&build).unwrap();
            fs::write(build.join(".config"), "CONFIG_MODULES=y\nCONFIG_FOO=m\n# CONFIG_BAR is not set\n").unwrap();
            KernelContext {
                kernelver,
                arch: "x86_64".into(),
                kernel_config: build.join(".config"),
                kernel_source_dir: build,
            }
        })
        .collect()
}

fn requests(root: &Path, tag: &str, body: &str, kernels: &[KernelContext]) -> Vec<Request> {
    (0..MODULES)
        .map(|i| {
            let module = format!("{tag}{i}");
            let dir = root.join("src").join(format!("{module}-1.0"));
            fs::create_dir_all(&dir).unwrap();
            let conf = dir.join("dkms.conf");
            fs::write(
                &conf,
                format!(
                    "# generated for the eval bench\nPACKAGE_NAME={module}\nPACKAGE_VERSION=1.0\n\
                     BUILT_MODULE_NAME[0]={module}\nDEST_MODULE_LOCATION[0]=/updates/dkms\nAUTOINSTALL=yes\n{body}"
                ),
            )
            .unwrap();
            Request { module, version: "1.0".into(), conf, kernels: kernels.to_vec() }
        })
        .collect()
}

/// CPU seconds used so far by this process and its reaped children (the bash processes), which
/// unlike wall time does not depend on what else the machine is running.
fn cpu_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    // utime, stime, cutime, cstime: fields 14 to 17, counted after the parenthesised name.
    let fields: Vec<f64> =
        stat.rsplit(')').next().unwrap().split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    // USER_HZ is 100 in Linux's ABI.
    fields[11..15].iter().sum::<f64>() / 100.0
}

fn bench(name: &str, requests: &[Request], opts: &Options, independent: bool) {
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let results = evaluate(requests, opts);
    let (took, cpu) = (started.elapsed(), cpu_seconds() - cpu);
    assert_eq!(results.len(), requests.len(), "{name}: one result per conf");
    for r in &results {
        let e = r.as_ref().expect("evaluated");
        assert_eq!(e.kernel_independent, independent, "{name}");
        assert_eq!(e.per_kernel.len(), KERNELS);
        assert!(e.per_kernel.values().all(Result::is_ok));
    }
    println!(
        "{name}: {MODULES} modules x {KERNELS} kernels in {:.3} s ({cpu:.2} s of CPU) {}",
        took.as_secs_f64(),
        target::NO_TARGET
    );
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("etc/dkms")).unwrap();
    let kernels = kernels(root);
    let opts = Options {
        root: dkms_trigger::root::Root::host(),
        dkms_tree: root.join("var/lib/dkms"),
        source_tree: root.join("src"),
        install_tree: root.join("lib/modules"),
        override_dir: root.join("etc/dkms"),
        timeout: Duration::from_secs(30),
        parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
        dkms_version: Some("3.0.10".into()),
        os_release: Some("/etc/os-release".into()),
    };
    let independent = requests(
        root,
        "indep",
        "MAKE[0]=\"make -C src\"\nBUILD_EXCLUSIVE_KERNEL='^6\\.'\nBUILD_EXCLUSIVE_CONFIG='CONFIG_FOO !CONFIG_BAR'\n",
        &kernels,
    );
    let dependent = requests(
        root,
        "dep",
        "MAKE[0]=\"make -C ${kernel_source_dir} M=$PWD\"\nBUILD_EXCLUSIVE_KERNEL=\"^${kernelver%%.*}\\.\"\n\
         BUILD_EXCLUSIVE_CONFIG='CONFIG_FOO !CONFIG_BAR'\n",
        &kernels,
    );
    bench("kernel-independent confs", &independent, &opts, true);
    bench("confs using $kernelver", &dependent, &opts, false);
}
