//! `depmod -a K` (with `-b ROOT` for an alternate root): run once per kernel whose modules changed,
//! by the finalizer and by the removals alike.

use crate::root::Root;
use crate::runner::{Cmd, Log};
use std::time::Duration;

/// How to run depmod.
#[derive(Debug, Clone)]
pub struct Depmod {
    pub program: String,
    pub root: Root,
}

impl Depmod {
    /// Regenerates `kernel`'s module dependency data; the error says what went wrong for people.
    pub fn run(&self, kernel: &str, log: &Log, timeout: Duration) -> Result<(), String> {
        let mut c = Cmd::new(&self.program);
        if !self.root.is_host() {
            c = c.arg("-b").arg(self.root.dir());
        }
        match c.args(["-a", kernel]).timeout(timeout).run(log) {
            Ok(r) if r.ok() => Ok(()),
            Ok(r) => Err(format!("depmod failed: {}", r.explain())),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternate_root_passes_b_and_failures_are_explained() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let log = Log::open(&root, "post.log").unwrap();
        let ok = Depmod { program: "true".into(), root: root.clone() };
        assert_eq!(ok.run("6.1.0-1-amd64", &log, Duration::from_secs(5)), Ok(()));
        let text = std::fs::read_to_string(t.path().join("post.log")).unwrap();
        assert!(text.contains(&format!("$ true -b {} -a 6.1.0-1-amd64", root.dir().display())), "{text}");
        let bad = Depmod { program: "false".into(), root };
        let err = bad.run("k", &log, Duration::from_secs(5)).unwrap_err();
        assert!(err.starts_with("depmod failed: `false -b") && err.contains("exited with status 1"), "{err}");
    }
}
