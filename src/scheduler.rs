//! The scheduler: which build job starts next, as a pure state machine (no I/O, no threads), so
//! that every ordering rule has a table test. The executor asks `decide`, runs what it is told, and
//! reports back with `finished` and `post_finished`.
//!
//! Rules: jobs of one module run one after the other (dkms shares `M/V/build` between kernels);
//! a job starts only after the jobs it is `after` (BUILD_DEPENDS on its kernel) succeeded, and
//! fails without running when one of them failed; at most `parallel` jobs and post-steps run at
//! once; without a signing key the first build runs alone (it generates the key, and dkms takes
//! no lock); a kernel's post-step (depmod, initramfs) is ready when its last job finished; `make
//! -j` is the CPUs shared among the jobs left (unless configured); among ready jobs, those others
//! wait for come first, then modules with many kernels left, then the biggest sources, so that
//! the last jobs, which run with cores to spare, are short ones.

use std::collections::{BTreeMap, BTreeSet};

/// One job of the plan as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub module: String,
    pub kernel: String,
    /// Indices of the units that must succeed first.
    pub after: Vec<usize>,
    /// Relative cost (the source tree's size): bigger starts first among equals.
    pub weight: u64,
    /// False for jobs that run nothing (skips, deferrals, planned failures): never scheduled.
    pub builds: bool,
}

/// Limits of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Jobs and post-steps running at once (at least 1).
    pub parallel: usize,
    /// CPUs to share among the running builds' `make -j`.
    pub cpus: usize,
    /// A fixed `make -j` (config `make_jobs`), or 0 to share `cpus`.
    pub make_jobs: u32,
    /// No signing key yet: the first build runs alone.
    pub key_missing: bool,
}

/// What the executor should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Run job `job` with `make -j make_jobs`.
    Start { job: usize, make_jobs: u32 },
    /// Job `job` fails without running: `dependency` (a unit index) failed.
    Blocked { job: usize, dependency: usize },
    /// Every job of `kernel` has finished: run its post-step.
    Post { kernel: String },
    /// Nothing can start now; wait for something running to finish.
    Wait,
    /// Everything is finished.
    Done,
    /// Jobs are left that can never start (a dependency outside the plan's order): a planner bug.
    Stuck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    Finished(bool),
}

/// The scheduler's state.
#[derive(Debug, Clone)]
pub struct Scheduler {
    units: Vec<Unit>,
    status: BTreeMap<usize, Status>,
    busy_modules: BTreeSet<String>,
    /// Kernels with build jobs, and whether their post-step was handed out.
    posts: BTreeMap<String, bool>,
    running: usize,
    limits: Limits,
    key_gate: bool,
    /// How many units (transitively) wait for each unit.
    dependents: Vec<usize>,
}

impl Scheduler {
    pub fn new(units: Vec<Unit>, limits: Limits) -> Scheduler {
        let status: BTreeMap<usize, Status> =
            units.iter().enumerate().filter(|(_, u)| u.builds).map(|(i, _)| (i, Status::Waiting)).collect();
        let posts = units.iter().filter(|u| u.builds).map(|u| (u.kernel.clone(), false)).collect();
        let dependents = dependents(&units);
        Scheduler {
            units,
            status,
            busy_modules: BTreeSet::new(),
            posts,
            running: 0,
            key_gate: limits.key_missing,
            limits,
            dependents,
        }
    }

    /// The next thing to do; call again until `Wait`, `Done` or `Stuck`.
    pub fn decide(&mut self) -> Next {
        if self.running < self.limits.parallel.max(1) {
            if let Some((job, dependency)) = self.blocked() {
                self.status.insert(job, Status::Finished(false));
                return Next::Blocked { job, dependency };
            }
            if let Some(kernel) = self.ready_post() {
                self.posts.insert(kernel.clone(), true);
                self.running += 1;
                return Next::Post { kernel };
            }
            if !(self.key_gate && self.running > 0) {
                if let Some(job) = self.ready_job() {
                    self.status.insert(job, Status::Running);
                    self.busy_modules.insert(self.units[job].module.clone());
                    self.running += 1;
                    return Next::Start { job, make_jobs: self.make_jobs() };
                }
            }
        }
        if self.running > 0 {
            return Next::Wait;
        }
        let waiting = self.status.values().any(|s| *s == Status::Waiting);
        let posts_left = self.posts.values().any(|started| !started);
        match (waiting, posts_left) {
            (false, false) => Next::Done,
            _ => Next::Stuck,
        }
    }

