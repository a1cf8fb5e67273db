//! The ALPM hooks (hooks/arch/*.hook through hooks/arch/scripts/dkms-trigger-alpm), run by pacman
//! chrooted into its root (docs/arch.md).

use super::{finalize_or_warn, read_stdin, record, record_paths, remove_paths, warn, Load};
use crate::exit::Code;
use crate::intent::Intent;
use crate::root::Root;
use anyhow::Result;

/// What a hook file asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Paths installed (NeedsTargets on stdin): record what they are.
    Install,
    /// Paths upgraded or reinstalled: as install, and headers changed in place are a forced rebuild.
    Upgrade,
    /// Paths about to be removed (PreTransaction): remove those DKMS builds now.
    Remove,
    /// The compiler was upgraded (scenario S2).
    Toolchain,
    /// The one finalizer of the transaction.
    Finalize,
}

impl Op {
    pub fn parse(op: &str) -> Option<Op> {
        Some(match op {
            "install" => Op::Install,
            "upgrade" => Op::Upgrade,
            "remove" => Op::Remove,
            "toolchain" => Op::Toolchain,
            "finalize" => Op::Finalize,
            _ => return None,
        })
    }

    /// pacman writes the matched paths to the hooks with NeedsTargets only; the others have no
    /// input to read (and stdin may be a terminal).
    pub fn reads_targets(self) -> bool {
        matches!(self, Op::Install | Op::Upgrade | Op::Remove)
    }
}

/// Runs `hook alpm OP`. Always exit 0 (pacman only reports a hook's failure, and nothing here may
/// stop a transaction): problems are printed; `dkms-trigger status` lists failed modules.
pub fn run(root: &Root, op: &str, load: Load) -> Result<Code> {
    let Some(op) = Op::parse(op) else {
        warn(format!(
            "hook alpm: unknown operation {}; expected install|upgrade|remove|toolchain|finalize",
            crate::validate::shown(op)
        ));
        return Ok(Code::Ok);
    };
    let input = if op.reads_targets() { read_stdin() } else { String::new() };
    let source = format!("pacman:{}", format!("{op:?}").to_lowercase());
    let done = match op {
        Op::Install => record_paths(root, input.lines(), [].into_iter(), Some(&source)),
        Op::Upgrade => record_paths(root, [].into_iter(), input.lines(), Some(&source)),
        Op::Remove => remove_paths(root, input.lines(), load),
        Op::Toolchain => record(root, &[Intent::ToolchainChanged { kernels: vec![] }], "pacman:gcc"),
        Op::Finalize => {
            finalize_or_warn(root, load, &crate::finalize::Options::default());
            Ok(())
        }
    };
    if let Err(e) = done {
        warn(format!("hook alpm {}: {e:#}", format!("{op:?}").to_lowercase()));
    }
    Ok(Code::Ok)
}
