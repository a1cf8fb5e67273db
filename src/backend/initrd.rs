//! The initramfs tools: which one a system uses (update-initramfs on Debian, dracut on Fedora;
//! Arch's mkinitcpio regenerates images from its own pacman hook), the update command, and whether
//! an image contains a module (lsinitramfs/lsinitrd listings, parsed from their text).

use crate::config::InitramfsSetting;
use crate::paths;
use crate::root::Root;
use crate::runner::{Cmd, Log};
use std::path::Path;
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