    /// A started job ended.
    pub fn finished(&mut self, job: usize, ok: bool) {
        self.status.insert(job, Status::Finished(ok));
        self.busy_modules.remove(&self.units[job].module);
        self.running -= 1;
        self.key_gate = false;
    }

    /// A handed-out post-step ended (or was found unnecessary).
    pub fn post_finished(&mut self, _kernel: &str) {
        self.running -= 1;
    }

    /// Build jobs not finished yet, running or waiting (for progress counters).
    pub fn left(&self) -> usize {
        self.status.values().filter(|s| matches!(s, Status::Waiting | Status::Running)).count()
    }

    /// A waiting job with a failed prerequisite, and that prerequisite.
    fn blocked(&self) -> Option<(usize, usize)> {
        self.waiting().find_map(|i| {
            self.units[i].after.iter().find(|a| self.status.get(a) == Some(&Status::Finished(false))).map(|a| (i, *a))
        })
    }

    fn waiting(&self) -> impl Iterator<Item = usize> + '_ {
        self.status.iter().filter(|(_, s)| **s == Status::Waiting).map(|(i, _)| *i)
    }

    /// A kernel whose build jobs have all finished and whose post-step has not been handed out.
    fn ready_post(&self) -> Option<String> {
        self.posts
            .iter()
            .filter(|(_, started)| !**started)
            .map(|(k, _)| k)
            .find(|k| {
                self.status
                    .iter()
                    .filter(|(i, _)| &self.units[**i].kernel == *k)
                    .all(|(_, s)| matches!(s, Status::Finished(_)))
            })
            .cloned()
    }

    /// The best ready job: its module idle, its prerequisites succeeded.
    fn ready_job(&self) -> Option<usize> {
        self.waiting()
            .filter(|i| {
                let u = &self.units[*i];
                !self.busy_modules.contains(&u.module)
                    && u.after.iter().all(|a| self.status.get(a) == Some(&Status::Finished(true)))
            })
            .max_by_key(|i| {
                let u = &self.units[*i];
                let left = self.waiting().filter(|x| self.units[*x].module == u.module).count();
                (self.dependents[*i] * 2 + left, u.weight, std::cmp::Reverse(*i))
            })
    }

    /// `make -j` for a job starting now: the configured value, or the CPUs shared among the jobs
    /// that can still run at once.
    fn make_jobs(&self) -> u32 {
        match self.limits.make_jobs {
            0 => {
                let sharing = self.left().min(self.limits.parallel).max(1);
                (self.limits.cpus / sharing).max(1) as u32
            }
            n => n,
        }
    }
}

