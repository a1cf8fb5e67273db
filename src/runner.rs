//! The one way the tool runs other programs: argv logged, stdin from /dev/null, output appended to
//! a log file, its own process group (so a timeout kills everything it started), and on failure an
//! explanation carrying the argv, the exit status, the log's path and its last lines. The only
//! place that starts a process (clippy.toml denies `Command::new` elsewhere).

use crate::root::{read_tail_of, File, Root};
use anyhow::{Context, Result};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command to run.
#[derive(Debug, Clone)]
pub struct Cmd {
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_clear: bool,
    timeout: Option<Duration>,
}

/// A log file commands append to, opened through the root (created 0600, never via a symlink).
#[derive(Debug)]
pub struct Log {
    file: File,
    path: PathBuf,
}

impl Log {
    /// Opens (creating) the log at `path`, a host path inside `root`.
    pub fn open(root: &Root, path: impl AsRef<Path>) -> Result<Log> {
        let path = path.as_ref();
        let file = root.open_append(path).with_context(|| format!("opening log {}", path.display()))?;
        Ok(Log { file, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a line of our own (a `# ...` note).
    pub fn note(&self, line: &str) {
        let _ = writeln!(&self.file, "{line}");
    }

    /// Appends raw bytes (a copy of another log).
    pub fn append(&self, bytes: &[u8]) {
        let _ = (&self.file).write_all(bytes);
    }

    fn try_clone(&self) -> Result<Log> {
        Ok(Log {
            file: self.file.try_clone().with_context(|| format!("reopening {}", self.path.display()))?,
            path: self.path.clone(),
        })
    }
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd { argv: vec![program.as_ref().to_os_string()], env: Vec::new(), env_clear: false, timeout: None }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.argv.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Cmd {
        self.argv.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.env.push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// Starts from an empty environment (only what `env` adds).
    pub fn env_clear(mut self) -> Cmd {
        self.env_clear = true;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = Some(t);
        self
    }

    /// The command line, shell-quoted enough for people to copy.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| {
                let s = a.to_string_lossy();
                if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@".contains(c)) {
                    s.into_owned()
                } else {
                    format!("'{}'", s.replace('\'', "'\\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[allow(clippy::disallowed_methods)] // this is the one place that starts programs
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        if self.env_clear {
            cmd.env_clear();
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs the command, appending a `$ argv` header and all its output to `log`. A command that
    /// cannot be started is an error; one that fails is a `Ran` with a non-zero status.
    pub fn run(&self, log: &Log) -> Result<Ran> {
        let mut file = &log.file;
        let start_offset = file.seek(SeekFrom::End(0)).unwrap_or(0);
        writeln!(file, "$ {}", self.display()).with_context(|| format!("writing {}", log.path.display()))?;
        log::info!("running {}", self.display());
        let (status, timed_out, duration) =
            self.wait(Stdio::from(log.file.try_clone()?), Stdio::from(log.file.try_clone()?))?;
        let code = status.code();
        let note = match (timed_out, code, status.signal()) {
            (true, _, _) => format!("# killed after the {} s timeout", self.timeout.unwrap_or_default().as_secs()),
            (_, Some(c), _) => format!("# exit status {c} after {:.1}s", duration.as_secs_f64()),
            (_, None, Some(s)) => format!("# killed by signal {s}"),
            _ => "# ended".to_string(),
        };
        let _ = writeln!(file, "{note}");
        log::debug!("{} -> {note}", self.display());
        Ok(Ran { command: self.display(), code, timed_out, duration, log: log.try_clone()?, log_start: start_offset })
    }

    /// Runs the command for what it prints (a package status, a tool's answer): stdout and stderr
    /// kept in memory instead of a log file; the same stdin, process group and timeout as `run`.
    /// Meant for short outputs: hooks asking dpkg a question.
    pub fn output(&self) -> Result<Captured> {
        log::debug!("running {}", self.display());
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe");
        let ((out_r, out_w), (err_r, err_w)) = (pipe()?, pipe()?);
        let reader = |fd: std::os::fd::OwnedFd| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = File::from(fd).read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let (out_t, err_t) = (reader(out_r), reader(err_r));
        // The write ends move into the child's Stdio and are closed here once it is spawned, so the
        // readers see end of file when the command (and its group) is gone.
        let waited = self.wait(Stdio::from(out_w), Stdio::from(err_w));
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let (status, timed_out, _) = waited?;
        log::debug!("{} -> {:?}", self.display(), status.code());
        Ok(Captured { command: self.display(), code: status.code(), timed_out, stdout, stderr })
    }

    /// Starts the command (stdin /dev/null, its own process group, `stdout`/`stderr` as given) and
    /// waits for it, killing its group at the timeout and, in any case, whatever of the group
    /// outlived the leader. Returns its status, whether it timed out, and how long it ran.
    fn wait(&self, stdout: Stdio, stderr: Stdio) -> Result<(std::process::ExitStatus, bool, Duration)> {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr).process_group(0);
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("could not run {}", self.display()))?;
        // The parent's copies of the output descriptors must not keep a pipe open.
        drop(cmd);
        let pid = child.id() as i32;
        let mut timed_out = false;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if let Some(t) = self.timeout {
                if started.elapsed() >= t {
                    timed_out = true;
                    kill_group(pid);
                    break child.wait()?;
                }
            }
            std::thread::sleep(poll_interval(started.elapsed()));
        };
        let duration = started.elapsed();
        // Children that outlived the leader (a make left behind) must not keep running.
        kill_group(pid);
        Ok((status, timed_out, duration))
    }

    /// Runs the command with its output discarded and returns whether it succeeded (a program
    /// that cannot be started counts as failing): for questions asked of a tool, like `grep -q`.
    pub fn succeeds(&self) -> bool {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        cmd.status().is_ok_and(|s| s.success())
    }

    /// Starts the command with piped stdin and stdout, stderr into `stderr`, in its own process
    /// group (the caller kills the group when done): for programs the tool talks to while they run.
    pub fn spawn_piped(&self, stderr: File) -> std::io::Result<Child> {
        let mut cmd = self.command();
        cmd.current_dir("/").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr).process_group(0);
        cmd.spawn()
    }
}

/// What a command run by `Cmd::output` printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Captured {
    pub command: String,
    /// Exit code; None when killed by a signal.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// One sentence for people: what ran, how it ended, and the first line it complained with.
    pub fn explain(&self) -> String {
        let how = match (self.timed_out, self.code) {
            (true, _) => "was killed at its timeout".to_string(),
            (_, Some(c)) => format!("exited with status {c}"),
            (_, None) => "was killed by a signal".to_string(),
        };
        match self.stderr.lines().find(|l| !l.trim().is_empty()) {
            Some(l) => format!("`{}` {how}: {}", self.command, l.trim()),
            None => format!("`{}` {how}", self.command),
        }
    }
}

/// Polls often at first (most commands are quick) and less later.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_millis(100) {
        Duration::from_millis(2)
    } else if elapsed < Duration::from_secs(2) {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(100)
    }
}

