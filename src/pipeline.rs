//! The one way from the spool to a plan: pending intents -> state -> inventory -> plan. `plan`,
//! `status`, `finalize --dry-run` and every round of `finalize` go through here, so they cannot
//! disagree about what a finalize would do.

use crate::config::Config;
use crate::intent::Intent;
use crate::inventory::{self, Inventory};
use crate::plan::Plan;
use crate::planner;
use crate::root::Root;
use crate::spool;
use crate::state::{Outcome, State};
use crate::statefile;
use crate::ui;
use anyhow::Result;

/// Everything a plan was made from, and the plan.
pub struct Prepared {
    pub intents: Vec<Intent>,
    pub state: State,
    pub inventory: Inventory,
    pub plan: Plan,
}

/// Scans the system and plans `intents` against `state`; `revisit` also plans what the state asks
/// for (interrupted pairs, failures to retry: `planner::Input::revisit`).
pub fn prepare(
    root: &Root,
    config: &Config,
    intents: Vec<Intent>,
    state: State,
    retry_failed: bool,
    revisit: bool,
) -> Result<Prepared> {
    let inventory = inventory::scan(root, config)?;
    let mut plan = planner::plan(&planner::Input {
        intents: &intents,
        inventory: &inventory,
        state: &state,
        config,
        retry_failed,
        revisit,
    });
    // What the scan noticed (headers or files root may not trust, leftovers) is shown with the plan.
    plan.notes.extend(inventory.notes.iter().cloned());
    Ok(Prepared { intents, state, inventory, plan })
}

/// Whether the state asks a finalize to run even without pending intents: a pair interrupted, a
/// failure that was not the module's, or with `retry_failed` any failure.
pub fn state_wants_work(state: &State, retry_failed: bool) -> bool {
    state.pairs.values().any(|p| match p.result {
        Outcome::InProgress => true,
        Outcome::Failed => retry_failed || p.transient,
        _ => false,
    })
}

/// What a finalize would do now, read without locking or changing anything (`plan`, `status`,
/// `finalize --dry-run`): the pending intents (plus a rescan when asked), the stored state.
pub fn preview(root: &Root, config: &Config, rescan: bool, retry_failed: bool) -> Result<Prepared> {
    let (s, problem) = spool::read(root)?;
    if let Some(p) = problem {
        ui::warn(format!("the spool is unreadable ({p}); the next finalize moves it aside and rescans"));
    }
    let mut intents: Vec<Intent> = s.intents().map(|(_, i)| i).collect();
    if rescan {
        intents.push(Intent::Rescan);
    }
    prepare(root, config, intents, statefile::read(root)?, retry_failed, true)
}
