//! The finalize lock, ROOT/var/lib/dkms-trigger/finalize.lock: held by whoever changes DKMS builds
//! (a finalize, a removal) and the state. Its guard is the only way to store the state
//! (`State::store`), so "the caller holds the lock" is checked by the compiler, not remembered.
//!
//! The lock file names its holder (pid, command, since when) and the process groups of the
//! commands it runs now: a waiter says whom it waits for, and a new holder waits for the groups a
//! killed holder left, which their supervisors stop within seconds (runner.rs). The descriptor is
//! not inherited by those commands, so a build left running can never keep the lock.

use crate::clock;
use crate::exit::{Code, Failure};
use crate::paths;
use crate::root::{File, FileExt, Root};
use crate::runner::{self, stop::Group};
use crate::ui;
use anyhow::{Context, Result};
use fs2::FileExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a new holder waits for the commands a killed holder left to end (they are stopped
/// within a few seconds; a process stuck in the kernel may take longer).
const LEFTOVER_WAIT: Duration = Duration::from_secs(30);
/// How often a waiter says that it is still waiting.
const SAY_EVERY: Duration = Duration::from_secs(30);

/// How to wait when another process holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Fail at once (`finalize --no-wait`).
    NoWait,
    /// Wait at most this long (config `lock_timeout`), then fail.
    UpTo(Duration),
}

impl Waiting {
    /// `--no-wait`, else the configured bound in seconds.
    pub fn from(no_wait: bool, lock_timeout: u64) -> Waiting {
        if no_wait {
            Waiting::NoWait
        } else {
            Waiting::UpTo(Duration::from_secs(lock_timeout))
        }
    }
}

/// Holds the finalize lock while alive.
pub struct FinalizeLock {
    root: Root,
    file: Arc<File>,
}

impl FinalizeLock {
    /// Takes the lock for `command` (a word for people: "finalize", "remove-kernel"). When another
    /// process holds it: with `NoWait` fails at once, otherwise waits, saying whom it waits for
    /// every 30 s, and fails after the bound; both failures are `Code::Busy` and name the holder.
    /// A stop signal ends the wait (`Code::Interrupted`).
    pub fn take(root: &Root, waiting: Waiting, command: &str) -> Result<FinalizeLock> {
        let dir = root.private_dir(paths::STATE_DIR)?;
        let path = dir.join(paths::FINALIZE_LOCK);
        let file = root.open_lock_file(&path)?;
        let started = Instant::now();
        let mut said = None::<Instant>;
        loop {
            match file.try_lock_exclusive() {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                    let holder = Holder::read(&file).describe();
                    let limit = match waiting {
                        Waiting::NoWait => {
                            return Err(Failure::err(
                                Code::Busy,
                                format!("another finalizer holds {}: {holder} (--no-wait given)", path.display()),
                            ))
                        }
                        Waiting::UpTo(limit) => limit,
                    };
                    if started.elapsed() >= limit {
                        return Err(Failure::err(
                            Code::Busy,
                            format!(
                                "gave up after {} s waiting for another finalizer to release {}: {holder} \
                                 holds it (lock_timeout)",
                                limit.as_secs(),
                                path.display()
                            ),
                        ));
                    }
                    runner::check_stop()?;
                    if said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
                        ui::info(format!(
                            "waiting for another finalizer to finish: {holder} ({} s so far, giving up after {} s)...",
                            started.elapsed().as_secs(),
                            limit.as_secs()
                        ));
                        said = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
            }
        }
        let previous = Holder::read(&file);
        let mine =
            Holder { pid: std::process::id(), command: command.to_string(), since_ms: clock::now_ms(), groups: vec![] };
        mine.write(&file).with_context(|| format!("writing {}", path.display()))?;
        wait_for_leftovers(&previous)?;
        let file = Arc::new(file);
        let shared = Arc::clone(&file);
        runner::stop::watch_groups(Some(Box::new(move |groups: &[Group]| {
            let _ = Holder { groups: groups.to_vec(), ..mine.clone() }.write(&shared);
        })));
        Ok(FinalizeLock { root: root.clone(), file })
    }

    /// The root this lock protects.
    pub fn root(&self) -> &Root {
        &self.root
    }
}

impl Drop for FinalizeLock {
    fn drop(&mut self) {
        runner::stop::watch_groups(None);
        // The lock is free once this descriptor closes: no holder to name any more.
        let _ = self.file.set_len(0);
    }
}