/// SIGTERM to the whole group, then SIGKILL to whatever is left after a grace period.
fn kill_group(pgid: i32) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let pg = Pid::from_raw(pgid);
    if killpg(pg, None).is_err() {
        return; // nobody left
    }
    let _ = killpg(pg, Signal::SIGTERM);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        if killpg(pg, None).is_err() {
            return;
        }
    }
    let _ = killpg(pg, Signal::SIGKILL);
}

/// What a finished command did.
#[derive(Debug)]
pub struct Ran {
    pub command: String,
    /// Exit code; None when killed by a signal.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
    /// The log it wrote to.
    pub log: Log,
    /// Where this command's output starts in the log.
    log_start: u64,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// This command's output (not the earlier commands' in the same log), at most `max` bytes from its end.
    pub fn output_tail(&self, max: usize) -> String {
        let buf = read_tail_of(&self.log.file, self.log_start, max as u64).unwrap_or_default();
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// This command's whole output (for listings a caller parses).
    pub fn output(&self) -> String {
        self.output_tail(usize::MAX)
    }

    /// The last `n` non-empty output lines, without the runner's own `$`/`#` lines.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let text = self.output_tail(16 * 1024);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("$ ") && !l.starts_with("# "))
            .map(str::to_string)
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// One sentence for people: what ran, how it ended, where to look.
    pub fn explain(&self) -> String {
        let how = if self.timed_out {
            format!("was killed after {:.0}s (timeout)", self.duration.as_secs_f64())
        } else {
            match self.code {
                Some(c) => format!("exited with status {c}"),
                None => "was killed by a signal".to_string(),
            }
        };
        let tail = self.last_lines(3).join(" | ");
        let tail = if tail.is_empty() { String::new() } else { format!(": {tail}") };
        format!("`{}` {how}{tail}", self.command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_in(t: &tempfile::TempDir, name: &str) -> Log {
        Log::open(&Root::open(t.path()).unwrap(), name).unwrap()
    }

    #[test]
    fn runs_logs_and_explains() {
        let t = tempfile::tempdir().unwrap();
        let log = log_in(&t, "job.log");
        let ok = Cmd::new("sh").args(["-c", "echo hello; echo err >&2"]).run(&log).unwrap();
        assert!(ok.ok());
        let bad = Cmd::new("sh").args(["-c", "echo first; echo 'make: *** [x] Error 2'; exit 10"]).run(&log).unwrap();
        assert_eq!(bad.code, Some(10));
        assert_eq!(bad.last_lines(1), vec!["make: *** [x] Error 2"]);
        assert!(bad.explain().contains("exited with status 10: first | make: *** [x] Error 2"), "{}", bad.explain());
        assert!(!bad.output_tail(1000).contains("hello"), "tail is this command's output only");
        let text = std::fs::read_to_string(t.path().join("job.log")).unwrap();
        assert!(text.contains("$ sh -c 'echo hello; echo err >&2'\nhello\nerr\n# exit status 0"), "{text}");
    }

    #[test]
    fn stdin_is_null() {
        let t = tempfile::tempdir().unwrap();
        let r = Cmd::new("sh").args(["-c", "read x && echo got"]).run(&log_in(&t, "l")).unwrap();
        assert_eq!(r.code, Some(1), "read sees end of file at once");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let t = tempfile::tempdir().unwrap();
        let marker = t.path().join("survived");
        let script = format!("(sleep 3; touch {}) & sleep 30", marker.display());
        let r = Cmd::new("sh").args(["-c", &script]).timeout(Duration::from_millis(300)).run(&log_in(&t, "l")).unwrap();
        assert!(r.timed_out && !r.ok());
        assert!(r.duration < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(3500));
        assert!(!marker.exists(), "the background child was killed with its group");
        assert!(r.explain().contains("timeout"));
    }

    #[test]
    fn missing_program_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let e = Cmd::new("/nonexistent/dkms").arg("status").run(&log_in(&t, "l")).unwrap_err();
        assert!(format!("{e:#}").contains("could not run /nonexistent/dkms status"));
    }

    #[test]
    fn output_keeps_stdout_and_stderr_apart() {
        let r = Cmd::new("sh").args(["-c", "printf 'ii '; echo oops >&2; exit 3"]).output().unwrap();
        assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (Some(3), "ii ", "oops\n"));
        assert!(!r.ok());
        assert_eq!(r.explain(), "`sh -c 'printf '\\''ii '\\''; echo oops >&2; exit 3'` exited with status 3: oops");
        let r = Cmd::new("sh").args(["-c", "read x && echo got; echo done"]).output().unwrap();
        assert_eq!(r.stdout, "done\n", "stdin is null");
        assert!(Cmd::new("/nonexistent/dpkg-query").output().is_err());
    }

    #[test]
    fn output_does_not_wait_for_what_the_command_left_behind() {
        // A daemonised child keeps the output pipe open; the group is killed when the leader ends.
        let started = Instant::now();
        let r = Cmd::new("sh").args(["-c", "sleep 30 & echo started"]).output().unwrap();
        assert!(r.ok() && r.stdout == "started\n", "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        let r = Cmd::new("sleep").arg("30").timeout(Duration::from_millis(200)).output().unwrap();
        assert!(r.timed_out && !r.ok() && r.explain().contains("timeout"), "{r:?}");
    }
}
