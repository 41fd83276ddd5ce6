//! Runs hardware tools: each in its own process group, with a timeout that
//! kills the whole group, stdout and stderr captured in full, and errors
//! that carry the command line, the exit status and stderr.
//!
//! This is the only place in vetting that spawns a hardware tool. A tool's
//! exit status is reported, never judged here: verdicts are read from the
//! parsed output (badblocks exits 0 on failure, smartctl's status is a bit
//! mask). [`ToolOutput::into_success`] turns a non-zero exit into an error
//! for the tools whose exit status does mean failure.
//!
//! When the tool's main process ends, whatever it left running in its
//! process group is killed too, so no stray worker outlives a stage.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use crate::Verdict;

/// How long to wait for the output pipes to close once the tool's process
/// group is gone. Only a process that left the group (e.g. with `setsid`)
/// can hold them open longer; its output is then cut off.
const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How much of stderr an error message quotes (the end is kept).
const STDERR_QUOTE_LIMIT: usize = 4000;

/// A tool invocation: program, arguments, optional timeout and extra
/// environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCommand {
    pub program: String,
    pub args: Vec<String>,
    /// Kill the whole process group when the tool runs longer than this.
    pub timeout: Option<Duration>,
    /// Variables added to (or replacing those of) the inherited environment.
    pub env: Vec<(String, String)>,
}