/// How many units (transitively) wait for each unit.
fn dependents(units: &[Unit]) -> Vec<usize> {
    let mut count = vec![0usize; units.len()];
    for u in units {
        let mut stack: Vec<usize> = u.after.clone();
        let mut seen = BTreeSet::new();
        while let Some(a) = stack.pop() {
            if seen.insert(a) {
                count[a] += 1;
                stack.extend(units[a].after.iter().copied());
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `module@kernel`, optionally `:weight` and `<dep,dep` (unit indices); a leading `-` marks a
    /// job that runs nothing.
    fn units(spec: &[&str]) -> Vec<Unit> {
        spec.iter()
            .map(|s| {
                let (s, builds) = match s.strip_prefix('-') {
                    Some(rest) => (rest, false),
                    None => (*s, true),
                };
                let (s, after) = match s.split_once('<') {
                    Some((a, deps)) => (a, deps.split(',').map(|d| d.parse().unwrap()).collect()),
                    None => (s, Vec::new()),
                };
                let (s, weight) = match s.split_once(':') {
                    Some((a, w)) => (a, w.parse().unwrap()),
                    None => (s, 0),
                };
                let (module, kernel) = s.split_once('@').unwrap();
                Unit { module: module.into(), kernel: kernel.into(), after, weight, builds }
            })
            .collect()
    }

    fn limits(parallel: usize, cpus: usize, make_jobs: u32, key_missing: bool) -> Limits {
        Limits { parallel, cpus, make_jobs, key_missing }
    }

    /// Runs the scheduler to the end: the oldest running job finishes first, failing when its
    /// index is in `fail`; post-steps finish at once. Returns the trace.
    fn simulate(spec: &[&str], l: Limits, fail: &[usize]) -> Vec<String> {
        let u = units(spec);
        let name = |i: usize| format!("{}@{}", u[i].module, u[i].kernel);
        let mut s = Scheduler::new(u.clone(), l);
        let mut running: Vec<usize> = Vec::new();
        let mut trace = Vec::new();
        for _ in 0..1000 {
            match s.decide() {
                Next::Start { job, make_jobs } => {
                    trace.push(format!("start {} -j{make_jobs}", name(job)));
                    running.push(job);
                }
                Next::Blocked { job, dependency } => {
                    trace.push(format!("blocked {} by {}", name(job), name(dependency)))
                }
                Next::Post { kernel } => {
                    trace.push(format!("post {kernel}"));
                    s.post_finished(&kernel);
                }
                Next::Wait => {
                    let job = running.remove(0);
                    let ok = !fail.contains(&job);
                    trace.push(format!("{} {}", if ok { "ok" } else { "FAIL" }, name(job)));
                    s.finished(job, ok);
                }
                Next::Done => {
                    trace.push("done".into());
                    return trace;
                }
                Next::Stuck => {
                    trace.push("stuck".into());
                    return trace;
                }
            }
        }
        panic!("no end: {trace:?}");
    }

    #[test]
    fn rule_table() {
        type Row = (&'static str, &'static [&'static str], Limits, &'static [usize], &'static [&'static str]);
        let rows: &[Row] = &[
            (
                "one module is serialised across kernels, posts follow each kernel's last job",
                &["a@k1", "a@k2"],
                limits(4, 4, 0, false),
                &[],
                &["start a@k1 -j2", "ok a@k1", "post k1", "start a@k2 -j4", "ok a@k2", "post k2", "done"],
            ),
            (
                "different modules run in parallel and share the CPUs",
                &["a@k1", "b@k1"],
                limits(4, 4, 0, false),
                &[],
                &["start a@k1 -j2", "start b@k1 -j2", "ok a@k1", "ok b@k1", "post k1", "done"],
            ),
            (
                "a configured make_jobs is used as it is",
                &["a@k1", "b@k1"],
                limits(4, 4, 3, false),
                &[],
                &["start a@k1 -j3", "start b@k1 -j3", "ok a@k1", "ok b@k1", "post k1", "done"],
            ),
            (
                "parallel limits how many run at once",
                &["a@k1", "b@k1", "c@k1"],
                limits(1, 2, 0, false),
                &[],
                &[
                    "start a@k1 -j2",
                    "ok a@k1",
                    "start b@k1 -j2",
                    "ok b@k1",
                    "start c@k1 -j2",
                    "ok c@k1",
                    "post k1",
                    "done",
                ],
            ),
            (
                "BUILD_DEPENDS: the dependent starts after its dependency succeeded, dependency first",
                &["dep@k1", "top@k1<0"],
                limits(4, 4, 0, false),
                &[],
                &["start dep@k1 -j2", "ok dep@k1", "start top@k1 -j4", "ok top@k1", "post k1", "done"],
            ),
            (
                "a failed dependency blocks its dependents, transitively, without running them",
                &["dep@k1", "mid@k1<0", "top@k1<1", "other@k1"],
                limits(1, 1, 0, false),
                &[0],
                &[
                    "start dep@k1 -j1",
                    "FAIL dep@k1",
                    "blocked mid@k1 by dep@k1",
                    "blocked top@k1 by mid@k1",
                    "start other@k1 -j1",
                    "ok other@k1",
                    "post k1",
                    "done",
                ],
            ),
            (
                "without a signing key the first build runs alone",
                &["a@k1", "b@k1", "c@k1"],
                limits(4, 4, 0, true),
                &[],
                &[
                    "start a@k1 -j1",
                    "ok a@k1",
                    "start b@k1 -j2",
                    "start c@k1 -j2",
                    "ok b@k1",
                    "ok c@k1",
                    "post k1",
                    "done",
                ],
            ),
            (
                "the biggest source starts first among equals",
                &["small@k1:10", "big@k1:900", "mid@k1:50"],
                limits(1, 1, 0, false),
                &[],
                &[
                    "start big@k1 -j1",
                    "ok big@k1",
                    "start mid@k1 -j1",
                    "ok mid@k1",
                    "start small@k1 -j1",
                    "ok small@k1",
                    "post k1",
                    "done",
                ],
            ),
            (
                "jobs others wait for come before bigger ones",
                &["big@k1:900", "dep@k1:1", "top@k1<1"],
                limits(1, 1, 0, false),
                &[],
                &[
                    "start dep@k1 -j1",
                    "ok dep@k1",
                    "start big@k1 -j1",
                    "ok big@k1",
                    "start top@k1 -j1",
                    "ok top@k1",
                    "post k1",
                    "done",
                ],
            ),
            (
                "jobs that run nothing are never scheduled and need no post-step",
                &["-skip@k1", "a@k2"],
                limits(2, 2, 0, false),
                &[],
                &["start a@k2 -j2", "ok a@k2", "post k2", "done"],
            ),
            (
                "a failed job still gets its kernel's post-step (other modules may have changed)",
                &["a@k1"],
                limits(2, 2, 0, false),
                &[0],
                &["start a@k1 -j2", "FAIL a@k1", "post k1", "done"],
            ),
            ("an empty plan is done at once", &[], limits(2, 2, 0, false), &[], &["done"]),
            (
                "a prerequisite outside the scheduled jobs can never be met: stuck, not a hang",
                &["-ghost@k1", "a@k1<0"],
                limits(2, 2, 0, false),
                &[],
                &["stuck"],
            ),
        ];
        for (what, spec, l, fail, want) in rows {
            assert_eq!(simulate(spec, *l, fail), *want, "{what}");
        }
    }

    #[test]
    fn modules_with_more_kernels_left_come_first() {
        let trace = simulate(&["one@k1:500", "many@k1", "many@k2", "many@k3"], limits(1, 1, 0, false), &[]);
        let starts: Vec<&str> = trace.iter().filter(|t| t.starts_with("start")).map(String::as_str).collect();
        assert_eq!(starts[0], "start many@k1 -j1", "{trace:?}");
        assert_eq!(starts[1], "start many@k2 -j1", "{trace:?}");
        assert_eq!(starts[2], "start one@k1 -j1", "{trace:?}: with one kernel left each, the bigger first");
    }

    #[test]
    fn jobs_of_one_module_never_overlap_whatever_the_parallelism() {
        let spec = ["a@k1", "a@k2", "a@k3", "b@k1", "b@k2"];
        let trace = simulate(&spec, limits(8, 8, 0, false), &[]);
        let mut running: BTreeSet<String> = BTreeSet::new();
        for t in &trace {
            if let Some(j) = t.strip_prefix("start ") {
                let module = j.split('@').next().unwrap().to_string();
                assert!(running.insert(module), "{trace:?}");
            } else if let Some(j) = t.strip_prefix("ok ") {
                running.remove(j.split('@').next().unwrap());
            }
        }
        assert_eq!(trace.last().unwrap(), "done");
    }
}
