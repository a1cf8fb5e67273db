//! The rpm hooks: the file-trigger scriptlets of rpm/dkms-trigger.spec and the kernel-install(8)
//! plugin hooks/rpm/45-dkms-trigger.install (docs/rpm.md).
//!
//! rpm 4.18 passes no instance counts to file triggers, so what a transaction does to a path is
//! found from the paths themselves: `%transfiletriggerun` lists, at the start, every matching path
//! the transaction erases or replaces (kept in `replaced.TX`); a path `%filetriggerin` then sees
//! installed again is an upgrade or reinstall. What `%filetriggerin` installed (`installed.TX`) is
//! not removed by `%filetriggerun`, for rpm versions that list replaced paths there too. TX is
//! rpm's process id ($PPID of every scriptlet), written to `self` by dkms-trigger's own %pre and
//! %preun: while rpm installs, upgrades or erases dkms-trigger itself, its file triggers fire for
//! every matching path of the rpm database, and those runs are skipped (%posttrans rescans).

use super::{finalize_or_warn, kernel_arg, record, record_paths, remove_kernel_or_warn, remove_paths, warn, Load};
use crate::exit::Code;
use crate::finalize;
use crate::intent::Intent;
use crate::paths::{self, RPM_STATE_DIR};
use crate::root::MetadataExt;
use crate::root::{self, Root};
use anyhow::{Context, Result};
use regex::Regex;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

/// The scriptlets of rpm/dkms-trigger.spec that call `hook rpm`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scriptlet {
    /// `%filetriggerin` on /usr/src, /usr/lib/modules, /lib/modules: record what a package installed.
    Filetriggerin,
    /// `%filetriggerun` on the same trees: remove the builds of what a package erases, now.
    Filetriggerun,
    /// `%transfiletriggerun`: remember every path the transaction erases or replaces.
    Transfiletriggerun,
    /// `%transfiletriggerin`: the end of the transaction; the one finalize.
    Transfiletriggerin,
    /// `%transfiletriggerpostun`: the end of a transaction that only erased; forget it.
    Transfiletriggerpostun,
    /// `%filetriggerin` on the compiler's tree: record toolchain-changed.
    GccFiletriggerin,
}

/// Paths whose removal means a module source, a kernel or a kernel's headers go away.
const ANCHORS: &str = r"^(/usr/src/[^/]+/dkms[.]conf|(/usr)?/lib/modules/[^/]+/(modules[.]order|modules[.]builtin|vmlinuz|build|build/include|build/Makefile)|/usr/src/kernels/[^/]+/(include|Makefile))$";

fn is_anchor(path: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(ANCHORS).expect("valid regex")).is_match(path)
}

/// Runs one scriptlet's part. Always exit 0: a file trigger's failure is only a warning for rpm,
/// and every problem is printed here (`dkms-trigger status` has the rest).
pub fn scriptlet(root: &Root, which: Scriptlet, tx: u32, input: &str, load: Load) -> Result<Code> {
    let self_tx = self_transaction(root, tx);
    let done = match which {
        Scriptlet::Filetriggerin if self_tx => Ok(()),
        Scriptlet::Filetriggerin => files_in(root, tx, input),
        Scriptlet::Filetriggerun if self_tx => Ok(()),
        Scriptlet::Filetriggerun => files_out(root, tx, input, load),
        Scriptlet::Transfiletriggerun => forget(root).and_then(|()| {
            let replaced: BTreeSet<&str> = lines(input).collect();
            write_set(root, &format!("replaced.{tx}"), &replaced)
        }),
        Scriptlet::Transfiletriggerin => {
            let forgotten = forget(root);
            finalize_or_warn(root, load, &finalize::Options::default());
            forgotten
        }
        Scriptlet::Transfiletriggerpostun => forget(root),
        Scriptlet::GccFiletriggerin if self_tx => Ok(()),
        Scriptlet::GccFiletriggerin => record(root, &[Intent::ToolchainChanged { kernels: vec![] }], "rpm:gcc"),
    };
    if let Err(e) = done {
        warn(format!("rpm {which:?}: {e:#}"));
    }
    Ok(Code::Ok)
}

/// True in the scriptlets of the rpm process that installs, upgrades or erases dkms-trigger.
fn self_transaction(root: &Root, tx: u32) -> bool {
    let path = root.path(RPM_STATE_DIR).join("self");
    root.read_private(&path).ok().flatten().is_some_and(|b| String::from_utf8_lossy(&b).trim() == tx.to_string())
}

/// `%filetriggerin`: one package's new paths.
fn files_in(root: &Root, tx: u32, input: &str) -> Result<()> {
    let paths: BTreeSet<&str> = lines(input).collect();
    // Without the list, every path counts as new: recorded all the same, headers just not forced.
    let replaced_text = read_text(root, &format!("replaced.{tx}")).unwrap_or_else(|e| {
        warn(format!("{e:#}; recording every path as installed"));
        String::new()
    });
    let replaced: BTreeSet<&str> = lines(&replaced_text).collect();
    let (upgraded, installed) = split_replaced(&paths, &replaced);
    let recorded = record_paths(root, installed.into_iter(), upgraded.into_iter(), Some("rpm:filetriggerin"));
    // What this transaction installs, it does not remove (see files_out).
    let remembered = read_text(root, &format!("installed.{tx}")).and_then(|before| {
        let mut kept: BTreeSet<&str> = lines(&before).collect();
        kept.extend(paths.iter().filter(|p| is_anchor(p)));
        write_set(root, &format!("installed.{tx}"), &kept)
    });
    recorded.and(remembered)
}

