//! Package file lists into intents: rpm file triggers and pacman hooks hand over the paths a
//! transaction installs or removes; this decides which kernels, headers and module sources they are.

use crate::intent::Intent;
use crate::paths;
use crate::root::Root;
use crate::validate::{check, literal_assignment, split_source_dir, What};
use std::collections::BTreeSet;

/// What a list of paths touched.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Module sources (usr/src/M-V/dkms.conf).
    pub modules: BTreeSet<(String, String)>,
    /// Kernels whose headers tree was touched.
    pub headers: BTreeSet<String>,
    /// Kernels whose modules directory got a kernel (modules.order, vmlinuz, boot/vmlinuz-K).
    pub kernels: BTreeSet<String>,
    /// Paths that looked relevant but carried an invalid name.
    pub refused: Vec<String>,
}

/// Classifies root-relative or absolute paths (leading `/` ignored). For a `removal`, a header
/// tree counts only through its anchors (the tree itself, its top Makefile, `include/`): an upgrade
/// that merely drops one header file must not look like the headers going away.
pub fn classify<'a>(root: &Root, paths: impl IntoIterator<Item = &'a str>, removal: bool) -> Touched {
    let mut t = Touched::default();
    for raw in paths {
        let p = raw.trim().trim_start_matches('/').trim_end_matches('/');
        if p.is_empty() {
            continue;
        }
        match what(p, removal) {
            Some(Is::Module(dir)) => match module_of(root, dir) {
                Some(mv) => {
                    t.modules.insert(mv);
                }
                None => t.refused.push(raw.to_string()),
            },
            Some(Is::Headers(k)) | Some(Is::Kernel(k)) if check(What::KernelVersion, k).is_err() => {
                t.refused.push(raw.to_string())
            }
            Some(Is::Headers(k)) => drop(t.headers.insert(k.to_string())),
            Some(Is::Kernel(k)) => drop(t.kernels.insert(k.to_string())),
            None => {}
        }
    }
    t
}

