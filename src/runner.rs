//! The one way the tool runs other programs: argv logged, stdin from /dev/null, output appended to
//! a log file (bounded, `capture`), a clean environment and a trusted program (`environment`), its
//! own process group (so a timeout or a stop kills everything it started), a time limit always,
//! and on failure an explanation carrying the argv, the exit status, the log's path and its last
//! lines. The only place that starts a process (clippy.toml denies `Command::new` elsewhere).
//!
//! Every program runs under a small supervisor shell, the leader of its process group, which the
//! kernel signals when this process dies (PR_SET_PDEATHSIG): it then stops the whole group. So a
//! finalize killed with SIGKILL leaves no build running, whatever the build started.

mod capture;
pub mod environment;
pub mod stop;

pub use capture::{LOG_LIMIT, TAIL as LOG_TAIL};
pub use stop::{check_stop, stop_on_signals, stop_signal};

use crate::root::{read_tail_of, File, Root};
use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The time limit of a command that sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the output of a finished command may stay open (held by a process that left its
/// group) before the log stops waiting for it.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// The supervisor: runs the program in the background of its own group and waits for it; stdin
/// goes through fd 9, since a background command's stdin is /dev/null otherwise (dash ignores an
/// explicit `<&0`). SIGUSR1, its parent-death signal, stops the group: SIGTERM, a second for
/// cleanup, then SIGKILL (itself included).
const SUPERVISOR: &str = "trap 'trap \"\" TERM; kill -TERM 0 2>/dev/null; sleep 1; kill -KILL 0' USR1
exec 9<&0
\"$@\" <&9 9<&- &
exec 9<&-
wait $!
";

/// Where `program` (a name or an absolute path) would be run from, as every `Cmd` finds it: the
/// fixed PATH and the trust rule; or why it would not run.
pub fn locate(program: &str) -> Result<PathBuf, String> {
    environment::program(OsStr::new(program))
}

/// A command to run.
#[derive(Debug, Clone)]
pub struct Cmd {
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
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

    /// Opens a log that is reused from run to run (remove-kernel.log): once it holds more than
    /// `max` bytes it becomes `NAME.1` (replacing the previous one) and a new one is started, so
    /// it never takes more than about twice `max`.
    pub fn open_rotating(root: &Root, path: impl AsRef<Path>, max: u64) -> Result<Log> {
        let path = path.as_ref();
        if root.lstat(path).is_ok_and(|md| md.is_file() && md.len() > max) {
            let mut old = path.as_os_str().to_os_string();
            old.push(".1");
            root.rename(path, &old).with_context(|| format!("rotating log {}", path.display()))?;
        }
        Log::open(root, path)
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

/// How a wait for a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Exited,
    TimedOut,
    Stopped(Signal),
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd { argv: vec![program.as_ref().to_os_string()], env: Vec::new(), timeout: DEFAULT_TIMEOUT }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.argv.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Cmd {
        self.argv.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// A variable on top of the clean environment (`environment::base`).
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.env.push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// The command's time limit (`DEFAULT_TIMEOUT` unless set).
    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
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

    /// The supervised command: the program looked up (`environment::program`), the clean
    /// environment, `/` as working directory, its own process group, and a parent-death signal
    /// for the supervisor.
    #[allow(clippy::disallowed_methods)] // this is the one place that starts programs
    fn command(&self) -> std::io::Result<Command> {
        let not_found = |e: String| std::io::Error::new(std::io::ErrorKind::NotFound, e);
        let program = environment::program(&self.argv[0]).map_err(not_found)?;
        let sh = environment::program(OsStr::new("sh")).map_err(not_found)?;
        let mut cmd = Command::new(sh);
        cmd.arg("-c").arg(SUPERVISOR).arg("dkms-trigger").arg(program).args(&self.argv[1..]);
        cmd.env_clear().envs(environment::base()).envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.current_dir("/").process_group(0);
        let parent = nix::unistd::getpid();
        // SAFETY: between fork and exec only async-signal-safe calls: prctl and getppid.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1)?;
                // The parent may have died before the signal was asked for.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("dkms-trigger ended before the command started"));
                }
                Ok(())
            })
        };
        Ok(cmd)
    }

    /// Runs the command, appending a `$ argv` header and its output (bounded, `capture`) to `log`.
    /// A command that cannot be started is an error; one that fails, times out or is stopped by
    /// a stop signal is a `Ran` that says so. Once a stop signal was received, nothing starts.
    pub fn run(&self, log: &Log) -> Result<Ran> {
        let mut file = &log.file;
        let start_offset = file.seek(SeekFrom::End(0)).unwrap_or(0);
        writeln!(file, "$ {}", self.display()).with_context(|| format!("writing {}", log.path.display()))?;
        log::info!("running {}", self.display());
        let ran = |code, end: Option<End>, duration, output_cut| -> Result<Ran> {
            Ok(Ran {
                command: self.display(),
                code,
                timed_out: end == Some(End::TimedOut),
                interrupted: match end {
                    Some(End::Stopped(sig)) => Some(sig),
                    _ => None,
                },
                duration,
                output_cut,
                log: log.try_clone()?,
                log_start: start_offset,
            })
        };
        if let Some(sig) = stop_signal() {
            let _ = writeln!(file, "# not started: interrupted by {sig}");
            return ran(None, Some(End::Stopped(sig)), Duration::ZERO, false);
        }
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
        let mut cmd = self.command().with_context(|| format!("could not run {}", self.display()))?;
        cmd.stdin(Stdio::null()).stdout(File::from(writer.try_clone()?)).stderr(File::from(writer));
        let started = Instant::now();
        let spawned = cmd.spawn();
        // The command holds the pipe's write ends: the copy ends only when every writer is gone.
        drop(cmd);
        let mut child = spawned.with_context(|| format!("could not run {}", self.display()))?;
        let pid = child.id() as i32;
        stop::started(pid);
        let copied = capture::start(File::from(reader), log.file.try_clone()?);
        let waited = supervise(&mut child, self.timeout, started);
        // Children that outlived the leader (a make left behind) must not keep running.
        kill_group(pid);
        stop::ended(pid);
        let (status, end) = waited.with_context(|| format!("waiting for {}", self.display()))?;
        let duration = started.elapsed();
        let dropped = copied.recv_timeout(PIPE_GRACE).unwrap_or_else(|_| {
            let _ = writeln!(file, "# its output is still held open by a process outside its group; not waiting");
            0
        });
        let code = status.code();
        let note = match (end, code, status.signal()) {
            (End::TimedOut, _, _) => format!("# killed after the {} s timeout", self.timeout.as_secs()),
            (End::Stopped(sig), _, _) => format!("# stopped: dkms-trigger was interrupted by {sig}"),
            (_, Some(c), _) => format!("# exit status {c} after {:.1}s", duration.as_secs_f64()),
            (_, None, Some(s)) => format!("# killed by signal {s}"),
            _ => "# ended".to_string(),
        };
        let _ = writeln!(file, "{note}");
        log::debug!("{} -> {note}", self.display());
        ran(code, Some(end), duration, dropped > 0)
    }

    /// Runs the command with its output discarded and returns whether it succeeded (a program
    /// that cannot be started, times out or is stopped counts as failing): for questions asked of
    /// a tool, like `grep -q`.
    pub fn succeeds(&self) -> bool {
        if stop_signal().is_some() {
            return false;
        }
        let Ok(mut cmd) = self.command() else { return false };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let Ok(mut child) = cmd.spawn() else { return false };
        let pid = child.id() as i32;
        let waited = supervise(&mut child, self.timeout, Instant::now());
        kill_group(pid);
        matches!(waited, Ok((status, End::Exited)) if status.success())
    }

    /// Runs the command for what it prints (a package status, a tool's answer): stdout and stderr
    /// kept in memory instead of a log file; the same supervision, stdin, environment and time
    /// limit as `run`. Meant for short outputs: hooks asking dpkg a question. Once a stop signal
    /// was received, nothing starts (an error).
    pub fn output(&self) -> Result<Captured> {
        log::debug!("running {}", self.display());
        if let Some(sig) = stop_signal() {
            anyhow::bail!("{} not started: interrupted by {sig}", self.display());
        }
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe");
        let ((out_r, out_w), (err_r, err_w)) = (pipe()?, pipe()?);
        let mut cmd = self.command().with_context(|| format!("could not run {}", self.display()))?;
        cmd.stdin(Stdio::null()).stdout(File::from(out_w)).stderr(File::from(err_w));
        let reader = |fd: std::os::fd::OwnedFd| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = File::from(fd).read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let (out_t, err_t) = (reader(out_r), reader(err_r));
        let started = Instant::now();
        let spawned = cmd.spawn();
        // The command holds the pipes' write ends: the readers end when every writer is gone.
        drop(cmd);
        let mut child = spawned.with_context(|| format!("could not run {}", self.display()))?;
        let pid = child.id() as i32;
        stop::started(pid);
        let waited = supervise(&mut child, self.timeout, started);
        // What the command left behind in its group must not keep the pipes open.
        kill_group(pid);
        stop::ended(pid);
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let (status, end) = waited.with_context(|| format!("waiting for {}", self.display()))?;
        log::debug!("{} -> {:?}", self.display(), status.code());
        Ok(Captured { command: self.display(), code: status.code(), timed_out: end == End::TimedOut, stdout, stderr })
    }

    /// Starts the command with piped stdin and stdout, stderr into `stderr`, supervised in its own
    /// process group (the caller bounds it and kills the group when done): for programs the tool
    /// talks to while they run.
    pub fn spawn_piped(&self, stderr: File) -> std::io::Result<Child> {
        let mut cmd = self.command()?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr);
        cmd.spawn()
    }
}

