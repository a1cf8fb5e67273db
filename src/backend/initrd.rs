//! The initramfs tools: which one a system uses (update-initramfs on Debian, dracut on Fedora;
//! Arch's mkinitcpio regenerates images from its own pacman hook), the update command, and whether
//! an image contains a module (lsinitramfs/lsinitrd listings, parsed from their text).

use crate::config::InitramfsSetting;
use crate::paths;
use crate::root::Root;
use crate::runner::{Cmd, Log};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A tool that updates initramfs images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    UpdateInitramfs,
    Dracut,
}

/// The tool that applies on `root` under the `initramfs` setting; None when images must not (or
/// need not) be touched by us.
pub fn tool(root: &Root, setting: InitramfsSetting) -> Option<Tool> {
    match setting {
        InitramfsSetting::Never => None,
        InitramfsSetting::UpdateInitramfs => Some(Tool::UpdateInitramfs),
        InitramfsSetting::Dracut => Some(Tool::Dracut),
        InitramfsSetting::Auto => {
            if root.exists(paths::MKINITCPIO) {
                None // Arch: mkinitcpio's own pacman hook regenerates images
            } else if root.exists(paths::UPDATE_INITRAMFS) {
                Some(Tool::UpdateInitramfs)
            } else if paths::DRACUT.iter().any(|p| root.exists(p)) {
                Some(Tool::Dracut)
            } else {
                None
            }
        }
    }
}

/// The command that regenerates `kernel`'s image.
pub fn update(tool: Tool, kernel: &str) -> Cmd {
    match tool {
        Tool::UpdateInitramfs => Cmd::new("update-initramfs").args(["-u", "-k", kernel]),
        Tool::Dracut => Cmd::new("dracut").args(["--force", "--kver", kernel]),
    }
}

/// The modules the tool's own configuration asks for by name (`_` for `-`): initramfs-tools'
/// /etc/initramfs-tools/modules and modules.d lists (first word of each line), dracut's
/// `add_drivers` and `force_drivers`. A changed module named there belongs in the image even when
/// the image does not hold it yet (it was made before the module was built: headers installed
/// after their kernel).
pub fn wanted(root: &Root, tool: Tool) -> BTreeSet<String> {
    let files = |dir: &str, suffix: &str| -> Vec<PathBuf> {
        let mut names = root.list(dir).unwrap_or_default();
        names.sort();
        names.into_iter().filter(|n| n.to_string_lossy().ends_with(suffix)).map(|n| Path::new(dir).join(n)).collect()
    };
    let mut out = BTreeSet::new();
    match tool {
        Tool::UpdateInitramfs => {
            let mut list = vec![PathBuf::from(paths::INITRAMFS_TOOLS_MODULES)];
            list.extend(paths::INITRAMFS_TOOLS_MODULES_D.iter().flat_map(|d| files(d, "")));
            for f in list {
                let text = root.read(&f).unwrap_or_default();
                for line in String::from_utf8_lossy(&text).lines() {
                    if let Some(word) = line.split_whitespace().next().filter(|w| !w.starts_with('#')) {
                        out.insert(word.replace('-', "_"));
                    }
                }
            }
        }
        Tool::Dracut => {
            let mut list = vec![PathBuf::from(paths::DRACUT_CONF)];
            list.extend(paths::DRACUT_CONF_D.iter().flat_map(|d| files(d, ".conf")));
            for f in list {
                let text = root.read(&f).unwrap_or_default();
                for line in String::from_utf8_lossy(&text).lines() {
                    let line = line.trim_start();
                    let value = ["add_drivers", "force_drivers"]
                        .iter()
                        .find_map(|k| line.strip_prefix(k))
                        .map(|r| r.trim_start_matches('+').trim_start())
                        .and_then(|r| r.strip_prefix('='));
                    if let Some(v) = value {
                        out.extend(
                            v.trim_matches(|c| c == '"' || c == '\'' || c == ' ')
                                .split_whitespace()
                                .map(|w| w.replace('-', "_")),
                        );
                    }
                }
            }
        }
    }
    out
}

/// The longest a listing may take, whatever the job's time limit: it reads one image.
pub const LISTING_TIMEOUT: Duration = Duration::from_secs(300);