/// What one package path is.
enum Is<'p> {
    /// A module source's dkms.conf: `usr/src/DIR/dkms.conf`.
    Module(&'p str),
    /// Part of kernel K's headers: Debian's linux-headers-K (not the -common tree), Fedora's
    /// kernel-devel tree, or the modules directory's build link.
    Headers(&'p str),
    /// Kernel K itself: its modules.order, modules.builtin or vmlinuz, or boot/vmlinuz-K.
    Kernel(&'p str),
}

fn what(p: &str, removal: bool) -> Option<Is<'_>> {
    let under =
        |base: &str| p.strip_prefix(base).and_then(|r| r.strip_prefix('/')).map(|r| r.split('/').collect::<Vec<_>>());
    let headers_part = |rest: &[&str]| !removal || anchor(rest);
    if let Some(parts) = under(paths::KERNEL_DEVEL_TREE) {
        return match parts.as_slice() {
            [k, rest @ ..] if headers_part(rest) => Some(Is::Headers(k)),
            _ => None,
        };
    }
    if let Some(parts) = under(paths::SOURCE_TREE) {
        return match parts.as_slice() {
            [dir, "dkms.conf"] => Some(Is::Module(dir)),
            [dir, rest @ ..] if headers_part(rest) => {
                dir.strip_prefix(paths::HEADERS_DIR_PREFIX).filter(|k| !k.ends_with("-common")).map(Is::Headers)
            }
            _ => None,
        };
    }
    for base in paths::MODULE_DIRS {
        if let Some(parts) = under(base) {
            return match parts.as_slice() {
                [k, "build", rest @ ..] if headers_part(rest) => Some(Is::Headers(k)),
                [k, f] if matches!(*f, "modules.order" | "vmlinuz" | "modules.builtin") => Some(Is::Kernel(k)),
                _ => None,
            };
        }
    }
    match under(paths::BOOT_DIR)?.as_slice() {
        [f] => f.strip_prefix("vmlinuz-").map(Is::Kernel),
        _ => None,
    }
}

/// The parts of a header tree whose removal means the tree goes.
fn anchor(rest: &[&str]) -> bool {
    matches!(rest, [] | ["Makefile"] | ["include"])
}

/// `usr/src/DIR` as (module, version), by the one rule (`validate::split_source_dir`) with the
/// literal PACKAGE_NAME of its dkms.conf as the hint.
fn module_of(root: &Root, dir: &str) -> Option<(String, String)> {
    // "M-V" obeys the name rule whenever M and V do; checking first keeps `..` out of the path.
    check(What::ModuleName, dir).ok()?;
    let conf = root.read_to_string(format!("{}/{dir}/dkms.conf", paths::SOURCE_TREE)).unwrap_or_default();
    split_source_dir(dir, literal_assignment(&conf, "PACKAGE_NAME").as_deref()).ok()
}

impl Touched {
    /// The intents an install (`upgrade` = false) or an upgrade/reinstall records.
    pub fn intents(&self, upgrade: bool) -> Vec<Intent> {
        let mut v: Vec<Intent> = Vec::new();
        v.extend(self.kernels.iter().map(|k| Intent::KernelAdded { kernel: k.clone() }));
        v.extend(self.headers.iter().map(|k| Intent::HeadersChanged { kernel: k.clone(), force: upgrade }));
        v.extend(self.modules.iter().map(|(m, ver)| Intent::ModuleChanged { module: m.clone(), version: ver.clone() }));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_rpm_pacman_and_debian_paths() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/src/nvidia-fs-2.26.6")).unwrap();
        std::fs::write(
            t.path().join("usr/src/nvidia-fs-2.26.6/dkms.conf"),
            "PACKAGE_NAME=\"nvidia-fs\"\nPACKAGE_VERSION=2.26.6\n",
        )
        .unwrap();
        let root = Root::open(t.path()).unwrap();
        let got = classify(
            &root,
            [
                "/usr/src/nvidia-fs-2.26.6",
                "/usr/src/nvidia-fs-2.26.6/dkms.conf",
                "usr/src/zfs-2.1.11/dkms.conf",
                "/usr/src/kernels/5.14.0-362.el9.x86_64/Makefile",
                "usr/lib/modules/6.6.1-arch1-1/build/include/",
                "/usr/src/linux-headers-6.1.0-47-amd64/Makefile",
                "/usr/src/linux-headers-6.1.0-47-common/Makefile",
                "usr/lib/modules/6.6.1-arch1-1/modules.order",
                "/boot/vmlinuz-6.1.0-47-amd64",
                "/usr/lib/modules/6.6.1-arch1-1/kernel/fs/x.ko",
                "/usr/lib/modules/..%2f/modules.order",
                "/usr/src/../dkms.conf",
            ],
            false,
        );
        assert_eq!(
            got.modules.iter().cloned().collect::<Vec<_>>(),
            vec![("nvidia-fs".into(), "2.26.6".into()), ("zfs".into(), "2.1.11".into())]
        );
        assert_eq!(
            got.headers.iter().cloned().collect::<Vec<_>>(),
            vec!["5.14.0-362.el9.x86_64", "6.1.0-47-amd64", "6.6.1-arch1-1"]
        );
        assert_eq!(got.kernels.iter().cloned().collect::<Vec<_>>(), vec!["6.1.0-47-amd64", "6.6.1-arch1-1"]);
        assert_eq!(got.refused.len(), 2, "{:?}", got.refused);
        let upgrade = got.intents(true);
        assert!(upgrade.contains(&Intent::HeadersChanged { kernel: "6.6.1-arch1-1".into(), force: true }));
        assert!(got.intents(false).contains(&Intent::HeadersChanged { kernel: "6.6.1-arch1-1".into(), force: false }));
    }

    #[test]
    fn removals_count_header_trees_only_by_their_anchors() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let one_file = classify(&root, ["/usr/src/kernels/5.14.0-1.el9.x86_64/include/linux/x.h"], true);
        assert!(one_file.headers.is_empty(), "a dropped header file is not the headers going away");
        for anchor in [
            "/usr/src/kernels/5.14.0-1.el9.x86_64",
            "/usr/src/kernels/5.14.0-1.el9.x86_64/Makefile",
            "usr/lib/modules/5.14.0-1.el9.x86_64/build",
            "usr/lib/modules/5.14.0-1.el9.x86_64/build/include/",
        ] {
            assert_eq!(classify(&root, [anchor], true).headers.len(), 1, "{anchor}");
        }
    }
}
