//! Scans of fake roots built in temporary directories, and one read-only scan of the real system.

use super::*;
use std::cell::RefCell;
use std::fs;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::time::SystemTime;

// Kernel names of the fake roots: fake on purpose, never a real ABI. The real-system test at the
// end runs on this machine's test kernels, found at run time.
const K1: &str = "6.1.0-901-fake";
const K2: &str = "6.1.0-902-fake";

/// A fake root; everything is created 0755/0644 whatever the umask, so trust checks pass unless a
/// test breaks them on purpose.
struct Fake {
    _tmp: tempfile::TempDir,
    root: Root,
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Built in place: log/make.log, log/.config, module/*.ko.
    V3_0_10,
    /// Renamed from .tmp_A_XXXXXX: module/*.ko plus module/Module.symvers, log/make.log.
    V3_4,
}

impl Fake {
    fn new() -> Fake {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        Fake { _tmp: tmp, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.path(rel)
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.p(rel);
        fs::DirBuilder::new().recursive(true).mode(0o755).create(&p).unwrap();
        p
    }

    fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.p(rel);
        self.dir(&relative(&self.root, p.parent().unwrap()));
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&p).unwrap();
        f.write_all(content.as_bytes()).unwrap();
        p
    }

    fn link(&self, rel: &str, target: &str) {
        let p = self.p(rel);
        self.dir(&relative(&self.root, p.parent().unwrap()));
        symlink(target, p).unwrap();
    }

    /// Shared Debian-style kbuild tree and compiler.
    fn toolchain(&self) {
        self.file("usr/lib/linux-kbuild-6.1/scripts/mod/modpost", "modpost 1");
        self.file("usr/lib/linux-kbuild-6.1/scripts/basic/fixdep", "fixdep 1");
        self.file("usr/lib/linux-kbuild-6.1/scripts/Makefile.build", "# build");
        self.file("usr/lib/linux-kbuild-6.1/tools/objtool/objtool", "objtool");
        self.file("usr/bin/x86_64-linux-gnu-gcc-12", "gcc 12.2.0-14");
        self.link("usr/bin/gcc-12", "x86_64-linux-gnu-gcc-12");
        self.file("usr/lib/gcc/x86_64-linux-gnu/12/cc1", "cc1 12.2.0-14");
    }

    /// A Debian kernel: modules dir with modules.dep, image, initramfs, headers in two trees whose
    /// `build` link is absolute (resolved inside the root).
    fn kernel(&self, k: &str, config: &str) {
        self.file(&format!("lib/modules/{k}/modules.dep"), "");
        self.file(&format!("boot/vmlinuz-{k}"), "image");
        self.file(&format!("boot/initrd.img-{k}"), "initrd");
        self.link(&format!("lib/modules/{k}/build"), &format!("/usr/src/linux-headers-{k}"));
        let h = format!("usr/src/linux-headers-{k}");
        self.file(&format!("{h}/Makefile"), &format!("include /usr/src/linux-headers-{k}-common/Makefile\n"));
        self.file(&format!("{h}-common/Makefile"), "VERSION = 6\n");
        self.file(&format!("{h}/.config"), config);
        self.file(&format!("{h}/Module.symvers"), "0x1 printk vmlinux EXPORT_SYMBOL\n");
        self.file(&format!("{h}/include/generated/autoconf.h"), "#define CONFIG_X86_64 1\n");
        self.file(&format!("{h}/include/generated/utsrelease.h"), &format!("#define UTS_RELEASE \"{k}\"\n"));
        self.link(&format!("{h}/scripts"), "../../lib/linux-kbuild-6.1/scripts");
        self.link(&format!("{h}/tools"), "../../lib/linux-kbuild-6.1/tools");
    }

    fn source(&self, m: &str, v: &str) {
        self.file(&format!("usr/src/{m}-{v}/dkms.conf"), &format!("PACKAGE_NAME=\"{m}\"\nPACKAGE_VERSION=\"{v}\"\n"));
        self.file(&format!("usr/src/{m}-{v}/{m}.c"), "int x;\n");
    }

    /// `dkms add`.
    fn add(&self, m: &str, v: &str) {
        self.dir(&format!("var/lib/dkms/{m}/{v}"));
        self.link(&format!("var/lib/dkms/{m}/{v}/source"), &format!("/usr/src/{m}-{v}"));
    }

    /// `dkms build` of module files `kos`, as `layout` leaves it.
    fn build(&self, m: &str, v: &str, k: &str, kos: &[&str], layout: Layout) {
        let base = format!("var/lib/dkms/{m}/{v}/{k}/x86_64");
        self.file(&format!("{base}/log/make.log"), "ok");
        self.dir(&format!("{base}/module"));
        for ko in kos {
            self.file(&format!("{base}/module/{ko}"), "ko");
        }
        match layout {
            Layout::V3_0_10 => drop(self.file(&format!("{base}/log/.config"), "")),
            Layout::V3_4 => drop(self.file(&format!("{base}/module/Module.symvers"), "")),
        }
    }

    /// `dkms install`: the kernel-K-A link and the installed copies under updates/dkms.
    fn install(&self, m: &str, v: &str, k: &str, kos: &[&str]) {
        self.link(&format!("var/lib/dkms/{m}/kernel-{k}-x86_64"), &format!("{v}/{k}/x86_64"));
        for ko in kos {
            self.file(&format!("lib/modules/{k}/updates/dkms/{ko}"), "ko");
        }
    }

    fn scan(&self) -> Inventory {
        self.scan_config(&Config::default())
    }

    fn scan_config(&self, config: &Config) -> Inventory {
        scan_with(&self.root, config, &fake_evaluate).unwrap()
    }
}

const X86: &str = "CONFIG_X86_64=y\nCONFIG_64BIT=y\nCONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n\
                   CONFIG_CC_IS_GCC=y\nCONFIG_GCC_VERSION=120200\n";

fn values(name: &str, version: &str) -> ConfValues {
    ConfValues::named(name, version)
}

/// Stands in for bash: the last PACKAGE_NAME= / PACKAGE_VERSION= line wins, `$(echo X)` is X.
fn fake_evaluate(requests: &[Request], _opts: &Options) -> Vec<Result<Evaluated, String>> {
    requests
        .iter()
        .map(|r| {
            let text = fs::read_to_string(&r.conf).map_err(|e| e.to_string())?;
            let get = |key: &str| {
                text.lines()
                    .rev()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim_matches('"').trim_start_matches("$(echo ").trim_end_matches(')').to_string())
            };
            let (Some(n), Some(v)) = (get("PACKAGE_NAME="), get("PACKAGE_VERSION=")) else {
                return Err("no PACKAGE_NAME or PACKAGE_VERSION".to_string());
            };
            let per_kernel = r.kernels.iter().map(|k| (k.kernelver.clone(), Ok(values(&n, &v)))).collect();
            Ok(Evaluated { generic: values(&n, &v), per_kernel, kernel_independent: true })
        })
        .collect()
}

fn note_with<'a>(inv: &'a Inventory, needle: &str) -> Option<&'a String> {
    inv.notes.iter().find(|n| n.contains(needle))
}

fn key(m: &str, v: &str) -> ModKey {
    (m.to_string(), v.to_string())
}

fn set_mtime(p: &Path, secs: u64) {
    let f = File::open(p).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

#[test]
fn empty_root_gives_an_empty_inventory() {
    let f = Fake::new();
    let never = |_: &[Request], _: &Options| -> Vec<Result<Evaluated, String>> { panic!("nothing to evaluate") };
    let inv = scan_with(&f.root, &Config::default(), &never).unwrap();
    assert!(inv.kernels.is_empty() && inv.modules.is_empty(), "{inv:?}");
    assert!(inv.notes.is_empty(), "{:?}", inv.notes);
    assert_eq!((inv.running_kernel, inv.dkms_version), (None, None));
}

#[test]
fn merged_usr_reports_each_kernel_once_at_its_real_place() {
    let f = Fake::new();
    f.dir("usr/lib/modules");
    f.link("lib", "usr/lib");
    f.toolchain();
    f.kernel(K1, X86);
    f.kernel(K2, X86);
    let inv = f.scan();
    assert_eq!(inv.kernels.keys().collect::<Vec<_>>(), vec![K1, K2]);
    assert_eq!(inv.kernels[K1].modules_dir, format!("usr/lib/modules/{K1}"));
    assert!(inv.notes.is_empty(), "{:?}", inv.notes);
}

#[test]
fn split_usr_prefers_the_directory_with_content() {
    let f = Fake::new();
    f.toolchain();
    f.kernel(K1, X86);
    f.dir(&format!("usr/lib/modules/{K1}"));
    let inv = f.scan();
    assert_eq!(inv.kernels[K1].modules_dir, format!("lib/modules/{K1}"));
    assert!(inv.kernels[K1].headers.is_some());
    assert!(note_with(&inv, "are different directories").is_some(), "{:?}", inv.notes);
}

#[test]
fn dangling_build_link_means_no_headers_and_leftovers_are_stated() {
    let f = Fake::new();
    f.file(&format!("lib/modules/{K1}/modules.dep"), "");
    f.link(&format!("lib/modules/{K1}/build"), &format!("/usr/src/linux-headers-{K1}"));
    f.dir(&format!("lib/modules/{K2}"));
    let inv = f.scan();
    let k1 = &inv.kernels[K1];
    assert_eq!((k1.headers.as_ref(), k1.image, &k1.print), (None, false, &Fingerprint::default()));
    assert!(note_with(&inv, "build does not resolve").is_some(), "{:?}", inv.notes);
    let k2 = &inv.kernels[K2];
    assert!(k2.headers.is_none() && !k2.image);
    assert!(note_with(&inv, &format!("kernel {K2}: lib/modules/{K2} holds no modules.*")).is_some(), "{:?}", inv.notes);
    assert!(note_with(&inv, &format!("kernel {K1}: lib/modules/{K1} holds")).is_none());
}

#[test]
fn absolute_links_resolve_inside_the_root() {
    let f = Fake::new();
    f.toolchain();
    f.kernel(K1, X86);
    f.kernel(K2, "CONFIG_ARM64=y\nCONFIG_64BIT=y\n");
    f.source("foo", "1.0");
    f.add("foo", "1.0");
    let seen = RefCell::new(Vec::new());
    let record = |r: &[Request], o: &Options| {
        seen.borrow_mut().push((r.to_vec(), o.clone()));
        fake_evaluate(r, o)
    };
    let inv = scan_with(&f.root, &Config::default(), &record).unwrap();
    let headers = f.p(&format!("usr/src/linux-headers-{K1}"));
    let k1 = &inv.kernels[K1];
    assert_eq!(k1.headers.as_ref(), Some(&headers));
    assert_eq!((k1.arch.as_str(), k1.image), ("x86_64", true));
    assert_eq!(k1.initramfs.as_deref(), Some(format!("boot/initrd.img-{K1}").as_str()));
    assert_eq!(inv.kernels[K2].arch, "aarch64");
    assert_eq!(inv.modules[&key("foo", "1.0")].source.as_deref(), Some("usr/src/foo-1.0"));
    let seen = seen.borrow();
    let (requests, opts) = &seen[0];
    assert_eq!(requests[0].conf, f.p("usr/src/foo-1.0/dkms.conf"));
    let ctx = &requests[0].kernels[0];
    assert_eq!((ctx.kernel_source_dir.clone(), ctx.kernel_config.clone()), (headers.clone(), headers.join(".config")));
    assert_eq!((opts.dkms_tree.clone(), opts.override_dir.clone()), (f.p("var/lib/dkms"), f.p("etc/dkms")));
    assert_eq!(opts.install_tree, f.p("lib/modules"));
    // The kbuild tree was found through the relative scripts link of the resolved headers.
    assert!(k1.print.parts.contains_key("kbuild"));
}

/// Built, installed, added, broken and another version installed, as `layout` leaves them.
fn dkms_states(layout: Layout) {
    let f = Fake::new();
    f.toolchain();
    f.kernel(K1, X86);
    f.kernel(K2, X86);
    for (m, v) in [("a", "1.0"), ("b", "1.0"), ("d", "1.0"), ("d", "2.0")] {
        f.source(m, v);
        f.add(m, v);
    }
    f.build("a", "1.0", K1, &["a.ko"], layout);
    f.install("a", "1.0", K1, &["a.ko"]);
    f.build("a", "1.0", K2, &["a.ko.xz"], layout);
    // c: package removed, registration left behind.
    f.dir("var/lib/dkms/c/1.0");
    f.link("var/lib/dkms/c/1.0/source", "/usr/src/c-1.0");
    f.build("d", "1.0", K1, &["d.ko"], layout);
    f.install("d", "1.0", K1, &["d.ko"]);
    f.build("d", "2.0", K1, &["d.ko"], layout);
    match layout {
        Layout::V3_4 => drop(f.dir(&format!("var/lib/dkms/d/2.0/{K2}/.tmp_x86_64_Ab12Cd/module"))),
        Layout::V3_0_10 => drop(f.dir(&format!("var/lib/dkms/d/2.0/{K2}/x86_64/module"))),
    }
    f.file("var/lib/dkms/mok.pub", "key");
    f.dir("var/lib/dkms/d/original_module");

    let inv = f.scan();
    let a = &inv.modules[&key("a", "1.0")];
    let state = |m: &Module, k: &str| m.builds.get(&(k.to_string(), "x86_64".to_string())).map(|b| b.installed);
    assert_eq!((state(a, K1), state(a, K2)), (Some(true), Some(false)));
    assert!(a.registered && a.broken.is_none() && a.conf.is_some());
    assert!(a.builds.values().all(|b| b.built_ms > 0));
    let added = &inv.modules[&key("b", "1.0")];
    assert!(added.registered && added.builds.is_empty() && added.broken.is_none());
    let c = &inv.modules[&key("c", "1.0")];
    assert!(c.broken.as_deref().is_some_and(|w| w.contains("dangles")), "{c:?}");
    assert!(c.conf.is_none() && c.prints.is_empty());
    assert_eq!(inv.installed_version("d", K1), Some("1.0"));
    let d2 = &inv.modules[&key("d", "2.0")];
    assert_eq!((state(d2, K1), state(d2, K2)), (Some(false), None));
    assert_eq!(inv.modules.len(), 5, "original_module is not a version: {:?}", inv.modules.keys());
    let leftover = match layout {
        Layout::V3_4 => ".tmp_x86_64_Ab12Cd: left by an interrupted dkms >= 3.1.7 build",
        Layout::V3_0_10 => "module: no module files",
    };
    assert!(note_with(&inv, leftover).is_some(), "{:?}", inv.notes);
}

#[test]
fn dkms_3_0_10_layout() {
    dkms_states(Layout::V3_0_10);
}

#[test]
fn dkms_3_4_layout() {
    dkms_states(Layout::V3_4);
}

#[test]
fn source_link_missing_while_usr_src_exists_is_broken() {
    let f = Fake::new();
    f.source("e", "1.0");
    f.dir("var/lib/dkms/e/1.0");
    let inv = f.scan();
    let e = &inv.modules[&key("e", "1.0")];
    assert!(e.registered && e.broken.as_deref().is_some_and(|w| w.contains("exists")), "{e:?}");
}

#[test]
fn unregistered_sources_are_named_by_their_dkms_conf() {
    let f = Fake::new();
    f.source("nvidia-fs", "2.17.5");
    // A directory name the dash heuristics split wrongly, with a PACKAGE_NAME that is not literal.
    f.file("usr/src/foo-2fast-1.0/dkms.conf", "PACKAGE_NAME=$(echo foo-2fast)\nPACKAGE_VERSION=1.0\n");
    f.file("usr/src/bar-1.0/dkms.conf", "PACKAGE_NAME=baz\nPACKAGE_VERSION=1.0\n");
    f.add("reg", "1.0");
    f.file("usr/src/reg-1.0/dkms.conf", "PACKAGE_NAME=reg\nPACKAGE_VERSION=2.0\n");
    f.dir("usr/src/python3.11");
    let inv = f.scan();
    let names: Vec<_> = inv.modules.keys().cloned().collect();
    assert_eq!(names, vec![key("bar", "1.0"), key("foo-2fast", "1.0"), key("nvidia-fs", "2.17.5"), key("reg", "1.0")]);
    let nv = &inv.modules[&key("nvidia-fs", "2.17.5")];
    assert!(!nv.registered && nv.broken.is_none() && nv.conf.is_some());
    assert!(inv.modules[&key("foo-2fast", "1.0")].broken.is_none());
    let bar = inv.modules[&key("bar", "1.0")].broken.clone().unwrap_or_default();
    assert!(bar.contains("does not match its directory usr/src/bar-1.0"), "{bar}");
    let reg = inv.modules[&key("reg", "1.0")].broken.clone().unwrap_or_default();
    assert!(reg.contains("registered as reg/1.0"), "{reg}");
}

#[test]
fn weak_updates_links_satisfy_a_kernel_only_when_complete() {
    const OLD: &str = "5.14.0-362.el9.x86_64";
    const NEW: &str = "5.14.0-427.el9.x86_64";
    let setup = |links: &[&str]| {
        let f = Fake::new();
        f.toolchain();
        f.kernel(OLD, X86);
        f.kernel(NEW, X86);
        f.source("foo", "1.0");
        f.add("foo", "1.0");
        f.build("foo", "1.0", OLD, &["foo.ko", "bar.ko.xz"], Layout::V3_4);
        f.link(&format!("var/lib/dkms/foo/kernel-{OLD}-x86_64"), &format!("1.0/{OLD}/x86_64"));
        for ko in ["foo.ko", "bar.ko.xz"] {
            f.file(&format!("lib/modules/{OLD}/extra/{ko}"), "ko");
        }
        for ko in links {
            f.link(&format!("lib/modules/{NEW}/weak-updates/extra/{ko}"), &format!("/lib/modules/{OLD}/extra/{ko}"));
        }
        f
    };
    let f = setup(&["foo.ko", "bar.ko.xz"]);
    let weak = f.scan().modules[&key("foo", "1.0")].weak.clone();
    assert_eq!(weak, BTreeMap::from([(NEW.to_string(), OLD.to_string())]));

    let partial = setup(&["foo.ko"]);
    assert!(partial.scan().modules[&key("foo", "1.0")].weak.is_empty());

    // Links present but the module is no longer installed on OLD.
    fs::remove_file(f.p(&format!("var/lib/dkms/foo/kernel-{OLD}-x86_64"))).unwrap();
    assert!(f.scan().modules[&key("foo", "1.0")].weak.is_empty());
}

#[test]
fn untrusted_sources_are_refused_and_not_evaluated() {
    let evaluated = RefCell::new(Vec::new());
    let record = |r: &[Request], o: &Options| {
        evaluated.borrow_mut().extend(r.iter().map(|r| r.module.clone()));
        fake_evaluate(r, o)
    };
    let f = Fake::new();
    for m in ["ok", "wdir", "sticky", "wparent"] {
        f.source(m, "1.0");
    }
    fs::set_permissions(f.p("usr/src/wdir-1.0"), fs::Permissions::from_mode(0o777)).unwrap();
    f.dir("usr/src/sticky-1.0/tmp");
    fs::set_permissions(f.p("usr/src/sticky-1.0/tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let inv = scan_with(&f.root, &Config::default(), &record).unwrap();
    let why = |m: &str| inv.modules[&key(m, "1.0")].broken.clone();
    assert_eq!(why("ok"), None);
    assert_eq!(why("sticky"), None, "a sticky world-writable directory is excused");
    let w = why("wdir").unwrap_or_default();
    assert!(w.contains("untrusted source: /usr/src/wdir-1.0 is writable by group or others (mode 0777)"), "{w}");
    assert!(!evaluated.borrow().contains(&"wdir".to_string()), "untrusted dkms.conf must not run");
    assert!(inv.modules[&key("wdir", "1.0")].prints.is_empty());

    fs::set_permissions(f.p("usr/src"), fs::Permissions::from_mode(0o775)).unwrap();
    let inv = f.scan();
    assert!(inv.modules.values().all(|m| m.broken.as_deref().is_some_and(|w| w.contains("/usr/src is writable"))));

    let allow = Config { allow_untrusted_sources: true, ..Config::default() };
    assert!(f.scan_config(&allow).modules.values().all(|m| m.broken.is_none()));
}

#[test]
fn a_linked_directory_is_judged_by_its_path_and_its_contents() {
    let f = Fake::new();
    f.source("lnk", "1.0");
    f.file("srv/lib/common.h", "#define X 1\n");
    f.link("usr/src/lnk-1.0/include", "/srv/lib");
    assert_eq!(f.scan().modules[&key("lnk", "1.0")].broken, None, "a root-owned linked directory is fine");
    // Its contents count, not just the directory the link names...
    fs::set_permissions(f.p("srv/lib/common.h"), fs::Permissions::from_mode(0o666)).unwrap();
    let why = f.scan().modules[&key("lnk", "1.0")].broken.clone().unwrap_or_default();
    assert!(why.contains("/srv/lib/common.h is writable by group or others (mode 0666)"), "{why}");
    // ...and so does every directory on the way to it.
    fs::set_permissions(f.p("srv/lib/common.h"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(f.p("srv"), fs::Permissions::from_mode(0o777)).unwrap();
    let why = f.scan().modules[&key("lnk", "1.0")].broken.clone().unwrap_or_default();
    assert!(why.contains("/srv is writable by group or others (mode 0777)"), "{why}");
    // A dkms.conf that is a link: the directory it lies in counts.
    let g = Fake::new();
    g.file("usr/src/cl-1.0/cl.c", "int x;\n");
    g.file("opt/confs/cl.conf", "PACKAGE_NAME=\"cl\"\nPACKAGE_VERSION=\"1.0\"\n");
    g.link("usr/src/cl-1.0/dkms.conf", "/opt/confs/cl.conf");
    assert_eq!(g.scan().modules[&key("cl", "1.0")].broken, None);
    fs::set_permissions(g.p("opt/confs"), fs::Permissions::from_mode(0o775)).unwrap();
    let why = g.scan().modules[&key("cl", "1.0")].broken.clone().unwrap_or_default();
    assert!(why.contains("/opt/confs is writable by group or others (mode 0775)"), "{why}");
}

#[test]
fn untrusted_etc_dkms_files_refuse_their_module_or_all() {
    let evaluated = RefCell::new(Vec::new());
    let record = |r: &[Request], o: &Options| {
        evaluated.borrow_mut().extend(r.iter().map(|r| r.module.clone()));
        fake_evaluate(r, o)
    };
    let f = Fake::new();
    f.source("foo", "1.0");
    f.source("bar", "1.0");
    f.file("etc/dkms/foo-1.0.conf", "MAKE=x\n");
    f.file("etc/dkms/README", "not sourced\n");
    fs::set_permissions(f.p("etc/dkms/foo-1.0.conf"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(f.p("etc/dkms/README"), fs::Permissions::from_mode(0o666)).unwrap();
    let inv = scan_with(&f.root, &Config::default(), &record).unwrap();
    let why = inv.modules[&key("foo", "1.0")].broken.clone().unwrap_or_default();
    assert!(why.contains("untrusted /etc/dkms file: /etc/dkms/foo-1.0.conf is writable"), "{why}");
    assert_eq!(inv.modules[&key("bar", "1.0")].broken, None, "another module's files do not count");
    assert_eq!(*evaluated.borrow(), vec!["bar".to_string()], "foo's dkms.conf and overrides never ran");
    // allow_untrusted_sources is for module sources only.
    let allow = Config { allow_untrusted_sources: true, ..Config::default() };
    assert!(f.scan_config(&allow).modules[&key("foo", "1.0")].broken.is_some());
    // framework.conf is sourced for every module.
    f.file("etc/dkms/framework.conf", "sign_file=/x\n");
    fs::set_permissions(f.p("etc/dkms/framework.conf"), fs::Permissions::from_mode(0o664)).unwrap();
    assert!(f.scan().modules.values().all(|m| m.broken.as_deref().is_some_and(|b| b.contains("framework.conf"))));
}

#[test]
fn headers_others_may_write_to_are_not_built_against() {
    for spoil in [&format!("usr/src/linux-headers-{K1}"), "usr/lib/linux-kbuild-6.1/scripts/mod/modpost"] {
        let f = Fake::new();
        f.toolchain();
        f.kernel(K1, X86);
        f.kernel(K2, X86);
        fs::set_permissions(f.p(spoil), fs::Permissions::from_mode(0o777)).unwrap();
        let inv = f.scan();
        let both = spoil.contains("kbuild");
        assert_eq!(inv.kernels[K1].headers, None, "{spoil}");
        assert_eq!(inv.kernels[K2].headers.is_none(), both, "{spoil}: K2 shares only the kbuild tree");
        let note = note_with(&inv, &format!("kernel {K1}: headers not used, root may not trust them"));
        assert!(
            note.is_some_and(|n| n.contains(&format!("/{spoil} is writable by group or others"))),
            "{:?}",
            inv.notes
        );
    }
}

#[test]
fn an_os_release_others_may_write_to_is_not_sourced() {
    let seen = RefCell::new(None);
    let record = |r: &[Request], o: &Options| {
        *seen.borrow_mut() = Some(o.os_release.clone());
        fake_evaluate(r, o)
    };
    let f = Fake::new();
    f.source("foo", "1.0");
    f.file("usr/lib/os-release", "ID=debian\n");
    f.link("etc/os-release", "../usr/lib/os-release");
    scan_with(&f.root, &Config::default(), &record).unwrap();
    assert_eq!(*seen.borrow(), Some(Some(f.p("usr/lib/os-release"))), "the resolved, checked file");
    fs::set_permissions(f.p("usr/lib/os-release"), fs::Permissions::from_mode(0o646)).unwrap();
    let inv = scan_with(&f.root, &Config::default(), &record).unwrap();
    assert_eq!(*seen.borrow(), Some(None));
    assert!(note_with(&inv, "/usr/lib/os-release is writable by group or others (mode 0646): not sourced").is_some());
}

#[test]
fn sources_owned_by_another_user_are_refused() {
    assert!(crate::root::is_root_user(), "this test chowns files: run the unit tests as root (CI does)");
    let f = Fake::new();
    f.source("foo", "1.0");
    let conf = f.p("usr/src/foo-1.0/dkms.conf");
    nix::unistd::chown(&conf, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
    let why = f.scan().modules[&key("foo", "1.0")].broken.clone().unwrap_or_default();
    assert!(why.contains("/usr/src/foo-1.0/dkms.conf is owned by uid 1000"), "must be refused, is {why:?}");
    let allow = Config { allow_untrusted_sources: true, ..Config::default() };
    assert_eq!(f.scan_config(&allow).modules[&key("foo", "1.0")].broken, None);
    // A symlink in the tree to a file outside it is judged by that file.
    let g = Fake::new();
    g.source("bar", "1.0");
    let outside = g.file("home/user/evil.c", "int y;\n");
    nix::unistd::chown(&outside, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
    g.link("usr/src/bar-1.0/evil.c", "/home/user/evil.c");
    let why = g.scan().modules[&key("bar", "1.0")].broken.clone().unwrap_or_default();
    assert!(why.contains("/home/user/evil.c is owned by uid 1000"), "{why}");
}

#[test]
fn hostile_names_are_skipped_with_a_note() {
    let f = Fake::new();
    f.dir("lib/modules/6.1.0 $(reboot)");
    f.dir("var/lib/dkms/bad\nname/1.0");
    f.dir("var/lib/dkms/good/..1");
    f.dir("var/lib/dkms/good/1.0/6.1.0;x/x86_64/module");
    f.file("usr/src/ev il-1.0/dkms.conf", "PACKAGE_NAME=ev\n");
    let inv = f.scan();
    assert!(inv.kernels.is_empty());
    for needle in [
        "lib/modules/'6.1.0 $(reboot)': skipped",
        "var/lib/dkms/'bad\\nname': skipped",
        "'..1': skipped",
        "'6.1.0;x': skipped",
        "usr/src/'ev il-1.0': skipped",
    ] {
        assert!(note_with(&inv, needle).is_some(), "{needle}: {:?}", inv.notes);
    }
    assert_eq!(inv.modules.keys().collect::<Vec<_>>(), vec![&key("good", "1.0")]);
}

#[test]
fn dkms_version_from_both_script_wordings() {
    assert_eq!(
        parse_dkms_version("        --version|-V)\n            echo $\"dkms-3.0.10\"\n").as_deref(),
        Some("3.0.10")
    );
    assert_eq!(parse_dkms_version("    --version|-V)\n        echo \"dkms-3.4.3\"\n").as_deref(), Some("3.4.3"));
    assert_eq!(parse_dkms_version("echo \"DKMS (dkms-3.4.3) make.log\"\n        echo \"@RELEASE_STRING@\"\n"), None);
    let f = Fake::new();
    f.file("usr/sbin/dkms", "#!/bin/bash\n    --version|-V)\n            echo $\"dkms-3.0.10\"\n");
    assert_eq!(f.scan().dkms_version.as_deref(), Some("3.0.10"));
}

/// A system with two kernels and one module, for the fingerprint tests.
fn print_fixture() -> Fake {
    let f = Fake::new();
    f.toolchain();
    f.kernel(K1, X86);
    f.kernel(K2, X86);
    f.source("foo", "1.0");
    f.add("foo", "1.0");
    f
}

fn pair(inv: &Inventory, k: &str) -> Fingerprint {
    inv.pair_print(&inv.modules[&key("foo", "1.0")], k).unwrap()
}

#[test]
fn fingerprints_are_stable_on_an_untouched_system() {
    let f = print_fixture();
    let (one, two) = (f.scan(), f.scan());
    let p = pair(&one, K1);
    assert_eq!(p.parts.keys().collect::<Vec<_>>(), vec!["compiler", "headers", "kbuild", "overrides", "source"]);
    assert!(p.parts.values().all(|d| d.starts_with("v1:")));
    assert_eq!(p, pair(&two, K1));
    assert_eq!(one.kernels[K2].print, two.kernels[K2].print);
    assert_eq!(one.modules, two.modules);
    // Same kbuild and compiler for both kernels, different headers.
    let (p1, p2) = (&one.kernels[K1].print.parts, &one.kernels[K2].print.parts);
    assert_eq!((&p1["kbuild"], &p1["compiler"]), (&p2["kbuild"], &p2["compiler"]));
    assert_ne!(p1["headers"], p2["headers"]);
}

#[test]
fn each_component_changes_only_with_its_input() {
    let f = print_fixture();
    let mut before = f.scan();
    let mut step = |what: &str, change: &dyn Fn(), k: &str, want: &[&str]| {
        // File times come from the kernel's coarse clock: let it tick so that the change is newer.
        std::thread::sleep(Duration::from_millis(25));
        change();
        let after = f.scan();
        let (old, new) = (pair(&before, k), pair(&after, k));
        assert_eq!(old.changed_parts(&new), want, "{what}");
        assert!(new.newest_input_ms > old.newest_input_ms, "{what}: newest_input_ms {old:?} {new:?}");
        before = after;
    };
    let hdr = format!("usr/src/linux-headers-{K1}");
    step(
        "touch modpost",
        &|| set_mtime(&f.p("usr/lib/linux-kbuild-6.1/scripts/mod/modpost"), 1_700_000_000),
        K2,
        &["kbuild"],
    );
    step(
        "kbuild upgrade adds a file",
        &|| drop(f.file("usr/lib/linux-kbuild-6.1/scripts/mod/new", "x")),
        K1,
        &["kbuild"],
    );
    step(
        "compiler upgrade",
        &|| drop(f.file("usr/bin/x86_64-linux-gnu-gcc-12", "gcc 12.2.0-14+deb12u1")),
        K1,
        &["compiler"],
    );
    step("cc1 upgrade", &|| drop(f.file("usr/lib/gcc/x86_64-linux-gnu/12/cc1", "cc1 new")), K1, &["compiler"]);
    step("same-version headers reinstall", &|| drop(f.file(&format!("{hdr}/.config"), X86)), K1, &["headers"]);
    // dpkg restores the archive's mtime: only the ctime tells the file was replaced.
    let dpkg_reinstall = || {
        let config = f.p(&format!("{hdr}/.config"));
        let mtime = fs::metadata(&config).unwrap().modified().unwrap();
        fs::remove_file(&config).unwrap();
        f.file(&format!("{hdr}/.config"), X86);
        File::open(&config).unwrap().set_modified(mtime).unwrap();
    };
    step("reinstall keeping mtimes", &dpkg_reinstall, K1, &["headers"]);
    step("symvers", &|| drop(f.file(&format!("{hdr}/Module.symvers"), "0x2 printk vmlinux\n")), K1, &["headers"]);
    step("-common Makefile", &|| drop(f.file(&format!("{hdr}-common/Makefile"), "VERSION = 7\n")), K1, &["headers"]);
    step("source edit", &|| drop(f.file("usr/src/foo-1.0/foo.c", "int y;\n")), K1, &["source"]);
    step("new source file", &|| drop(f.file("usr/src/foo-1.0/sub/extra.h", "")), K1, &["source"]);
    step("module override", &|| drop(f.file("etc/dkms/foo.conf", "MAKE=x\n")), K1, &["overrides"]);
    step("3.4 override script", &|| drop(f.file("etc/dkms/foo/pre_build.sh", "true\n")), K1, &["overrides"]);
    step("K2 override", &|| drop(f.file(&format!("etc/dkms/foo-1.0-{K2}.conf"), "MAKE=y\n")), K2, &["overrides"]);
    let k1_before = pair(&before, K1);
    assert_eq!(k1_before.changed_parts(&pair(&f.scan(), K1)), Vec::<String>::new(), "K2's override is not K1's");
    // An override edit that keeps size and mtime still counts: contents are hashed.
    let conf = f.p("etc/dkms/foo.conf");
    let mtime = fs::metadata(&conf).unwrap().modified().unwrap();
    f.file("etc/dkms/foo.conf", "MAKE=z\n");
    File::open(&conf).unwrap().set_modified(mtime).unwrap();
    assert_eq!(k1_before.changed_parts(&pair(&f.scan(), K1)), vec!["overrides"]);
}

#[path = "../../tests/common/kernels.rs"]
mod test_kernels;

/// The machine's two test kernels (tests/setup/newest-headers.sh --installed, the rule
/// tests/setup/install-deps.sh installs them by), as the inventory sees them on the real system.
#[test]
fn real_system_test_kernels_have_headers() {
    let [k1, k2] = test_kernels::test_kernels();
    let root = Root::open(Path::new("/")).unwrap();
    let refuse = |r: &[Request], _: &Options| r.iter().map(|_| Err("not evaluated in this test".to_string())).collect();
    let inv = scan_with(&root, &Config::default(), &refuse).unwrap();
    for k in [&k1, &k2] {
        let kernel = inv
            .kernels
            .get(k)
            .unwrap_or_else(|| panic!("test kernel {k} not found under /lib/modules (found {:?})", inv.kernels.keys()));
        let want = PathBuf::from(format!("/usr/src/linux-headers-{k}"));
        assert_eq!(kernel.headers.as_ref(), Some(&want), "headers of {k}: run tests/setup/install-deps.sh");
        assert_eq!(kernel.arch, "x86_64");
        assert_eq!(kernel.print.parts.len(), 3, "{:?}", kernel.print);
    }
    let (p1, p2) = (&inv.kernels[&k1].print.parts, &inv.kernels[&k2].print.parts);
    assert_eq!(p1["compiler"], p2["compiler"], "one gcc-12 for both");
    assert_eq!(inv.dkms_version.as_deref(), Some("3.0.10"));
    assert_eq!(inv.kernels[&k1].print, scan_with(&root, &Config::default(), &refuse).unwrap().kernels[&k1].print);
}
