//! The part of a plan a kernel's install hook builds ahead of its transaction's finalize, so that
//! the initramfs tool that runs right after the hook finds the modules (docs/debian.md, "One
//! initramfs generation").

use crate::inventory::ModKey;
use crate::plan::{Job, KernelSteps, Plan};
use std::collections::{BTreeMap, BTreeSet};

/// `plan` narrowed to the build jobs of `kernel` whose module is not in `unsettled` (its package is
/// not configured yet in this transaction) and whose BUILD_DEPENDS prerequisites are kept too; no
/// initramfs step (the caller's tool makes the image next). Skips, deferrals and planner failures
/// are left out: the end-of-run finalize plans them again and reports them once. Nothing else of
/// the plan is kept (no intents to keep: the caller leaves the spool alone).
pub fn restrict(plan: &Plan, kernel: &str, unsettled: &BTreeSet<ModKey>) -> Plan {
    let mut index = BTreeMap::new();
    let mut jobs: Vec<Job> = Vec::new();
    // Jobs come in dependency order within a kernel, so a prerequisite is decided before its users.
    for (i, j) in plan.jobs.iter().enumerate() {
        if j.kernel != kernel || !j.action.builds() || unsettled.contains(&(j.module.clone(), j.version.clone())) {
            continue;
        }
        let after: Option<Vec<usize>> = j.after.iter().map(|a| index.get(a).copied()).collect();
        let Some(after) = after else { continue };
        index.insert(i, jobs.len());
        jobs.push(Job { after, ..j.clone() });
    }
    let mut kernels = BTreeMap::new();
    if !jobs.is_empty() {
        let depmod = plan.kernels.get(kernel).is_none_or(|s| s.depmod);
        kernels.insert(kernel.to_string(), KernelSteps { depmod, initramfs: false });
    }
    Plan { jobs, kernels, keep: Vec::new(), notes: Vec::new(), up_to_date: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, EventClass, SkipKind};

    const K: &str = "6.12.57+deb13-amd64";
    const OTHER: &str = "6.12.48+deb13-amd64";

    fn job(module: &str, kernel: &str, action: Action, after: &[usize]) -> Job {
        Job {
            module: module.into(),
            version: "1.0".into(),
            kernel: kernel.into(),
            arch: "x86_64".into(),
            action,
            reasons: vec!["kernel added".into()],
            class: EventClass::Kernel,
            register: false,
            after: after.to_vec(),
            intents: vec![0],
            print: None,
        }
    }

    fn plan(jobs: Vec<Job>) -> Plan {
        let mut kernels = BTreeMap::new();
        for j in &jobs {
            kernels.insert(j.kernel.clone(), KernelSteps { depmod: true, initramfs: true });
        }
        Plan { jobs, kernels, ..Default::default() }
    }

    fn names(p: &Plan) -> Vec<(String, Vec<usize>)> {
        p.jobs.iter().map(|j| (j.module.clone(), j.after.clone())).collect()
    }

    fn set(list: &[&str]) -> BTreeSet<ModKey> {
        list.iter().map(|m| (m.to_string(), "1.0".to_string())).collect()
    }

    #[test]
    fn rows() {
        let skip = Action::Skip { kind: SkipKind::NoHeaders, detail: "no headers".into() };
        let fail = Action::Fail { reason: "broken".into() };
        let defer = Action::Deferred { waiting_for: vec!["x".into()] };
        // (what, plan, unsettled, the jobs kept with their remapped prerequisites)
        type Row<'a> = (&'a str, Plan, BTreeSet<ModKey>, Vec<(&'a str, Vec<usize>)>);
        let rows: Vec<Row> = vec![
            (
                "only the kernel's own builds",
                plan(vec![
                    job("a", OTHER, Action::BuildInstall, &[]),
                    job("a", K, Action::BuildInstall, &[]),
                    job("b", K, Action::Rebuild, &[]),
                ]),
                set(&[]),
                vec![("a", vec![]), ("b", vec![])],
            ),
            (
                "skips, failures and deferrals are left to the end",
                plan(vec![
                    job("s", K, skip, &[]),
                    job("f", K, fail, &[]),
                    job("d", K, defer, &[]),
                    job("a", K, Action::ReplaceOldVersion { old: "0.9".into() }, &[]),
                ]),
                set(&[]),
                vec![("a", vec![])],
            ),
            (
                "a module whose package is not configured waits",
                plan(vec![job("new", K, Action::BuildInstall, &[]), job("old", K, Action::BuildInstall, &[])]),
                set(&["new"]),
                vec![("old", vec![])],
            ),
            (
                "and so does what builds on it, transitively",
                plan(vec![
                    job("new", K, Action::BuildInstall, &[]),
                    job("user", K, Action::BuildInstall, &[0]),
                    job("user2", K, Action::BuildInstall, &[1]),
                    job("free", K, Action::BuildInstall, &[]),
                ]),
                set(&["new"]),
                vec![("free", vec![])],
            ),
            (
                "prerequisites kept are renumbered",
                plan(vec![
                    job("a", OTHER, Action::BuildInstall, &[]),
                    job("base", K, Action::BuildInstall, &[]),
                    job("user", K, Action::BuildInstall, &[1]),
                ]),
                set(&[]),
                vec![("base", vec![]), ("user", vec![0])],
            ),
            (
                "a prerequisite that does not build (failed in the plan) holds its user back",
                plan(vec![
                    job("base", K, Action::Fail { reason: "broken".into() }, &[]),
                    job("user", K, Action::BuildInstall, &[0]),
                ]),
                set(&[]),
                vec![],
            ),
        ];
        for (what, p, unsettled, want) in rows {
            let got = restrict(&p, K, &unsettled);
            let want: Vec<(String, Vec<usize>)> = want.into_iter().map(|(m, a)| (m.to_string(), a)).collect();
            assert_eq!(names(&got), want, "{what}");
            assert!(got.jobs.iter().all(|j| j.kernel == K), "{what}");
            assert!(got.keep.is_empty() && got.notes.is_empty(), "{what}");
            match got.kernels.get(K) {
                Some(s) => assert!(s.depmod && !s.initramfs, "{what}: depmod, never the initramfs"),
                None => assert!(got.jobs.is_empty(), "{what}: steps for a kernel with jobs"),
            }
            assert_eq!(got.kernels.len(), usize::from(!got.jobs.is_empty()), "{what}: only that kernel's steps");
        }
    }
}