/// `%filetriggerun`: one package's paths that go away; the anchors among them lose their builds now.
fn files_out(root: &Root, tx: u32, input: &str, load: Load) -> Result<()> {
    let installed_text = read_text(root, &format!("installed.{tx}"))?;
    let installed: BTreeSet<&str> = lines(&installed_text).collect();
    remove_paths(root, going(input, &installed).into_iter(), load)
}

/// Splits a package's paths into those the transaction had before (upgraded or reinstalled) and
/// new ones.
pub fn split_replaced<'a>(paths: &BTreeSet<&'a str>, replaced: &BTreeSet<&str>) -> (Vec<&'a str>, Vec<&'a str>) {
    paths.iter().partition(|p| replaced.contains(*p))
}

/// The anchors among the paths a package erases, except those this transaction installed.
pub fn going<'a>(input: &'a str, installed: &BTreeSet<&str>) -> Vec<&'a str> {
    lines(input).filter(|p| is_anchor(p) && !installed.contains(p)).collect()
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.is_empty())
}

/// A file of RPM_STATE_DIR; missing reads as empty.
fn read_text(root: &Root, name: &str) -> Result<String> {
    let bytes = root.read_private(root.path(RPM_STATE_DIR).join(name))?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default())
}

fn write_set(root: &Root, name: &str, set: &BTreeSet<&str>) -> Result<()> {
    root::require_root("rpm hook")?;
    let dir = root.private_dir(RPM_STATE_DIR)?;
    let text: String = set.iter().map(|p| format!("{p}\n")).collect();
    root.write_atomic(&dir, name, text.as_bytes())
}

/// Deletes every transaction's `replaced.*` and `installed.*`: a new transaction starts, or one ended.
fn forget(root: &Root) -> Result<()> {
    let dir = root.path(RPM_STATE_DIR);
    let Ok(names) = root.list(&dir) else { return Ok(()) };
    for name in names {
        let name = name.to_string_lossy();
        if name.starts_with("replaced.") || name.starts_with("installed.") {
            let p = dir.join(name.as_ref());
            root.remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

/// Whether kernel-install runs an initramfs plugin (dracut's, 50-dracut.install on Fedora) after
/// ours: plugins run in lexical order of their names over both directories, and a name in
/// /etc/kernel/install.d replaces the same name in /usr/lib (a link to /dev/null disables it).
pub fn initramfs_plugin_after_ours(root: &Root) -> bool {
    let [etc, lib] = paths::KERNEL_INSTALL_DIRS;
    let names: BTreeSet<String> = [etc, lib]
        .iter()
        .flat_map(|d| root.list(d).unwrap_or_default())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.as_str() > paths::OUR_KERNEL_INSTALL_PLUGIN && n.ends_with(".install") && n.contains("dracut"))
        .collect();
    names.iter().any(|n| {
        let masked = root.read_link(Path::new(etc).join(n)).is_ok_and(|t| t == Path::new("/dev/null"));
        let file = [etc, lib].iter().map(|d| Path::new(d).join(n)).find(|p| root.exists(p));
        !masked && file.is_some_and(|p| root.stat(p).is_ok_and(|m| m.mode() & 0o111 != 0))
    })
}

/// `hook kernel-install COMMAND KVER [ENTRY_DIR [IMAGE [INITRD...]]]`. `add` records the kernel and
/// finalizes, so that its DKMS modules are built and installed before 50-dracut.install makes its
/// initramfs (plugins run in lexical order); `remove` removes its builds now. Always exit 0: 77
/// would make kernel-install skip every later plugin (dracut included), and any other failure would
/// fail kernel-install, and the kernel package, because of a module.
pub fn kernel_install(root: &Root, args: &[String], load: Load) -> Result<Code> {
    let (Some(command), rest) = (args.first(), args.get(1..).unwrap_or_default()) else { return Ok(Code::Ok) };
    if rest.is_empty() {
        return Ok(Code::Ok);
    }
    match command.as_str() {
        "add" => {
            let Some(kver) = kernel_arg("kernel-install", rest, "nothing recorded") else { return Ok(Code::Ok) };
            if let Err(e) = record(root, &[Intent::KernelAdded { kernel: kver.clone() }], "kernel-install:add") {
                warn(format!("could not record kernel {kver}: {e:#}"));
            }
            // The initramfs plugin that runs next makes the image, with the modules built here:
            // making it here too would make it twice.
            let follows = initramfs_plugin_after_ours(root).then(|| kver.clone());
            finalize_or_warn(
                root,
                load,
                &finalize::Options { initramfs_follows: follows.into_iter().collect(), ..Default::default() },
            );
        }
        "remove" => {
            let Some(kver) = kernel_arg("kernel-install", rest, "nothing removed") else { return Ok(Code::Ok) };
            remove_kernel_or_warn(root, &kver, load);
        }
        _ => {}
    }
    Ok(Code::Ok)
}