/// Waits for `child` until it exits, `timeout` passes (since `started`) or a stop signal arrives;
/// in the last two cases its group is stopped first.
fn supervise(child: &mut Child, timeout: Duration, started: Instant) -> std::io::Result<(ExitStatus, End)> {
    let pid = child.id() as i32;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok((st, End::Exited));
        }
        let end = if started.elapsed() >= timeout { Some(End::TimedOut) } else { stop_signal().map(End::Stopped) };
        if let Some(end) = end {
            kill_group(pid);
            return Ok((child.wait()?, end));
        }
        std::thread::sleep(poll_interval(started.elapsed()));
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
    use nix::sys::signal::killpg;
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
    /// Stopped (or never started) because dkms-trigger received this stop signal.
    pub interrupted: Option<Signal>,
    pub duration: Duration,
    /// Part of its output was left out of the log (`capture`): `output` is not all of it.
    pub output_cut: bool,
    /// The log it wrote to.
    pub log: Log,
    /// Where this command's output starts in the log.
    log_start: u64,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out && self.interrupted.is_none()
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
        } else if let Some(sig) = self.interrupted {
            format!("was stopped (dkms-trigger was interrupted by {sig})")
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
    fn output_beyond_the_log_limit_keeps_the_head_and_the_tail() {
        let t = tempfile::tempdir().unwrap();
        let log = log_in(&t, "big.log");
        let script = "head -c 6000000 /dev/zero | tr '\\0' x; echo; echo the-last-line";
        let r = Cmd::new("sh").args(["-c", script]).run(&log).unwrap();
        assert!(r.ok() && r.output_cut);
        assert_eq!(r.last_lines(1), vec!["the-last-line"]);
        let len = std::fs::metadata(t.path().join("big.log")).unwrap().len();
        assert!(len <= LOG_LIMIT + LOG_TAIL as u64 + 1024, "{len}");
        let text = std::fs::read_to_string(t.path().join("big.log")).unwrap();
        assert!(text.contains("bytes of output left out here"), "the cut is said");
        // The next command's output goes in whole up to its tail once the log is full.
        let small = Cmd::new("sh").args(["-c", "echo small"]).run(&log).unwrap();
        assert!(!small.output_cut && small.last_lines(1) == vec!["small"]);
    }

    #[test]
    fn programs_get_the_fixed_environment_only() {
        let t = tempfile::tempdir().unwrap();
        let r = Cmd::new("env").run(&log_in(&t, "env.log")).unwrap();
        let out = r.output();
        assert!(out.contains(&format!("PATH={}\n", environment::PATH)) && out.contains("LC_ALL=C\n"), "{out}");
        // cargo gives the test process CARGO_* and HOME; none of it reaches a program.
        for name in ["HOME=", "CARGO", "RUST_"] {
            assert!(!out.lines().any(|l| l.starts_with(name)), "{name} got through: {out}");
        }
        let r = Cmd::new("env").env("EXTRA", "1").run(&log_in(&t, "env2.log")).unwrap();
        assert!(r.output().contains("EXTRA=1\n"), "a command's own variables are added");
    }

    #[test]
    fn rotating_logs_start_over_past_their_size() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        Log::open_rotating(&root, "r.log", 10).unwrap().note("0123456789 first");
        Log::open_rotating(&root, "r.log", 10).unwrap().note("second");
        assert_eq!(std::fs::read_to_string(t.path().join("r.log.1")).unwrap(), "0123456789 first\n");
        assert_eq!(std::fs::read_to_string(t.path().join("r.log")).unwrap(), "second\n");
        Log::open_rotating(&root, "r.log", 10).unwrap().note("third");
        assert_eq!(std::fs::read_to_string(t.path().join("r.log")).unwrap(), "second\nthird\n", "not over yet");
    }

    #[test]
    fn piped_programs_read_their_stdin() {
        use std::io::Read;
        let t = tempfile::tempdir().unwrap();
        let err = std::fs::File::create(t.path().join("err")).unwrap();
        let mut child = Cmd::new("cat").spawn_piped(err).unwrap();
        child.stdin.take().unwrap().write_all(b"through the supervisor").unwrap();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(out, "through the supervisor");
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