/// Waits until the process groups a killed holder left have ended.
fn wait_for_leftovers(previous: &Holder) -> Result<()> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let left: Vec<i32> =
            previous.groups.iter().filter(|g| runner::stop::still_running(g)).map(|g| g.pgid).collect();
        if left.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= LEFTOVER_WAIT {
            return Err(Failure::err(
                Code::Busy,
                format!(
                    "commands started by {} (process groups {left:?}) are still running {} s after it ended; \
                     refusing to start while they may be building",
                    previous.describe(),
                    LEFTOVER_WAIT.as_secs()
                ),
            ));
        }
        runner::check_stop()?;
        if !said {
            ui::info(format!("waiting for the commands left by {} to end...", previous.describe()));
            said = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the lock file says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Holder {
    pid: u32,
    command: String,
    since_ms: u64,
    groups: Vec<Group>,
}

impl Holder {
    /// Parses the lock file (empty or unreadable: nobody named).
    fn read(file: &File) -> Holder {
        let mut buf = vec![0u8; 4096];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        Holder::parse(&String::from_utf8_lossy(&buf[..n]))
    }

    fn parse(text: &str) -> Holder {
        let mut h = Holder::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("pid"), Some(p), _) => h.pid = p.parse().unwrap_or(0),
                (Some("command"), Some(c), _) => h.command = c.chars().take(40).collect(),
                (Some("since"), Some(t), _) => h.since_ms = clock::parse_rfc3339_ms(t).unwrap_or(0),
                (Some("group"), Some(g), Some(s)) => {
                    if let (Ok(pgid), Ok(start)) = (g.parse(), s.parse()) {
                        h.groups.push(Group { pgid, start });
                    }
                }
                _ => {}
            }
        }
        h
    }

    fn render(&self) -> String {
        let mut text = format!("pid {}\ncommand {}\nsince {}\n", self.pid, self.command, clock::rfc3339(self.since_ms));
        for g in &self.groups {
            text.push_str(&format!("group {} {}\n", g.pgid, g.start));
        }
        text
    }

    /// Replaces the file's content (written over, then cut: a reader sees old or new lines).
    fn write(&self, file: &File) -> std::io::Result<()> {
        let text = self.render();
        file.write_all_at(text.as_bytes(), 0)?;
        file.set_len(text.len() as u64)
    }

    /// "pid 1234 (dkms-trigger finalize, since 2026-...)" for messages.
    fn describe(&self) -> String {
        if self.pid == 0 {
            return "another dkms-trigger".to_string();
        }
        let command = if self.command.is_empty() { "?" } else { &self.command };
        format!("pid {} (dkms-trigger {command}, since {})", self.pid, clock::rfc3339(self.since_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_names_its_holder_and_groups() {
        let h = Holder {
            pid: 42,
            command: "finalize".into(),
            since_ms: 1_700_000_000_000,
            groups: vec![Group { pgid: 7, start: 99 }],
        };
        assert_eq!(Holder::parse(&h.render()), h);
        assert!(
            h.describe().starts_with("pid 42 (dkms-trigger finalize, since 2023-11-14T22:13:20"),
            "{}",
            h.describe()
        );
        assert_eq!(Holder::parse("").describe(), "another dkms-trigger");
    }

    #[test]
    fn a_second_taker_is_told_who_holds_it() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let held = FinalizeLock::take(&root, Waiting::NoWait, "finalize").unwrap();
        let path = root.path("var/lib/dkms-trigger/finalize.lock");
        let err = FinalizeLock::take(&root, Waiting::NoWait, "finalize").err().expect("busy");
        assert_eq!(crate::exit::exit_code(&err), Code::Busy);
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!(
                "holds {}: pid {} (dkms-trigger finalize, since ",
                path.display(),
                std::process::id()
            )),
            "{msg}"
        );
        let started = Instant::now();
        let err = FinalizeLock::take(&root, Waiting::UpTo(Duration::from_millis(500)), "remove-kernel")
            .err()
            .expect("gives up");
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert!(format!("{err:#}").contains("gave up after 0 s waiting for another finalizer"), "{err:#}");
        drop(held);
        assert!(FinalizeLock::take(&root, Waiting::NoWait, "finalize").is_ok(), "free again");
    }
}
