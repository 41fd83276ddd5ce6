//! The iperf supervisor: one `iperf3` server for the Network stage of every
//! run. iperf3 serves one test at a time and answers "the server is busy"
//! to a second client, so concurrent Network stages are serialized through
//! the orchestrator's NIC (the agent retries while busy). The server is
//! started when a run needs it, stopped when no run is in flight, and never
//! outlives the orchestrator: it is spawned through `setpriv --pdeathsig
//! KILL`, so even a SIGKILLed orchestrator takes it down.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// Where the iperf3 server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IperfConfig {
    /// Off: the Network stage is skipped with that reason.
    pub enabled: bool,
    /// The port (0: a free port is picked when the server starts).
    pub port: u16,
    /// The address it binds (default: the HTTP listen address).
    pub bind: Option<IpAddr>,
}

impl Default for IperfConfig {
    fn default() -> Self {
        IperfConfig {
            enabled: true,
            port: 5201,
            bind: None,
        }
    }
}

/// The running server, if any.
#[derive(Debug, Default)]
pub struct IperfSupervisor {
    state: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    child: Child,
    port: u16,
}

impl IperfSupervisor {
    /// Starts the server if it is not running (or died); returns its port.
    /// `None` when iperf3 is not installed or cannot start.
    pub async fn ensure(&self, config: &IperfConfig, default_bind: IpAddr) -> Option<u16> {
        if !config.enabled {
            return None;
        }
        let mut state = self.state.lock().await;
        if let Some(running) = state.as_mut() {
            match running.child.try_wait() {
                Ok(None) => return Some(running.port),
                _ => {
                    tracing::warn!(port = running.port, "iperf3 server exited; restarting it");
                    *state = None;
                }
            }
        }
        let bind = config.bind.unwrap_or(default_bind);
        let port = if config.port == 0 {
            free_port(bind)?
        } else {
            config.port
        };
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--", "iperf3", "-s", "-p"])
            .arg(port.to_string())
            .arg("-B")
            .arg(bind.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        match command.spawn() {
            Ok(child) => {
                // wait until it accepts connections (bounded)
                let address = SocketAddr::new(bind, port);
                for _ in 0..100 {
                    if tokio::net::TcpStream::connect(address).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                tracing::info!(%address, "iperf3 server started");
                *state = Some(Running { child, port });
                Some(port)
            }
            Err(error) => {
                tracing::warn!("cannot start iperf3 (is it installed?): {error}");
                None
            }
        }
    }

    /// Stops the server (no run needs it any more).
    pub async fn stop(&self) {
        let mut state = self.state.lock().await;
        if let Some(mut running) = state.take() {
            let _ = running.child.kill().await;
            tracing::info!(port = running.port, "iperf3 server stopped");
        }
    }

    /// The process id of the running server (tests check it goes away).
    pub async fn pid(&self) -> Option<u32> {
        self.state
            .lock()
            .await
            .as_ref()
            .and_then(|running| running.child.id())
    }
}

fn free_port(bind: IpAddr) -> Option<u16> {
    std::net::TcpListener::bind(SocketAddr::new(bind, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .ok()
}
