//! The PXE supervisor: dnsmasq as a supervised child process.
//!
//! - started through `setpriv --pdeathsig KILL` from a thread of its own
//!   ([`super::process::TiedSpawner`]), so it never outlives the
//!   orchestrator, even one killed with SIGKILL;
//! - its log lines (`--log-facility=-`) go to `tracing` under the target
//!   `vetting::pxe::dnsmasq`;
//! - restarted with a doubling pause when it dies;
//! - [`PxeSupervisor::update_hosts`] rewrites the allowlist and sends
//!   SIGHUP: dnsmasq re-reads it without a restart, and the call returns once
//!   dnsmasq has logged reading it;
//! - in full-DHCP mode it refuses to start where another DHCP server answers.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::dhcp_probe::find_other_dhcp_server;
use super::dnsmasq::{
    DhcpLease, DhcpMode, DnsmasqPaths, HostEntry, PxeSettings, parse_leases, prepare_tftp_root,
    render_config, write_file_atomically, write_hosts_file,
};
use super::mac::MacAddress;
use super::process::{TiedSpawner, check_setpriv_supports_pdeathsig};

/// The `tracing` target of dnsmasq's own log lines.
pub const DNSMASQ_LOG_TARGET: &str = "vetting::pxe::dnsmasq";
/// How long dnsmasq may take to start or to re-read its hostsfile.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long dnsmasq gets to exit after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// A dnsmasq that ran this long before dying restarts after the shortest pause.
const STABLE_RUN: Duration = Duration::from_secs(60);
/// How many of dnsmasq's last output lines are kept for error messages.
const RECENT_OUTPUT_LINES: usize = 20;