impl ToolCommand {
    /// A command with no arguments, no timeout and the inherited environment.
    pub fn new(program: impl Into<String>) -> Self {
        ToolCommand {
            program: program.into(),
            args: Vec::new(),
            timeout: None,
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command line as a shell would show it (arguments with spaces or
    /// quotes are single-quoted).
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitInfo {
    /// The exit code, when it exited normally.
    pub code: Option<i32>,
    /// The signal that killed it, when it was killed.
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    fn from_status(status: ExitStatus) -> Self {
        ExitInfo {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(signal)) => match Signal::try_from(signal) {
                Ok(name) => write!(f, "killed by signal {signal} ({name})"),
                Err(_) => write!(f, "killed by signal {signal}"),
            },
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// What a finished tool printed, how it ended and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub command_line: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitInfo,
    pub duration: Duration,
}

impl ToolOutput {
    /// Turns a non-zero exit into [`RunError::Failed`]. Use it only for tools
    /// whose exit status means what it says.
    pub fn into_success(self) -> Result<ToolOutput, RunError> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(RunError::Failed {
                command_line: self.command_line,
                status: self.status,
                stderr: quote_stderr(&self.stderr),
            })
        }
    }

    /// stdout as text, with invalid UTF-8 replaced.
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Why a tool could not be run to the end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("tool {program} is not installed")]
    NotFound { program: String },
    #[error("`{command_line}` could not be started")]
    Spawn {
        command_line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command_line}` ran longer than {timeout:?} and was killed; stderr: {stderr}")]
    TimedOut {
        command_line: String,
        timeout: Duration,
        stderr: String,
    },
    #[error("`{command_line}` was cancelled; stderr: {stderr}")]
    Cancelled {
        command_line: String,
        stderr: String,
    },
    #[error("`{command_line}` failed with {status}; stderr: {stderr}")]
    Failed {
        command_line: String,
        status: ExitInfo,
        stderr: String,
    },
    #[error("waiting for `{command_line}` failed")]
    Wait {
        command_line: String,
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// `skip` verdict for a tool that is not installed ("tool X is not
    /// installed"); `None` for every other error, which is no reason to skip.
    pub fn skip_verdict(&self) -> Option<Verdict> {
        match self {
            RunError::NotFound { program } => {
                Some(Verdict::skip(format!("tool {program} is not installed")))
            }
            _ => None,
        }
    }

    /// The verdict this error gives a check: `skip` for a missing tool,
    /// `fail` with the error (command line, status, stderr) otherwise.
    pub fn verdict(&self) -> Verdict {
        self.skip_verdict()
            .unwrap_or_else(|| Verdict::fail(self.to_string()))
    }

    /// The command line the error is about (the program alone for
    /// `NotFound`).
    pub fn command_line(&self) -> &str {
        match self {
            RunError::NotFound { program } => program,
            RunError::Spawn { command_line, .. }
            | RunError::TimedOut { command_line, .. }
            | RunError::Cancelled { command_line, .. }
            | RunError::Failed { command_line, .. }
            | RunError::Wait { command_line, .. } => command_line,
        }
    }
}

/// The end of stderr, as text, for error messages.
fn quote_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.len() <= STDERR_QUOTE_LIMIT {
        return text.to_string();
    }
    let mut start = text.len() - STDERR_QUOTE_LIMIT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Runs a tool to the end (or its timeout) and returns what it printed,
/// whatever its exit status.
pub fn run_tool(command: &ToolCommand) -> Result<ToolOutput, RunError> {
    let running = spawn_tool(command)?;
    running.wait_with_timeout(command.timeout)
}

/// The part of a running tool that other threads may hold to kill it.
#[derive(Debug)]
struct GroupState {
    /// The process group id (the leader's pid).
    pgid: Pid,
    /// Set once the leader has been reaped: after that its pid (and group
    /// id) may be reused, so nothing may be signalled any more.
    reaped: Mutex<bool>,
    cancelled: AtomicBool,
}

impl GroupState {
    fn lock_reaped(&self) -> MutexGuard<'_, bool> {
        self.reaped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends SIGKILL to every process of the group, unless the leader has
    /// been reaped. A group that is already empty is not an error.
    fn kill_group(&self) {
        let reaped = self.lock_reaped();
        if !*reaped {
            kill_group_members(self.pgid);
        }
    }
}

fn kill_group_members(pgid: Pid) {
    // ESRCH (nobody left) is the expected outcome once the group is gone.
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// A handle that kills a running tool's process group from another thread
/// (the agent's abort and shutdown commands). Cloning is cheap.
#[derive(Debug, Clone)]
pub struct CancelHandle {
    state: Arc<GroupState>,
}

impl CancelHandle {
    /// Kills the tool's whole process group; its wait then returns
    /// [`RunError::Cancelled`]. Does nothing once the tool has ended.
    pub fn cancel(&self) {
        self.state.cancelled.store(true, Ordering::SeqCst);
        self.state.kill_group();
    }

    pub fn is_cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::SeqCst)
    }
}

/// A tool that has been started; wait for it with
/// [`RunningTool::wait_with_timeout`].
#[derive(Debug)]
pub struct RunningTool {
    command_line: String,
    child: Child,
    state: Arc<GroupState>,
    started: Instant,
    exited: Receiver<()>,
    stdout: PipeReader,
    stderr: PipeReader,
}

/// Which pipe a chunk of a tool's output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Sees every chunk of output as it is read, before the tool ends (the
/// agent streams tool output to the orchestrator's live log). Called from
/// the pipe reader threads; the output is still captured in full.
pub type OutputTap = Arc<dyn Fn(OutputStream, &[u8]) + Send + Sync>;

/// Starts a tool in its own process group with stdin closed and stdout and
/// stderr captured.
pub fn spawn_tool(command: &ToolCommand) -> Result<RunningTool, RunError> {
    spawn_tool_tapped(command, None)
}

/// As [`spawn_tool`], with every chunk of output also handed to `tap` as it
/// is read. All of it has been handed over once the wait returns (unless a
/// process that left the group holds a pipe open past the drain grace).
pub fn spawn_tool_tapped(
    command: &ToolCommand,
    tap: Option<OutputTap>,
) -> Result<RunningTool, RunError> {
    let command_line = command.command_line();
    let mut process = Command::new(OsStr::new(&command.program));
    process
        .args(&command.args)
        .envs(command.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = process.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            RunError::NotFound {
                program: command.program.clone(),
            }
        } else {
            RunError::Spawn {
                command_line: command_line.clone(),
                source,
            }
        }
    })?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let state = Arc::new(GroupState {
        pgid: pid,
        reaped: Mutex::new(false),
        cancelled: AtomicBool::new(false),
    });
    let stdout = PipeReader::start(
        child.stdout.take(),
        tap.clone().map(|tap| (tap, OutputStream::Stdout)),
    );
    let stderr = PipeReader::start(
        child.stderr.take(),
        tap.map(|tap| (tap, OutputStream::Stderr)),
    );
    let exited = watch_exit(pid);
    Ok(RunningTool {
        command_line,
        child,
        state,
        started,
        exited,
        stdout,
        stderr,
    })
}

/// Tells when the process `pid` has exited, without reaping it: while it is
/// a zombie its pid, and so its process group id, cannot be reused, so the
/// group can still be signalled safely.
fn watch_exit(pid: Pid) -> Receiver<()> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        // Exited, or an error (e.g. reaped elsewhere): either way the
        // waiting side goes on to reap and report. EINTR only retries.
        while let Err(Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
        let _ = sender.send(());
    });
    receiver
}

impl RunningTool {
    /// The process id of the tool (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// A handle another thread can use to kill the tool.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// Kills the tool's whole process group now (as [`CancelHandle::cancel`]).
    pub fn kill_group(&self) {
        self.cancel_handle().cancel();
    }

    /// Waits for the tool to end, killing its process group when `timeout`
    /// passes. Whatever the tool left running in its group is killed when it
    /// ends. Any exit status is `Ok`; a timeout or a cancel is an error.
    pub fn wait_with_timeout(mut self, timeout: Option<Duration>) -> Result<ToolOutput, RunError> {
        let mut timed_out = false;
        match timeout {
            Some(limit) => {
                let remaining = limit.saturating_sub(self.started.elapsed());
                match self.exited.recv_timeout(remaining) {
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
                    Err(RecvTimeoutError::Timeout) => {
                        timed_out = true;
                        self.state.kill_group();
                        let _ = self.exited.recv();
                    }
                }
            }
            None => {
                let _ = self.exited.recv();
            }
        }
        // The leader has exited but is not reaped: its group id is still
        // ours, so clear out any process it left behind, then reap.
        let status = {
            let mut reaped = self.state.lock_reaped();
            kill_group_members(self.state.pgid);
            let status = self.child.wait();
            *reaped = true;
            status
        };
        let duration = self.started.elapsed();
        let deadline = Instant::now() + PIPE_DRAIN_GRACE;
        let stdout = self.stdout.finish(deadline);
        let stderr = self.stderr.finish(deadline);
        let status = status.map_err(|source| RunError::Wait {
            command_line: self.command_line.clone(),
            source,
        })?;
        if timed_out {
            return Err(RunError::TimedOut {
                command_line: std::mem::take(&mut self.command_line),
                timeout: timeout.unwrap_or_default(),
                stderr: quote_stderr(&stderr),
            });
        }
        if self.state.cancelled.load(Ordering::SeqCst) {
            return Err(RunError::Cancelled {
                command_line: std::mem::take(&mut self.command_line),
                stderr: quote_stderr(&stderr),
            });
        }
        Ok(ToolOutput {
            command_line: std::mem::take(&mut self.command_line),
            stdout,
            stderr,
            status: ExitInfo::from_status(status),
            duration,
        })
    }
}

/// A tool dropped without being waited for (an early return, a panic in
/// the caller) is killed with its whole group and reaped, so it neither
/// keeps running nor stays a zombie.
impl Drop for RunningTool {
    fn drop(&mut self) {
        let mut reaped = self.state.lock_reaped();
        if !*reaped {
            kill_group_members(self.state.pgid);
            let _ = self.child.wait();
            *reaped = true;
        }
    }
}

/// Reads one pipe to its end on a thread, keeping what it has read in a
/// shared buffer so that a pipe held open by an escaped process still gives
/// the output read so far.
#[derive(Debug)]
struct PipeReader {
    buffer: Arc<Mutex<Vec<u8>>>,
    done: Option<Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PipeReader {
    fn start<R: Read + Send + 'static>(
        pipe: Option<R>,
        tap: Option<(OutputTap, OutputStream)>,
    ) -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let Some(mut pipe) = pipe else {
            return PipeReader {
                buffer,
                done: None,
                thread: None,
            };
        };
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::clone(&buffer);
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(count) => {
                        if let Some((tap, stream)) = &tap {
                            tap(*stream, &chunk[..count]);
                        }
                        shared
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .extend_from_slice(&chunk[..count]);
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = sender.send(());
        });
        PipeReader {
            buffer,
            done: Some(receiver),
            thread: Some(thread),
        }
    }

    /// Waits (until `deadline`) for the pipe to close and returns its bytes.
    fn finish(&mut self, deadline: Instant) -> Vec<u8> {
        if let Some(done) = self.done.take() {
            let closed = done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok();
            if closed && let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        std::mem::take(&mut *self.buffer.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Whether `program` can be found on `PATH` (or, with a slash, exists and is
/// executable). The collector uses it to say "not installed" without
/// spawning.
pub fn tool_available(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &std::path::Path| {
        path.metadata()
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| executable(&dir.join(program)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_quotes_what_a_shell_would_split() {
        let command = ToolCommand::new("sh").args(["-c", "echo 'hi'", "plain"]);
        assert_eq!(command.command_line(), r"sh -c 'echo '\''hi'\''' plain");
    }

    #[test]
    fn exit_info_display() {
        let exited = ExitInfo {
            code: Some(2),
            signal: None,
        };
        assert_eq!(exited.to_string(), "exit status 2");
        let killed = ExitInfo {
            code: None,
            signal: Some(9),
        };
        assert_eq!(killed.to_string(), "killed by signal 9 (SIGKILL)");
    }

    #[test]
    fn long_stderr_is_quoted_from_its_end() {
        let stderr = format!("{}END", "x".repeat(10_000));
        let quoted = quote_stderr(stderr.as_bytes());
        assert!(quoted.ends_with("END"));
        assert!(quoted.len() < 4100);
    }
}
