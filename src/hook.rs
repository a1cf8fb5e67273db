//! `dkms-trigger hook ...`: what every package-manager hook decides, so that a hook file is a guard
//! (the binary is there) plus one call, and the deciding is unit-tested here.

mod alpm;
mod ancestors;
mod debian;
mod rpm;

use crate::cli::PathOp;
use crate::config::Config;
use crate::exit::{exit_code, Code};
use crate::finalize;
use crate::intent::Intent;
use crate::removal;
use crate::root::{self, Root};
use crate::spool;
use crate::targets;
use crate::ui;
use crate::validate::{self, What};
use anyhow::Result;

pub use rpm::Scriptlet as RpmScriptlet;

/// Loads the configuration (printing its warnings), for the steps that need it: recording never does.
pub type Load<'a> = &'a dyn Fn() -> Result<Config>;

/// The hooks, each named after what runs it. Arguments are taken as given and checked here, so
/// that a hook can choose its exit status for bad input (a Debian kernel hook must not fail a
/// kernel package because its argument is unusable).
#[derive(clap::Subcommand, Debug)]
pub enum Hook {
    /// /etc/kernel/postinst.d (linux-image postinst, installkernel): record kernel-added, hand off.
    DebianKernelPostinst {
        #[arg(value_name = "KVER [IMAGE]", trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// /etc/kernel/header_postinst.d (linux-headers postinst): record headers-changed (--force for
    /// the same KVER configured again), hand off.
    DebianHeadersPostinst {
        #[arg(value_name = "KVER", trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// /etc/kernel/prerm.d (linux-image prerm): on removal, remove the kernel's DKMS builds now.
    DebianKernelPrerm {
        #[arg(value_name = "KVER [IMAGE]", trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// /usr/lib/dkms/common.postinst (diverted by the Debian package while it has taken dkms's
    /// autoinstall over): a dh_dkms module package is configured. Its source is checked now, so
    /// that one that cannot be used fails the package that brought it (once per source state);
    /// a usable one is recorded as module-changed and handed to the finalizer.
    DebianModulePostinst {
        #[arg(value_name = "NAME VERSION ...", trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// dkms-trigger's own `postinst triggered NAMES`: find out what changed, record it, finalize.
    DpkgTriggered {
        #[arg(value_name = "NAMES", default_value = "")]
        triggers: String,
    },
    /// kernel-install(8) plugin (45-dkms-trigger.install): `add KVER ...` records and finalizes,
    /// `remove KVER ...` removes the kernel's DKMS builds.
    KernelInstall {
        #[arg(value_name = "COMMAND KVER ...", trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// rpm scriptlets (rpm/dkms-trigger.spec): TX is rpm's process id, which names the transaction;
    /// file triggers give their paths on stdin.
    Rpm {
        #[arg(value_enum)]
        scriptlet: RpmScriptlet,
        tx: u32,
    },
    /// ALPM hooks (hooks/arch): install|upgrade|remove with pacman's paths on stdin, toolchain,
    /// finalize.
    Alpm {
        #[arg(value_name = "OPERATION", default_value = "")]
        op: String,
    },
}

/// Runs a hook. The exit status is the hook's own policy (docs/debian.md, "Hook exit status";
/// docs/rpm.md; docs/arch.md), so most failures are printed here and end in `Ok`.
pub fn run(root: &Root, hook: &Hook, load: Load) -> Result<Code> {
    match hook {
        Hook::DebianKernelPostinst { args } => debian::kernel_postinst(root, &debian::DebEnv::from_env(), args, load),
        Hook::DebianHeadersPostinst { args } => debian::headers_postinst(root, &debian::DebEnv::from_env(), args, load),
        Hook::DebianKernelPrerm { args } => debian::kernel_prerm(root, &debian::DebEnv::from_env(), args, load),
        Hook::DebianModulePostinst { args } => debian::module_postinst(root, &debian::DebEnv::from_env(), args, load),
        Hook::DpkgTriggered { triggers } => debian::triggered(root, triggers, load),
        Hook::KernelInstall { args } => rpm::kernel_install(root, args, load),
        Hook::Rpm { scriptlet, tx } => rpm::scriptlet(root, *scriptlet, *tx, &read_stdin(), load),
        Hook::Alpm { op } => alpm::run(root, op, load),
    }
}

/// `from-paths`: package file paths (rpm file triggers, pacman hooks) to intents, or to removals.
pub fn from_paths(root: &Root, input: &[u8], op: PathOp, source: Option<&str>, load: Load) -> Result<Code> {
    root::require_root("from-paths")?;
    let input = utf8_lines(input);
    match op {
        PathOp::Remove => remove_paths(root, input.lines(), load)?,
        PathOp::Install => record_paths(root, input.lines(), [].into_iter(), source)?,
        PathOp::Upgrade => record_paths(root, [].into_iter(), input.lines(), source)?,
    }
    Ok(Code::Ok)
}

/// The lines of `input` that are UTF-8, one a line: one bad line (a file name that is not UTF-8)
/// must not cost the others their record. Each line left out is reported.
fn utf8_lines(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len());
    for (n, line) in input.split(|&b| b == b'\n').enumerate() {
        match std::str::from_utf8(line) {
            Ok(l) => {
                out.push_str(l);
                out.push('\n');
            }
            Err(_) => {
                warn(format!("ignoring line {}: not UTF-8: {}", n + 1, validate::shown(&String::from_utf8_lossy(line))))
            }
        }
    }
    out
}

/// Records what `installed` (new paths) and `upgraded` (paths replaced in place: headers changed
/// there are a forced rebuild) say, in one spool write.
fn record_paths<'a>(
    root: &Root,
    installed: impl Iterator<Item = &'a str>,
    upgraded: impl Iterator<Item = &'a str>,
    source: Option<&str>,
) -> Result<()> {
    let mut intents = Vec::new();
    for (paths, upgrade) in [(installed.collect::<Vec<_>>(), false), (upgraded.collect(), true)] {
        let touched = targets::classify(root, paths, false);
        refused(&touched);
        intents.extend(touched.intents(upgrade));
    }
    if !intents.is_empty() {
        record(root, &intents, source.unwrap_or_default())?;
    }
    Ok(())
}

/// Removes now the DKMS builds of the module sources and kernels among `paths`, which are about to
/// go. A headers package going away while its kernel stays removes nothing (the builds are shown
/// stale until headers return); without the kernel's image they go. One failed removal does not
/// stop the others: each is reported, and the result is the first failure (a stop signal ends the
/// loop at once).
fn remove_paths<'a>(root: &Root, paths: impl Iterator<Item = &'a str>, load: Load) -> Result<()> {
    root::require_root("removing DKMS builds")?;
    let touched = targets::classify(root, paths, true);
    refused(&touched);
    let mut kernels = touched.kernels.clone();
    for k in touched.headers.difference(&touched.kernels) {
        if crate::inventory::kernels::has_image(root, k) {
            eprintln!(
                "dkms-trigger: the headers of {k} go, the kernel stays: its DKMS modules stay installed \
                 (shown stale until headers return)"
            );
        } else {
            kernels.insert(k.clone());
        }
    }
    if touched.modules.is_empty() && kernels.is_empty() {
        return Ok(());
    }
    let config = load()?;
    let mut failures: Vec<anyhow::Error> = Vec::new();
    let modules = touched.modules.iter().map(|(m, v)| {
        (
            format!("removing {m}/{v}"),
            Box::new(move |c: &Config| removal::remove_module(root, c, m, v).map(drop)) as Removal,
        )
    });
    let kernels = kernels.iter().map(|k| {
        (
            format!("removing the DKMS builds of {k}"),
            Box::new(move |c: &Config| removal::remove_kernel(root, c, k).map(drop)) as Removal,
        )
    });
    for (what, remove) in modules.chain(kernels) {
        if let Err(e) = remove(&config) {
            let stop = is_stop(&e);
            failures.push(e.context(what));
            if stop {
                break;
            }
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        n => {
            for e in &failures {
                eprintln!("dkms-trigger: error: {e:#}");
            }
            let code = exit_code(&failures[0]);
            Err(crate::exit::Failure::err(code, format!("{n} removals failed (each shown above)")))
        }
    }
}

/// One removal `remove_paths` runs.
type Removal<'a> = Box<dyn Fn(&Config) -> Result<()> + 'a>;

fn is_stop(e: &anyhow::Error) -> bool {
    exit_code(e) == Code::Interrupted
}

fn refused(touched: &targets::Touched) {
    for r in &touched.refused {
        ui::warn(format!("ignoring {}: not a valid kernel or module name", validate::shown(r)));
    }
}

/// Records `intents` (root only). An empty source records none.
fn record(root: &Root, intents: &[Intent], source: &str) -> Result<()> {
    root::require_root("recording")?;
    let source = source_text(source);
    spool::record(root, intents, (!source.is_empty()).then_some(source.as_str()))
}

/// A source text as `record --source` accepts it: no control characters, at most 256 bytes.
fn source_text(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    while out.len() > 256 {
        out.pop();
    }
    out
}

/// The kernel version a hook was given, or None after saying why there is nothing to do: the hook
/// then exits 0, because running it again cannot help.
fn kernel_arg(hook: &str, args: &[String], nothing: &str) -> Option<String> {
    match args.first() {
        None => {
            eprintln!("dkms-trigger: hook {hook}: no kernel version given; {nothing}");
            None
        }
        Some(k) => match validate::check(What::KernelVersion, k) {
            Ok(()) => Some(k.clone()),
            Err(why) => {
                eprintln!("dkms-trigger: error: hook {hook}: {why}; {nothing}");
                None
            }
        },
    }
}

/// Runs the finalizer for a hook that must not fail because of it: whatever it says is one warning
/// line (the finalizer's own lines name the modules); what is not done stays pending.
fn finalize_or_warn(root: &Root, load: Load, opts: &finalize::Options) {
    let outcome = load().and_then(|config| finalize::run(root, &config, opts));
    let how = match outcome {
        Ok(Code::Ok) => return,
        Ok(code) => format!("exited with status {}", code.status()),
        Err(e) => format!("failed with status {}: {e:#}", exit_code(&e).status()),
    };
    warn(format!("finalize {how}; 'dkms-trigger status' shows what failed and where the logs are"));
}

/// Removes a kernel's DKMS builds for a hook that must not fail because of it (a kernel's removal
/// is never blocked): problems are one warning line.
fn remove_kernel_or_warn(root: &Root, kver: &str, load: Load) {
    let removed = root::require_root("removing a kernel's DKMS builds")
        .and_then(|()| load())
        .and_then(|config| removal::remove_kernel(root, &config, kver));
    match removed {
        Ok(0) => {}
        Ok(n) => ui::info(format!("dkms-trigger: removed {n} DKMS build(s) for {kver}")),
        Err(e) => warn(format!("removing the DKMS builds of {kver} failed: {e:#}")),
    }
}

/// A hook's own warning, in the form the tool's messages have.
fn warn(msg: impl std::fmt::Display) {
    eprintln!("dkms-trigger: warning: {msg}");
}

/// What the package manager wrote to the hook's stdin (paths), read whole: it waits until it is
/// consumed. Unreadable input reads as empty.
fn read_stdin() -> String {
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests;
