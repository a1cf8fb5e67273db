//! Human and JSON renderings of what the tool knows: the pending spool, the plan and the status.

use crate::clock;
use crate::config::Config;
use crate::exit::Code;
use crate::pipeline;
use crate::root::Root;
use crate::secureboot;
use crate::spool::{self, SpoolFile};
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
    let p = pipeline::preview(root, config, rescan, retry_failed)?;
    if as_json {
        let doc = json!({
            "version": JSON_VERSION,
            "intents": p.intents.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "plan": p.plan,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        if p.intents.is_empty() {
            println!("no pending intents (use --rescan to plan a full reconcile)");
        }
        print!("{}", p.plan);
    }
    Ok(Code::Ok)
}

/// `dkms-trigger status [--json]`: the module x kernel table. Read-only.
pub fn print_status(root: &Root, config: &Config, as_json: bool) -> Result<Code> {
    let p = pipeline::preview(root, config, false, false)?;
    let sb = secureboot::report(root, p.inventory.certificate.clone());
    let sigs = secureboot::signatures(root, &secureboot::installed_builds(&p.inventory), &sb.certificate);
    let table = status::table(&p.inventory, &p.state, &p.plan).with_signatures(sigs);
    if as_json {
        let doc = json!({
            "version": JSON_VERSION,
            "kernels": table.kernels,
            "modules": table.rows,
            "notes": p.plan.notes,
            "secure_boot": sb,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{table}");
        print!("\n{}", table.secure_boot_text(&sb));
        if !p.intents.is_empty() {
            println!(
                "\n{} pending intent(s): run `dkms-trigger finalize` (or see `dkms-trigger plan`)",
                p.intents.len()
            );
        }
    }
    Ok(Code::Ok)
}