/// The file list of `image` (a host path), written to `listing`, within `timeout` (at most
/// `LISTING_TIMEOUT`); Err says why it is unknown, a listing longer than a log keeps included.
pub fn list(tool: Tool, image: &Path, listing: &Log, timeout: Duration) -> Result<String, String> {
    let lister = match tool {
        Tool::UpdateInitramfs => "lsinitramfs",
        Tool::Dracut => "lsinitrd",
    };
    match Cmd::new(lister).arg(image).timeout(timeout.min(LISTING_TIMEOUT)).run(listing) {
        Ok(r) if r.ok() && r.output_cut => {
            Err(format!("the listing of {} is longer than a log keeps", image.display()))
        }
        Ok(r) if r.ok() => Ok(r.output()),
        Ok(r) => Err(r.explain()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Whether a listing names a module file of one of `names` (`foo` matches `.../foo.ko`,
/// `foo.ko.xz`, `foo.ko.zst`...). lsinitramfs prints one path per line; lsinitrd prints `ls -l`
/// style lines whose last field is the path.
pub fn contains_module(listing: &str, names: &[String]) -> bool {
    listing.lines().any(|l| {
        let path = l.split_whitespace().last().unwrap_or("");
        let file = path.rsplit('/').next().unwrap_or(path);
        names.iter().any(|n| file.strip_prefix(n.as_str()).is_some_and(|rest| rest.starts_with(".ko")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_of_both_tools_are_read() {
        // Captured: lsinitramfs (initramfs-tools 0.142) and lsinitrd (dracut 059).
        let lsinitramfs = "usr/lib/modules/6.1.0-28-amd64/updates/dkms\n\
            usr/lib/modules/6.1.0-28-amd64/updates/dkms/zfs.ko\n\
            usr/lib/modules/6.1.0-28-amd64/kernel/fs/ext4/ext4.ko\n";
        let lsinitrd = "-rw-r--r--   1 root     root        12345 Jan  1 00:00 \
            usr/lib/modules/6.5.6-300.fc39.x86_64/extra/nvidia.ko.xz\n\
            drwxr-xr-x   2 root     root            0 Jan  1 00:00 usr/lib/modules/6.5.6-300.fc39.x86_64/extra\n";
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(contains_module(lsinitramfs, &names(&["zfs"])));
        assert!(!contains_module(lsinitramfs, &names(&["zf", "spl"])), "whole names only");
        assert!(contains_module(lsinitrd, &names(&["nvidia"])));
        assert!(!contains_module(lsinitrd, &names(&["extra"])), "directories are not modules");
    }

    #[test]
    fn modules_asked_for_by_the_tools_configuration() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let write = |p: &str, text: &str| {
            let p = t.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        assert!(wanted(&root, Tool::UpdateInitramfs).is_empty(), "nothing configured");
        write("etc/initramfs-tools/modules", "# comment\nraid1\nmy-mod opt=1\n\n  # x\n");
        write("usr/share/initramfs-tools/modules.d/zfs", "zfs\n");
        let got: Vec<String> = wanted(&root, Tool::UpdateInitramfs).into_iter().collect();
        assert_eq!(got, ["my_mod", "raid1", "zfs"]);
        write("etc/dracut.conf.d/10-x.conf", "add_drivers+=\" nvidia nvidia-drm \"\nomit_drivers+=\" nouveau \"\n");
        write("usr/lib/dracut/dracut.conf.d/20-y.conf", "force_drivers=\"zfs\"\n# add_drivers+=\" no \"\n");
        let got: Vec<String> = wanted(&root, Tool::Dracut).into_iter().collect();
        assert_eq!(got, ["nvidia", "nvidia_drm", "zfs"]);
    }

    #[test]
    fn tool_follows_the_setting_and_the_system() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        assert_eq!(tool(&root, InitramfsSetting::Auto), None, "nothing installed");
        assert_eq!(tool(&root, InitramfsSetting::Dracut), Some(Tool::Dracut), "forced by configuration");
        std::fs::create_dir_all(t.path().join("usr/sbin")).unwrap();
        std::fs::write(t.path().join("usr/sbin/dracut"), "").unwrap();
        assert_eq!(tool(&root, InitramfsSetting::Auto), Some(Tool::Dracut));
        std::fs::write(t.path().join("usr/sbin/update-initramfs"), "").unwrap();
        assert_eq!(tool(&root, InitramfsSetting::Auto), Some(Tool::UpdateInitramfs));
        std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
        std::fs::write(t.path().join("usr/bin/mkinitcpio"), "").unwrap();
        assert_eq!(tool(&root, InitramfsSetting::Auto), None, "mkinitcpio's own hook does it");
        assert_eq!(tool(&root, InitramfsSetting::Never), None);
    }
}
