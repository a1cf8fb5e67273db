//! Human and JSON renderings of what the tool knows: the pending spool (and, later, plan and status).

use crate::clock;
use crate::config::Config;
use crate::exit::Code;
use crate::intent::Intent;
use crate::inventory;
use crate::planner;
use crate::root::Root;
use crate::spool::{self, SpoolFile};
use crate::state::State;
use crate::status;
use crate::ui;
use anyhow::Result;
use serde_json::json;

/// Version of the JSON documents printed by `--json` (docs/json.md).
pub const JSON_VERSION: u32 = 1;

/// `dkms-trigger spool [--json]`.
pub fn print_spool(root: &Root, as_json: bool) -> Result<Code> {
    let (spool, problem) = spool::read(root)?;
    let path = spool::spool_path(root);
    let problem = problem.map(|p| {
        format!(
            "{} is unreadable ({p}); the next record or finalize moves it aside and schedules a rescan",
            path.display()
        )
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&spool_json(&spool, problem.as_deref()))?);
        return Ok(Code::Ok);
    }
    if let Some(p) = &problem {
        ui::warn(p);
    }
    println!("{}", spool_text(&spool));
    Ok(Code::Ok)
}

/// The pending intents for people: one line each, oldest first.
pub fn spool_text(spool: &SpoolFile) -> String {
    if spool.entries.is_empty() {
        return "no pending intents".into();
    }
    let mut out = format!("{} pending intent(s):", spool.entries.len());
    for e in &spool.entries {
        let what = match e.intent() {
            Ok(i) => i.to_string(),
            Err(why) => format!("[not understood, kept: {why}] {}", toml::Value::Table(e.fields.clone())),
        };
        let times = if e.count > 1 {
            format!("x{} first {} last {}", e.count, clock::human(e.first_ms), clock::human(e.last_ms))
        } else {
            clock::human(e.last_ms)
        };
        let from = if e.sources.is_empty() { String::new() } else { format!(" from {}", e.sources.join(", ")) };
        out.push_str(&format!("\n  {what}  ({times}{from})"));
    }
    out
}

/// The pending intents as JSON (docs/json.md, "spool").
pub fn spool_json(spool: &SpoolFile, problem: Option<&str>) -> serde_json::Value {
    let intents: Vec<serde_json::Value> = spool
        .entries
        .iter()
        .map(|e| {
            let args: serde_json::Map<String, serde_json::Value> = e
                .fields
                .iter()
                .filter(|(k, _)| k.as_str() != "kind")
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(serde_json::Value::Null)))
                .collect();
            json!({
                "kind": e.kind(),
                "args": args,
                "understood": e.intent().is_ok(),
                "problem": e.intent().err(),
                "first": clock::rfc3339(e.first_ms),
                "last": clock::rfc3339(e.last_ms),
                "count": e.count,
                "seq": e.seq,
                "sources": e.sources,
            })
        })
        .collect();
    json!({ "version": JSON_VERSION, "problem": problem, "intents": intents })
}

/// `dkms-trigger plan [--rescan] [--json]`: what a finalize would do now. Read-only.
pub fn print_plan(root: &Root, config: &Config, rescan: bool, retry_failed: bool, as_json: bool) -> Result<Code> {
    let (spool, problem) = spool::read(root)?;
    if let Some(p) = problem {
        ui::warn(format!("the spool is unreadable ({p}); the next finalize moves it aside and rescans"));
    }
    let mut intents: Vec<Intent> = spool.intents().map(|(_, i)| i).collect();
    if rescan {
        intents.push(Intent::Rescan);
    }
    let state = State::load(root, false)?;
    let inv = inventory::scan(root, config)?;
    let plan =
        planner::plan(&planner::Input { intents: &intents, inventory: &inv, state: &state, config, retry_failed });
    if as_json {
        let doc = json!({
            "version": JSON_VERSION,
            "intents": intents.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "plan": plan,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        if intents.is_empty() {
            println!("no pending intents (use --rescan to plan a full reconcile)");
        }
        print!("{plan}");
    }
    Ok(Code::Ok)
}

/// `dkms-trigger status [--json]`: the module x kernel table. Read-only.
pub fn print_status(root: &Root, config: &Config, as_json: bool) -> Result<Code> {
    let (spool, _) = spool::read(root)?;
    let intents: Vec<Intent> = spool.intents().map(|(_, i)| i).collect();
    let state = State::load(root, false)?;
    let inv = inventory::scan(root, config)?;
    let pending = planner::plan(&planner::Input {
        intents: &intents,
        inventory: &inv,
        state: &state,
        config,
        retry_failed: false,
    });
    let table = status::table(&inv, &state, &pending);
    if as_json {
        let doc =
            json!({ "version": JSON_VERSION, "kernels": table.kernels, "modules": table.rows, "notes": pending.notes });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{table}");
        if !intents.is_empty() {
            println!("\n{} pending intent(s): run `dkms-trigger finalize` (or see `dkms-trigger plan`)", intents.len());
        }
    }
    Ok(Code::Ok)
}
