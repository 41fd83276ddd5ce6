//! Child processes that never outlive the orchestrator, even when it is
//! killed with SIGKILL.
//!
//! The kernel's parent-death signal (`PR_SET_PDEATHSIG`) does this, but it
//! has two catches that this module handles without `unsafe` code:
//!
//! - it is set in the child, between fork and exec, which needs `pre_exec`
//!   (unsafe, forbidden here): instead the child is started through
//!   util-linux `setpriv --pdeathsig KILL -- PROGRAM ARGS...`, which sets it
//!   and then execs the program (same process id);
//! - it fires when the *thread* that forked the child ends, not the whole
//!   process: a tokio worker or blocking-pool thread may end long before the
//!   orchestrator does. So children are forked from a dedicated thread that
//!   lives exactly as long as its [`TiedSpawner`].
//!
//! The signal is also cleared when the child changes its user or group, so
//! programs started this way must keep the orchestrator's user and group
//! (dnsmasq is told `user=root` and `group=root`; by default it switches to
//! the group `dip`, which would clear the signal).

use std::io;
use std::path::Path;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The program that sets the parent-death signal before exec.
pub const SETPRIV_PROGRAM: &str = "setpriv";

type SpawnRequest = (Command, oneshot::Sender<io::Result<Child>>);

/// Starts child processes from a thread of its own, each through `setpriv
/// --pdeathsig KILL`, so that they are killed when that thread ends: when
/// the spawner is dropped, or when the orchestrator dies.
///
/// The thread is created from the calling thread and so shares its network
/// namespace; children inherit it too.
pub struct TiedSpawner {
    requests: Option<mpsc::Sender<SpawnRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TiedSpawner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TiedSpawner")
            .finish_non_exhaustive()
    }
}

impl TiedSpawner {
    /// Starts the spawner thread. Must be called inside a tokio runtime
    /// (children are tokio processes, reaped by that runtime).
    pub fn new(name: &str) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            io::Error::other(format!("TiedSpawner needs a tokio runtime: {error}"))
        })?;
        let (requests, receiver) = mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-spawner"))
            .spawn(move || {
                let _runtime_guard = runtime.enter();
                while let Ok((mut command, reply)) = receiver.recv() {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// A command that runs `program` with its parent-death signal set to
    /// SIGKILL; add arguments and settings, then pass it to [`Self::spawn`].
    pub fn command(program: impl AsRef<Path>) -> Command {
        let mut command = Command::new(SETPRIV_PROGRAM);
        command
            .arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(program.as_ref());
        command
    }

    /// Starts the command from the spawner thread. The child is also killed
    /// when its `Child` handle is dropped.
    pub async fn spawn(&self, mut command: Command) -> io::Result<Child> {
        command.kill_on_drop(true);
        let (reply, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| io::Error::other("spawner is shut down"))?
            .send((command, reply))
            .map_err(|_| io::Error::other("spawner thread has ended"))?;
        answer
            .await
            .map_err(|_| io::Error::other("spawner thread ended before answering"))?
    }
}

impl Drop for TiedSpawner {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which sends SIGKILL to every
        // child it started that is still alive.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Checks that `setpriv` exists and knows `--pdeathsig` (util-linux 2.33+).
pub async fn check_setpriv_supports_pdeathsig() -> Result<(), String> {
    let output = Command::new(SETPRIV_PROGRAM)
        .arg("--help")
        .output()
        .await
        .map_err(|error| format!("cannot run {SETPRIV_PROGRAM} (util-linux): {error}"))?;
    let help = String::from_utf8_lossy(&output.stdout);
    if help.contains("--pdeathsig") {
        Ok(())
    } else {
        Err(format!(
            "{SETPRIV_PROGRAM} does not support --pdeathsig (util-linux 2.33 or later is needed)"
        ))
    }
}
