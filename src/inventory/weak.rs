//! weak-updates (RHEL/SUSE weak-modules): module versions that reach a kernel through symlinks in
//! its weak-updates directory pointing at another kernel's installed modules. dkms's own
//! `installed-weak` detection is broken in 3.0.10 and 3.4 (it only looks one level deep, and 3.4
//! tests NO_WEAK_MODULES the wrong way round), so the links are read directly.

use super::dkms_tree::ko_stem;
use super::prints::walk;
use super::resolve::resolve_host;
use super::{Build, Kernel};
use crate::root::Root;
use std::collections::{BTreeMap, BTreeSet};

/// NEW kernel -> OLD kernel -> names of the modules (`foo` for `foo.ko.xz`) linked from NEW's
/// weak-updates into OLD's modules directory.
pub(crate) type Links = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Reads every kernel's weak-updates tree.
pub(crate) fn links(root: &Root, kernels: &BTreeMap<String, Kernel>) -> Links {
    let dirs: Vec<(&String, std::path::PathBuf)> =
        kernels.iter().map(|(k, kern)| (k, root.path(&kern.modules_dir))).collect();
    let mut out = Links::new();
    for (new, new_dir) in &dirs {
        let weak_dir = new_dir.join("weak-updates");
        let Ok(entries) = walk(root, &weak_dir) else { continue };
        for e in entries.iter().filter(|e| e.link.is_some()) {
            let Ok(target) = resolve_host(root, &weak_dir.join(&e.rel)) else { continue };
            let Some(stem) = target.file_name().and_then(|n| ko_stem(&n.to_string_lossy()).map(str::to_string)) else {
                continue;
            };
            let old = dirs.iter().find(|(old, old_dir)| {
                old != new && target.starts_with(old_dir) && !target.starts_with(old_dir.join("weak-updates"))
            });
            if let Some((old, _)) = old {
                out.entry((*new).clone()).or_default().entry((*old).clone()).or_default().insert(stem);
            }
        }
    }
    out
}

/// The kernels a module version reaches through weak-updates: NEW -> OLD when it is installed on
/// OLD and every module file it built for OLD is linked from NEW into OLD's tree (compared by
/// module name, so compressed and plain files match).
pub(crate) fn satisfied(
    links: &Links,
    builds: &BTreeMap<(String, String), Build>,
    kos: &BTreeMap<(String, String), Vec<String>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, _) in builds.iter().filter(|(_, b)| b.installed) {
        let old = &key.0;
        let stems: BTreeSet<&str> = kos.get(key).into_iter().flatten().filter_map(|f| ko_stem(f)).collect();
        if stems.is_empty() {
            continue;
        }
        for (new, by_old) in links {
            let linked = by_old.get(old);
            if new != old && linked.is_some_and(|l| stems.iter().all(|s| l.contains(*s))) {
                out.insert(new.clone(), old.clone());
            }
        }
    }
    out
}
