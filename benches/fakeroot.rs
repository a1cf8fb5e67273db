//! A generated fake root for benchmarks: K kernels with (fake) headers and M DKMS modules, all
//! registered and built/installed for every kernel, as dkms 3.0.10 lays them out.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

pub fn kernel(i: usize) -> String {
    format!("6.1.0-{}-amd64", 10 + i)
}

/// Writes the root. `kernel_dependent`: every dkms.conf derives BUILD_EXCLUSIVE_KERNEL from
/// $kernelver (so it must be evaluated once per kernel).
pub fn build(root: &Path, kernels: usize, modules: usize, kernel_dependent: bool) {
    for k in 0..kernels {
        let kv = kernel(k);
        let build = root.join(format!("usr/src/linux-headers-{kv}"));
        fs::create_dir_all(build.join("include/generated")).unwrap();
        fs::create_dir_all(build.join("scripts/mod")).unwrap();
        fs::write(build.join("Makefile"), "# fake\n").unwrap();
        fs::write(
            build.join(".config"),
            "CONFIG_X86_64=y\nCONFIG_MODULES=y\nCONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n",
        )
        .unwrap();
        fs::write(build.join("Module.symvers"), "").unwrap();
        fs::write(build.join("include/generated/autoconf.h"), "").unwrap();
        fs::write(build.join("include/generated/utsrelease.h"), format!("#define UTS_RELEASE \"{kv}\"\n")).unwrap();
        fs::write(build.join("scripts/mod/modpost"), "").unwrap();
        let moddir = root.join(format!("usr/lib/modules/{kv}"));
        fs::create_dir_all(moddir.join("updates/dkms")).unwrap();
        fs::write(moddir.join("modules.dep"), "").unwrap();
        symlink(format!("/usr/src/linux-headers-{kv}"), moddir.join("build")).unwrap();
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join(format!("boot/vmlinuz-{kv}")), "").unwrap();
    }
    fs::create_dir_all(root.join("lib")).ok();
    let _ = symlink("usr/lib/modules", root.join("lib/modules"));
    for m in 0..modules {
        let name = format!("bench{m}");
        let src = root.join(format!("usr/src/{name}-1.0"));
        fs::create_dir_all(&src).unwrap();
        let exclusive = if kernel_dependent { "BUILD_EXCLUSIVE_KERNEL=\"^${kernelver%%-*}\"\n" } else { "" };
        fs::write(
            src.join("dkms.conf"),
            format!("PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"1.0\"\nBUILT_MODULE_NAME[0]=\"{name}\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"yes\"\n{exclusive}"),
        )
        .unwrap();
        fs::write(src.join(format!("{name}.c")), "// fake\n").unwrap();
        fs::write(src.join("Makefile"), format!("obj-m := {name}.o\n")).unwrap();
        let tree = root.join(format!("var/lib/dkms/{name}/1.0"));
        fs::create_dir_all(&tree).unwrap();
        symlink(format!("/usr/src/{name}-1.0"), tree.join("source")).unwrap();
    }
    // Builds last, so that every build is newer than every input (nothing has drifted).
    std::thread::sleep(std::time::Duration::from_millis(20));
    for m in 0..modules {
        let name = format!("bench{m}");
        for k in 0..kernels {
            let kv = kernel(k);
            let built = root.join(format!("var/lib/dkms/{name}/1.0/{kv}/x86_64/module"));
            fs::create_dir_all(&built).unwrap();
            fs::write(built.join(format!("{name}.ko")), "").unwrap();
            symlink(format!("1.0/{kv}/x86_64"), root.join(format!("var/lib/dkms/{name}/kernel-{kv}-x86_64"))).unwrap();
            fs::write(root.join(format!("usr/lib/modules/{kv}/updates/dkms/{name}.ko")), "").unwrap();
        }
    }
}