/// Why the PXE services could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum PxeError {
    /// The settings cannot work.
    #[error("invalid PXE settings: {0}")]
    InvalidSettings(String),
    /// A program the supervisor needs is missing.
    #[error("{0}")]
    MissingTool(String),
    /// Full-DHCP mode found another DHCP server on its interface.
    #[error(
        "another DHCP server ({server}) answers on {interface} (it offered {offered}); full-DHCP mode will not start \
         beside it: use proxy mode, or take the other server off this LAN"
    )]
    OtherDhcpServer {
        /// The vetting LAN interface.
        interface: String,
        /// The other server's address.
        server: Ipv4Addr,
        /// The address it offered to the probe.
        offered: Ipv4Addr,
    },
    /// The check for other DHCP servers could not run.
    #[error("could not check {interface} for other DHCP servers")]
    Probe {
        /// The vetting LAN interface.
        interface: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or folder of dnsmasq's could not be written.
    #[error("could not write {path}")]
    Files {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// dnsmasq could not be started.
    #[error("could not start dnsmasq through setpriv")]
    Spawn(#[source] std::io::Error),
    /// dnsmasq exited while starting.
    #[error("dnsmasq exited while starting ({status}); its output:\n{output}")]
    StartupFailed {
        /// Its exit status.
        status: String,
        /// Its last output lines.
        output: String,
    },
    /// dnsmasq did not get ready in time.
    #[error("dnsmasq did not get ready within {} s; its output:\n{output}", READY_TIMEOUT.as_secs())]
    StartupTimeout {
        /// Its last output lines.
        output: String,
    },
    /// dnsmasq did not confirm that it re-read the hostsfile.
    #[error("dnsmasq did not confirm re-reading {path} within {} s", READY_TIMEOUT.as_secs())]
    ReloadTimeout {
        /// The hostsfile.
        path: PathBuf,
    },
    /// The supervisor has been shut down.
    #[error("the PXE supervisor is shut down")]
    ShutDown,
}

struct Shared {
    settings: PxeSettings,
    paths: DnsmasqPaths,
    hosts: tokio::sync::Mutex<Vec<HostEntry>>,
    running_pid: Mutex<Option<u32>>,
    starts: AtomicU64,
    hosts_file_reads: watch::Sender<u64>,
    recent_output: Mutex<VecDeque<String>>,
}

impl Shared {
    fn set_running_pid(&self, pid: Option<u32>) {
        if let Ok(mut running_pid) = self.running_pid.lock() {
            *running_pid = pid;
        }
    }

    fn running_pid(&self) -> Option<u32> {
        self.running_pid.lock().ok().and_then(|pid| *pid)
    }

    fn recent_output(&self) -> String {
        self.recent_output
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    fn note_output_line(&self, line: &str) {
        if let Ok(mut lines) = self.recent_output.lock() {
            if lines.len() == RECENT_OUTPUT_LINES {
                lines.pop_front();
            }
            lines.push_back(line.to_owned());
        }
        if line.contains(&format!("read {}", self.paths.hosts_file.display())) {
            self.hosts_file_reads.send_modify(|reads| *reads += 1);
        }
        let lowered = line.to_ascii_lowercase();
        if lowered.contains("warning") || lowered.contains("failed") || lowered.contains("error") {
            tracing::warn!(target: DNSMASQ_LOG_TARGET, "{line}");
        } else {
            tracing::info!(target: DNSMASQ_LOG_TARGET, "{line}");
        }
    }
}

/// dnsmasq under supervision; see the module documentation.
pub struct PxeSupervisor {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PxeSupervisor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PxeSupervisor")
            .field("interface", &self.shared.settings.interface)
            .field("dnsmasq_pid", &self.shared.running_pid())
            .finish_non_exhaustive()
    }
}

impl PxeSupervisor {
    /// Prepares dnsmasq's files, checks the LAN (full-DHCP mode) and starts
    /// dnsmasq; returns once dnsmasq is serving, or with the reason it is not.
    ///
    /// dnsmasq runs in the network namespace of the calling thread.
    pub async fn start(mut settings: PxeSettings, hosts: Vec<HostEntry>) -> Result<Self, PxeError> {
        settings.validate().map_err(PxeError::InvalidSettings)?;
        // dnsmasq runs from `/`: relative folders (the default `./data/pxe`)
        // are made absolute first
        for folder in [&mut settings.state_dir, &mut settings.ipxe_dir] {
            *folder = std::path::absolute(&*folder).map_err(|source| PxeError::Files {
                path: folder.clone(),
                source,
            })?;
        }
        check_setpriv_supports_pdeathsig()
            .await
            .map_err(PxeError::MissingTool)?;
        let paths = settings.paths();

        if let DhcpMode::Full { .. } = settings.dhcp {
            let registered: Vec<MacAddress> = hosts.iter().map(|host| host.mac).collect();
            let answer = find_other_dhcp_server(
                &settings.interface,
                &registered,
                settings.other_server_probe_duration(),
            )
            .await
            .map_err(|source| PxeError::Probe {
                interface: settings.interface.clone(),
                source,
            })?;
            if let Some(answer) = answer {
                return Err(PxeError::OtherDhcpServer {
                    interface: settings.interface.clone(),
                    server: answer.server,
                    offered: answer.offered,
                });
            }
        }

        let files_error = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| PxeError::Files { path, source }
        };
        tokio::fs::create_dir_all(&settings.state_dir)
            .await
            .map_err(files_error(&settings.state_dir))?;
        prepare_tftp_root(&settings.ipxe_dir, &paths.tftp_root)
            .await
            .map_err(files_error(&paths.tftp_root))?;
        write_hosts_file(&paths.hosts_file, &hosts, &settings.dhcp)
            .await
            .map_err(files_error(&paths.hosts_file))?;
        write_file_atomically(&paths.config_file, render_config(&settings).as_bytes())
            .await
            .map_err(files_error(&paths.config_file))?;

        let (hosts_file_reads, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            settings,
            paths,
            hosts: tokio::sync::Mutex::new(hosts),
            running_pid: Mutex::new(None),
            starts: AtomicU64::new(0),
            hosts_file_reads,
            recent_output: Mutex::new(VecDeque::new()),
        });
        let spawner = TiedSpawner::new("dnsmasq").map_err(PxeError::Spawn)?;
        let mut started = spawn_dnsmasq(&shared, &spawner).await?;
        wait_until_ready(&shared, &mut started).await?;
        let child = started.child;
        tracing::info!(
            interface = %shared.settings.interface,
            pid = ?child.id(),
            "dnsmasq is serving PXE"
        );

        let (stop, stop_requested) = oneshot::channel();
        let task = tokio::spawn(supervise(
            Arc::clone(&shared),
            spawner,
            child,
            stop_requested,
        ));
        Ok(Self {
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Replaces the allowlist with `hosts` and makes dnsmasq re-read it
    /// (SIGHUP, no restart). Returns once dnsmasq has read the new file; when
    /// dnsmasq is between restarts, it reads the file when it starts.
    pub async fn update_hosts(&self, hosts: Vec<HostEntry>) -> Result<(), PxeError> {
        if self.stop.is_none() {
            return Err(PxeError::ShutDown);
        }
        let mut current = self.shared.hosts.lock().await;
        let paths = &self.shared.paths;
        let mut reads = self.shared.hosts_file_reads.subscribe();
        reads.mark_unchanged();
        write_hosts_file(&paths.hosts_file, &hosts, &self.shared.settings.dhcp)
            .await
            .map_err(|source| PxeError::Files {
                path: paths.hosts_file.clone(),
                source,
            })?;
        *current = hosts;
        let Some(pid) = self.shared.running_pid() else {
            tracing::info!("dnsmasq is restarting; it will read the new host list when it starts");
            return Ok(());
        };
        let Ok(pid_number) = i32::try_from(pid) else {
            return Ok(());
        };
        if let Err(error) = kill(Pid::from_raw(pid_number), Signal::SIGHUP) {
            tracing::warn!(pid, %error, "could not signal dnsmasq; it will read the new host list when it restarts");
            return Ok(());
        }
        match tokio::time::timeout(READY_TIMEOUT, reads.changed()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(PxeError::ReloadTimeout {
                path: paths.hosts_file.clone(),
            }),
        }
    }

    /// The registered hosts as last given.
    pub async fn hosts(&self) -> Vec<HostEntry> {
        self.shared.hosts.lock().await.clone()
    }

    /// The process id of the running dnsmasq, `None` between restarts.
    pub fn dnsmasq_pid(&self) -> Option<u32> {
        self.shared.running_pid()
    }

    /// How many times dnsmasq has been started (1 + restarts).
    pub fn start_count(&self) -> u64 {
        self.shared.starts.load(Ordering::SeqCst)
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &PxeSettings {
        &self.shared.settings
    }

    /// dnsmasq's current leases (full-DHCP mode; empty in proxy mode).
    pub async fn leases(&self) -> std::io::Result<Vec<DhcpLease>> {
        match tokio::fs::read_to_string(&self.shared.paths.lease_file).await {
            Ok(text) => Ok(parse_leases(&text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// The address dnsmasq leased to `mac` (full-DHCP mode): its unexpired
    /// lease, or else its fixed address from the host list. `vetting-http`
    /// hands a run's token only to this address.
    pub async fn leased_address(&self, mac: MacAddress) -> Option<Ipv4Addr> {
        if !matches!(self.shared.settings.dhcp, DhcpMode::Full { .. }) {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        let leased = self.leases().await.ok().and_then(|leases| {
            leases
                .into_iter()
                .filter(|lease| {
                    lease.mac == mac && (lease.expires_unix == 0 || lease.expires_unix > now)
                })
                .max_by_key(|lease| lease.expires_unix)
                .map(|lease| lease.address)
        });
        if leased.is_some() {
            return leased;
        }
        self.shared
            .hosts
            .lock()
            .await
            .iter()
            .find(|host| host.mac == mac)
            .and_then(|host| host.ipv4)
    }

    /// Stops dnsmasq (SIGTERM, then SIGKILL after a grace period) and the
    /// supervision; returns when dnsmasq has exited.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for PxeSupervisor {
    fn drop(&mut self) {
        // Dropping the stop sender ends the supervision loop, which stops
        // dnsmasq; if the runtime is gone, kill_on_drop and the spawner
        // thread's parent-death signal do it.
        self.stop.take();
    }
}

fn dnsmasq_command(shared: &Shared) -> tokio::process::Command {
    let mut command = TiedSpawner::command(&shared.settings.dnsmasq_program);
    command
        .arg("--keep-in-foreground")
        .arg("--log-facility=-")
        .arg(format!(
            "--conf-file={}",
            shared.paths.config_file.display()
        ))
        .arg("--pid-file")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn forward_output(
    shared: &Arc<Shared>,
    stream: impl AsyncRead + Unpin + Send + 'static,
) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            shared.note_output_line(&line);
        }
    })
}

/// A started dnsmasq, the count of hostsfile reads before it started, and
/// the tasks forwarding its output (they end when it exits).
struct StartedDnsmasq {
    child: Child,
    reads_before_start: u64,
    output_forwarders: Vec<JoinHandle<()>>,
}

async fn spawn_dnsmasq(
    shared: &Arc<Shared>,
    spawner: &TiedSpawner,
) -> Result<StartedDnsmasq, PxeError> {
    let reads_before_start = *shared.hosts_file_reads.borrow();
    let mut child = spawner
        .spawn(dnsmasq_command(shared))
        .await
        .map_err(PxeError::Spawn)?;
    shared.starts.fetch_add(1, Ordering::SeqCst);
    let mut output_forwarders = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        output_forwarders.push(forward_output(shared, stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        output_forwarders.push(forward_output(shared, stderr));
    }
    Ok(StartedDnsmasq {
        child,
        reads_before_start,
        output_forwarders,
    })
}

/// Waits until dnsmasq has read its hostsfile (the last step of its startup)
/// and records its pid; fails when it exits first or takes too long.
async fn wait_until_ready(
    shared: &Arc<Shared>,
    started: &mut StartedDnsmasq,
) -> Result<(), PxeError> {
    let mut reads = shared.hosts_file_reads.subscribe();
    let reads_before_start = started.reads_before_start;
    let child = &mut started.child;
    let ready = async {
        while *reads.borrow_and_update() == reads_before_start {
            if reads.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = ready => {
            shared.set_running_pid(child.id());
            Ok(())
        }
        status = child.wait() => {
            // Its last lines explain why: let the forwarders reach the end.
            for forwarder in started.output_forwarders.drain(..) {
                let _ = tokio::time::timeout(Duration::from_secs(1), forwarder).await;
            }
            Err(PxeError::StartupFailed {
                status: status.map(|status| status.to_string()).unwrap_or_else(|error| error.to_string()),
                output: shared.recent_output(),
            })
        }
        () = tokio::time::sleep(READY_TIMEOUT) => {
            let _ = child.start_kill();
            Err(PxeError::StartupTimeout { output: shared.recent_output() })
        }
    }
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        if tokio::time::timeout(TERMINATE_GRACE, child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

async fn supervise(
    shared: Arc<Shared>,
    spawner: TiedSpawner,
    first_child: Child,
    mut stop_requested: oneshot::Receiver<()>,
) {
    let initial_pause = Duration::from_millis(shared.settings.restart_backoff_initial_ms.max(1));
    let longest_pause =
        Duration::from_millis(shared.settings.restart_backoff_max_ms).max(initial_pause);
    let mut pause = initial_pause;
    let mut child = Some(first_child);
    loop {
        if let Some(mut running) = child.take() {
            let started = tokio::time::Instant::now();
            tokio::select! {
                status = running.wait() => {
                    shared.set_running_pid(None);
                    if started.elapsed() >= STABLE_RUN {
                        pause = initial_pause;
                    }
                    let status = status.map(|status| status.to_string()).unwrap_or_else(|error| error.to_string());
                    tracing::warn!(
                        %status,
                        restart_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        "dnsmasq exited; restarting it"
                    );
                }
                _ = &mut stop_requested => {
                    shared.set_running_pid(None);
                    terminate(&mut running).await;
                    tracing::info!("dnsmasq stopped");
                    return;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = &mut stop_requested => return,
        }
        pause = (pause * 2).min(longest_pause);
        match spawn_dnsmasq(&shared, &spawner).await {
            Ok(mut restarted) => {
                let ready = tokio::select! {
                    ready = wait_until_ready(&shared, &mut restarted) => Some(ready),
                    _ = &mut stop_requested => None,
                };
                match ready {
                    None => {
                        terminate(&mut restarted.child).await;
                        return;
                    }
                    Some(Ok(())) => {
                        tracing::info!(pid = ?restarted.child.id(), "dnsmasq restarted");
                        child = Some(restarted.child);
                    }
                    Some(Err(error)) => {
                        tracing::error!(error = %error, "dnsmasq failed to restart")
                    }
                }
            }
            Err(error) => tracing::error!(error = %error, "dnsmasq failed to restart"),
        }
    }
}
