//! BUILD_DEPENDS in the plan: dependencies pulled in as jobs, unavailable ones failing their
//! dependents, unknown ones deferring them, cycles failed by name, and the jobs put in an order
//! where every dependency comes first.

use super::{Key, Mode, Planner, Want};
use crate::intent::Intent;
use crate::plan::{Action, EventClass, Job, SkipKind};
use crate::state::Outcome;
use crate::version;
use std::collections::{BTreeMap, BTreeSet};

impl Planner<'_> {
    /// The BUILD_DEPENDS of a pair as its dkms.conf says for that kernel.
    fn depends(&self, j: &Job) -> Vec<String> {
        self.inv
            .modules
            .get(&(j.module.clone(), j.version.clone()))
            .and_then(|m| m.conf_for(&j.kernel))
            .and_then(|c| c.ok())
            .map(|c| c.build_depends.clone())
            .unwrap_or_default()
    }

    /// Adds jobs for AUTOINSTALL dependencies that are needed on a kernel and not there yet.
    pub(super) fn pull_in_dependencies(
        &mut self,
        jobs: &mut BTreeMap<Key, Job>,
        wants: &mut BTreeMap<Key, Want>,
        up_to_date: &mut usize,
    ) {
        let mut queue: Vec<Key> = jobs.iter().filter(|(_, j)| j.action.builds()).map(|(k, _)| k.clone()).collect();
        while let Some(key) = queue.pop() {
            let Some(j) = jobs.get(&key) else { continue };
            let (class, intents, retry, module) =
                (j.class, j.intents.clone(), wants.get(&key).is_some_and(|w| w.retry), j.module.clone());
            for d in self.depends(j) {
                let dkey = (key.0.clone(), d.clone());
                if jobs.contains_key(&dkey) || wants.contains_key(&dkey) || d == module {
                    continue;
                }
                if self.inv.installed_version(&d, &key.0).is_some() {
                    continue;
                }
                let Some(cand) = self.candidate(&d) else { continue };
                if cand.conf.is_none() || !self.autoinstall(cand) {
                    continue; // reported as unavailable by `propagate`
                }
                let w = Want {
                    version: cand.version.clone(),
                    explicit: false,
                    mode: Mode::Ensure,
                    class,
                    reasons: vec![format!("needed by {module} (BUILD_DEPENDS)")],
                    intents: intents.clone(),
                    retry,
                };
                wants.insert(dkey.clone(), w.clone());
                match self.resolve(&dkey.0, &d, &w) {
                    Some(dj) => {
                        if dj.action.builds() {
                            queue.push(dkey.clone());
                        }
                        jobs.insert(dkey, dj);
                    }
                    None => *up_to_date += 1,
                }
            }
        }
    }

    /// Why dependency `d` of a job on `kernel` cannot be had, or that it must be waited for.
    /// `Ok(Some(key))`: satisfied by a job; `Ok(None)`: satisfied by what is installed.
    fn dependency(&self, jobs: &BTreeMap<Key, Job>, kernel: &str, d: &str) -> Result<Option<Key>, DepProblem> {
        let dkey = (kernel.to_string(), d.to_string());
        if let Some(dj) = jobs.get(&dkey) {
            return match &dj.action {
                a if a.builds() => Ok(Some(dkey)),
                Action::Skip { kind: SkipKind::Weak, .. } => Ok(None),
                Action::Skip { kind, detail } => {
                    Err(DepProblem::Unavailable(format!("{}: {detail}", crate::plan::skip_word(*kind))))
                }
                Action::Deferred { waiting_for } => Err(DepProblem::Waiting(waiting_for.clone())),
                Action::Fail { reason } => Err(DepProblem::Unavailable(reason.clone())),
                _ => unreachable!("builds() covers the rest"),
            };
        }
        if self.inv.installed_version(d, kernel).is_some() {
            return Ok(None);
        }
        let Some(versions) = self.by_name.get(d) else { return Err(DepProblem::Waiting(vec![d.to_string()])) };
        if versions.iter().any(|m| m.weak.contains_key(kernel)) {
            return Ok(None);
        }
        let Some(cand) = self.candidate(d) else {
            return Err(DepProblem::Unavailable("registered in DKMS but its source is gone".into()));
        };
        if let Some(why) = &cand.broken {
            return Err(DepProblem::Unavailable(format!("broken: {why}")));
        }
        if cand.conf.is_none() {
            return Err(DepProblem::Unavailable("dkms.conf was not evaluated".into()));
        }
        if !self.autoinstall(cand) {
            return Err(DepProblem::Unavailable(format!("not installed for {kernel} and not AUTOINSTALL")));
        }
        if let Some(ps) = self.input.state.get(
            d,
            &cand.version,
            kernel,
            &self.inv.kernels.get(kernel).map(|k| k.arch.clone()).unwrap_or_default(),
        ) {
            if ps.result == Outcome::Failed {
                return Err(DepProblem::Unavailable(format!(
                    "failed before: {}",
                    ps.reason.clone().unwrap_or_default()
                )));
            }
        }
        Err(DepProblem::Unavailable(format!("not installed for {kernel}")))
    }

    /// Fails every member of a BUILD_DEPENDS cycle among the jobs, naming the cycle.
    pub(super) fn fail_cycles(&self, jobs: &mut BTreeMap<Key, Job>) {
        let keys: Vec<Key> = jobs.iter().filter(|(_, j)| j.action.builds()).map(|(k, _)| k.clone()).collect();
        let edges: BTreeMap<Key, Vec<Key>> = keys
            .iter()
            .map(|k| {
                let deps = self
                    .depends(&jobs[k])
                    .into_iter()
                    .map(|d| (k.0.clone(), d))
                    .filter(|dk| keys.contains(dk))
                    .collect();
                (k.clone(), deps)
            })
            .collect();
        let mut failed: BTreeMap<Key, String> = BTreeMap::new();
        for start in &keys {
            // Depth-first search for a path back to `start`.
            let mut stack: Vec<(Key, Vec<Key>)> = vec![(start.clone(), vec![start.clone()])];
            let mut seen: BTreeSet<Key> = BTreeSet::new();
            while let Some((node, path)) = stack.pop() {
                for next in &edges[&node] {
                    if next == start {
                        let names: Vec<&str> = path.iter().map(|k| k.1.as_str()).chain([start.1.as_str()]).collect();
                        failed
                            .entry(start.clone())
                            .or_insert_with(|| format!("BUILD_DEPENDS cycle: {}", names.join(" -> ")));
                    } else if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
        for (k, reason) in failed {
            if let Some(j) = jobs.get_mut(&k) {
                j.action = Action::Fail { reason };
            }
        }
    }

    /// Dependents of unavailable dependencies fail; dependents of unknown ones are deferred;
    /// repeated until nothing changes (it travels along dependency chains).
    pub(super) fn propagate(&self, jobs: &mut BTreeMap<Key, Job>) {
        loop {
            let mut changes: Vec<(Key, Action)> = Vec::new();
            for (key, j) in jobs.iter().filter(|(_, j)| j.action.builds()) {
                let mut waiting: Vec<String> = Vec::new();
                let mut failure: Option<String> = None;
                for d in self.depends(j) {
                    match self.dependency(jobs, &key.0, &d) {
                        Ok(_) => {}
                        Err(DepProblem::Waiting(w)) => waiting.extend(w),
                        Err(DepProblem::Unavailable(why)) => {
                            failure.get_or_insert(format!("dependency {d} unavailable: {why}"));
                        }
                    }
                }
                if let Some(reason) = failure {
                    changes.push((key.clone(), Action::Fail { reason }));
                } else if !waiting.is_empty() {
                    waiting.sort();
                    waiting.dedup();
                    changes.push((key.clone(), Action::Deferred { waiting_for: waiting }));
                }
            }
            if changes.is_empty() {
                return;
            }
            for (k, a) in changes {
                if let Some(j) = jobs.get_mut(&k) {
                    j.action = a;
                }
            }
        }
    }

    /// Kernels in version order; within a kernel, dependencies first, then by name.
    pub(super) fn order(&self, jobs: BTreeMap<Key, Job>) -> Vec<Job> {
        let mut kernels: Vec<String> = jobs.keys().map(|k| k.0.clone()).collect();
        kernels.dedup();
        kernels.sort_by(|a, b| version::cmp(a, b));
        let mut out: Vec<Job> = Vec::new();
        let mut index: BTreeMap<Key, usize> = BTreeMap::new();
        let mut jobs = jobs;
        for k in kernels {
            let mut pending: BTreeMap<String, Job> = BTreeMap::new();
            let keys: Vec<Key> = jobs.keys().filter(|key| key.0 == k).cloned().collect();
            for key in keys {
                let j = jobs.remove(&key).expect("key listed");
                pending.insert(key.1, j);
            }
            while !pending.is_empty() {
                // The first (by name) job whose in-plan dependencies are all placed; cycles were
                // failed already, so only failed/deferred jobs can still wait on each other.
                let ready = pending
                    .iter()
                    .find(|(_, j)| self.depends(j).iter().all(|d| !pending.contains_key(d) || d == &j.module))
                    .map(|(n, _)| n.clone())
                    .unwrap_or_else(|| pending.keys().next().cloned().expect("non-empty"));
                let mut j = pending.remove(&ready).expect("ready is pending");
                if j.action.builds() {
                    j.after =
                        self.depends(&j).iter().filter_map(|d| index.get(&(k.clone(), d.clone())).copied()).collect();
                }
                index.insert((k.clone(), ready), out.len());
                out.push(j);
            }
        }
        out
    }

    /// The intents to leave pending: one `Deferred` intent per deferred pair, carrying the strength
    /// and policy of what wanted it, so that re-running it later redoes nothing else.
    pub(super) fn keep(&self, jobs: &[Job], wants: &BTreeMap<Key, Want>) -> Vec<Intent> {
        jobs.iter()
            .filter(|j| matches!(j.action, Action::Deferred { .. }))
            .map(|j| Intent::Deferred {
                module: j.module.clone(),
                version: j.version.clone(),
                kernel: j.kernel.clone(),
                force: wants.get(&(j.kernel.clone(), j.module.clone())).is_some_and(|w| w.mode == Mode::Force),
                module_event: j.class == EventClass::Module,
            })
            .collect()
    }
}

enum DepProblem {
    /// Not known to DKMS at all: wait for it.
    Waiting(Vec<String>),
    /// Known but cannot be had: the dependent fails.
    Unavailable(String),
}
