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
        let parts: Vec<&str> = p.split('/').collect();
        let kernel = |t: &mut Touched, set: fn(&mut Touched) -> &mut BTreeSet<String>, k: &str| {
            if check(What::KernelVersion, k).is_ok() {
                set(t).insert(k.to_string());
            } else {
                t.refused.push(raw.to_string());
            }
        };
        match parts.as_slice() {
            ["usr", "src", dir, "dkms.conf"] => match module_of(root, dir) {
                Some(mv) => {
                    t.modules.insert(mv);
                }
                None => t.refused.push(raw.to_string()),
            },
            // Debian's linux-headers-K (not the -common tree), Fedora's kernel-devel tree, the build link.
            ["usr", "src", dir, rest @ ..]
                if dir.starts_with("linux-headers-") && !dir.ends_with("-common") && (!removal || anchor(rest)) =>
            {
                kernel(&mut t, |t| &mut t.headers, &dir["linux-headers-".len()..])
            }
            ["usr", "src", "kernels", k, rest @ ..]
            | ["usr", "lib", "modules", k, "build", rest @ ..]
            | ["lib", "modules", k, "build", rest @ ..]
                if !removal || anchor(rest) =>
            {
                kernel(&mut t, |t| &mut t.headers, k)
            }
            ["usr", "lib", "modules", k, f] | ["lib", "modules", k, f]
                if matches!(*f, "modules.order" | "vmlinuz" | "modules.builtin") =>
            {
                kernel(&mut t, |t| &mut t.kernels, k)
            }
            ["boot", f] if f.starts_with("vmlinuz-") => kernel(&mut t, |t| &mut t.kernels, &f["vmlinuz-".len()..]),
            _ => {}
        }
    }
    t
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
