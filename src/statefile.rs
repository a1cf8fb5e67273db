//! The state file, ROOT/var/lib/dkms-trigger/state.toml: read for reports, loaded and stored under
//! the finalize lock (its guard is the only way to store), written atomically after every job so
//! that `status` is right even after a crash mid-run.

use crate::clock;
use crate::lock::FinalizeLock;
use crate::paths;
use crate::root::Root;
use crate::state::State;
use crate::ui;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Reads the state for a report: a missing file is an empty state; an unreadable one reads as
/// empty with a warning, and is left where it is (the next finalize moves it aside).
pub fn read(root: &Root) -> Result<State> {
    load_from(root, None)
}

/// Loads the state to update it. An unreadable one is moved aside to
/// `state.toml.corrupt-<time>` with a warning, and reads as empty: the state only caches
/// results and fingerprints, and dkms's own tree remains the truth.
pub fn load(lock: &FinalizeLock) -> Result<State> {
    let root = lock.root();
    // Writers of the state hold the finalize lock, so whatever temp file is left now was left by
    // one that was killed.
    root.remove_stale_temp_files(root.path(paths::STATE_DIR), paths::STATE_FILE);
    load_from(root, Some(lock))
}

fn load_from(root: &Root, lock: Option<&FinalizeLock>) -> Result<State> {
    let path = state_path(root);
    let Some(bytes) = root.read_private(&path)? else { return Ok(State::default()) };
    let parsed = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string()).and_then(|t| State::parse(&t));
    match (parsed, lock) {
        (Ok(s), _) => Ok(s),
        (Err(why), Some(_)) => {
            let aside =
                path.with_file_name(format!("{}.corrupt-{}", paths::STATE_FILE, clock::compact(clock::now_ms())));
            root.rename(&path, &aside).with_context(|| format!("moving unreadable {} aside", path.display()))?;
            if let Some(dir) = path.parent() {
                root.prune(dir, &format!("{}.corrupt-", paths::STATE_FILE), crate::root::KEEP_SET_ASIDE);
            }
            ui::warn(format!(
                "{} was unusable ({why}); moved it to {}; build results will be re-learned",
                path.display(),
                aside.display()
            ));
            Ok(State::default())
        }
        (Err(why), None) => {
            ui::warn(format!("{} is unusable ({why}); showing results without it", path.display()));
            Ok(State::default())
        }
    }
}

/// Writes the state atomically; only the holder of the finalize lock can.
pub fn store(lock: &FinalizeLock, state: &State) -> Result<()> {
    let root = lock.root();
    let dir = root.private_dir(paths::STATE_DIR)?;
    root.write_atomic(&dir, paths::STATE_FILE, state.render().as_bytes())
        .map_err(|e| e.context(format!("cannot update {}; it was left unchanged", state_path(root).display())))
}

/// ROOT/var/lib/dkms-trigger/state.toml.
pub fn state_path(root: &Root) -> PathBuf {
    root.path(std::path::Path::new(paths::STATE_DIR).join(paths::STATE_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_state_is_moved_aside() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let dir = root.private_dir(paths::STATE_DIR).unwrap();
        std::fs::write(dir.join(paths::STATE_FILE), "garbage = [").unwrap();
        assert_eq!(read(&root).unwrap(), State::default());
        assert!(dir.join(paths::STATE_FILE).exists(), "read-only load leaves it");
        let lock = FinalizeLock::take(&root, crate::lock::Waiting::NoWait, "test").unwrap();
        assert_eq!(load(&lock).unwrap(), State::default());
        assert!(!dir.join(paths::STATE_FILE).exists());
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().any(|n| n.starts_with("state.toml.corrupt-")), "{names:?}");
    }
}
