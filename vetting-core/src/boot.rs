//! What `/ipxe/{mac}` answers, and the DHCP allowlist that follows the host
//! registry.
//!
//! Boot once: a MAC whose host has a run waiting to boot (`WaitingWoL`, or
//! `Booting` before the agent's hello) gets the script that boots the live
//! image with the run's parameters, token included; every other MAC gets
//! the script that leaves for the local disk. The token is in the kernel
//! command line, so where the orchestrator is the DHCP server (full-DHCP
//! mode) it goes only to the address dnsmasq leased to that MAC.
//!
//! `/ipxe/{mac}` needs no authentication, so what it writes is bounded
//! ([`BootLog`]): the same line for the same run and address at most once
//! a window, with a count of those left out, written by a thread of its
//! own (never on the runtime). Each address a boot script goes to is also
//! recorded in the audit, once a window, so the agent's hello can be
//! compared with it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::OrchestratorError;
use crate::events::HubEvent;
use crate::machine::RunState;
use crate::model::{Host, Mac};
use crate::orchestrator::Orchestrator;
use crate::pxe::ipxe::{self, BootParams, Firmware};
use crate::pxe::{HostEntry, MacAddress, PxeSupervisor};

/// Where the leases come from when the orchestrator is the DHCP server.
#[async_trait::async_trait]
pub trait LeaseLookup: Send + Sync + std::fmt::Debug {
    /// Whether this is full-DHCP mode (the orchestrator hands out the
    /// addresses, so it knows which address each MAC has).
    fn hands_out_addresses(&self) -> bool;
    /// The address leased to `mac`, if any.
    async fn leased_address(&self, mac: MacAddress) -> Option<Ipv4Addr>;
}

#[async_trait::async_trait]
impl LeaseLookup for PxeSupervisor {
    fn hands_out_addresses(&self) -> bool {
        matches!(self.settings().dhcp, crate::pxe::DhcpMode::Full { .. })
    }

    async fn leased_address(&self, mac: MacAddress) -> Option<Ipv4Addr> {
        PxeSupervisor::leased_address(self, mac).await
    }
}

/// A request for `/ipxe/{mac}`.
#[derive(Debug, Clone, Copy)]
pub struct IpxeRequest {
    pub mac: MacAddress,
    /// From iPXE's `${platform}`; `None` when it did not say.
    pub firmware: Option<Firmware>,
    /// Where the request came from.
    pub peer: IpAddr,
}

/// What `/ipxe/{mac}` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpxeAnswer {
    /// The script that boots the live image for this run.
    Boot { run_id: String, script: String },
    /// The script that boots the local disk, and why.
    Exit { script: String, reason: String },
    /// The host has a run waiting, but the request did not come from the
    /// address leased to its MAC: no token, the local disk, and why.
    Refused { script: String, reason: String },
}

/// How long a line of `/ipxe` for the same run, kind and address stands
/// for the ones like it.
pub const BOOT_LOG_WINDOW_MS: i64 = 60_000;

/// The most windows kept; past it the expired ones go, and if none has,
/// all (more lines get written, never fewer records).
const BOOT_LOG_KEYS: usize = 16_384;

/// The most lines waiting for the writer thread; past it they are counted
/// as left out.
const BOOT_LOG_QUEUE: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Window {
    opened_ms: i64,
    left_out: u64,
}

/// A line for a run's orchestrator log.
#[derive(Debug)]
struct BootLine {
    data_dir: PathBuf,
    hub: crate::events::EventsHub,
    run_id: String,
    at_ms: i64,
    level: &'static str,
    text: String,
}

/// What `/ipxe/{mac}` writes, rate-limited per key (run, kind, address)
/// and written by a thread of its own. One per HTTP front.
#[derive(Debug)]
pub struct BootLog {
    windows: Mutex<HashMap<String, Window>>,
    lines: Mutex<Option<std::sync::mpsc::SyncSender<BootLine>>>,
}

impl Default for BootLog {
    fn default() -> Self {
        Self::new()
    }
}

impl BootLog {
    pub fn new() -> Self {
        BootLog {
            windows: Mutex::new(HashMap::new()),
            lines: Mutex::new(None),
        }
    }

    /// Whether a line under `key` is to be written at `now_ms`: `Some`
    /// with how many like it were left out since the last one written, or
    /// `None` (left out, and counted).
    pub fn admit(&self, key: &str, now_ms: i64) -> Option<u64> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(window) = windows.get_mut(key) {
            if now_ms.saturating_sub(window.opened_ms) < BOOT_LOG_WINDOW_MS {
                window.left_out = window.left_out.saturating_add(1);
                return None;
            }
            let left_out = window.left_out;
            *window = Window {
                opened_ms: now_ms,
                left_out: 0,
            };
            return Some(left_out);
        }
        if windows.len() >= BOOT_LOG_KEYS {
            windows
                .retain(|_, window| now_ms.saturating_sub(window.opened_ms) < BOOT_LOG_WINDOW_MS);
            if windows.len() >= BOOT_LOG_KEYS {
                windows.clear();
            }
        }
        windows.insert(
            key.to_string(),
            Window {
                opened_ms: now_ms,
                left_out: 0,
            },
        );
        Some(0)
    }

    /// Hands `line` to the writer thread (started on first use); never
    /// blocks. A line that finds the queue full is dropped with a warning.
    fn write(&self, line: BootLine) {
        let mut sender = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sender.is_none() {
            let (queue, lines) = std::sync::mpsc::sync_channel::<BootLine>(BOOT_LOG_QUEUE);
            let started = std::thread::Builder::new()
                .name("vetting-boot-log".into())
                .spawn(move || {
                    for line in lines {
                        crate::runlogs::oplog::append(
                            &line.data_dir,
                            &line.hub,
                            &line.run_id,
                            line.at_ms,
                            line.level,
                            &line.text,
                        );
                    }
                });
            match started {
                Ok(_) => *sender = Some(queue),
                Err(error) => {
                    tracing::warn!(run = %line.run_id, "/ipxe: cannot start the log writer: {error}");
                    return;
                }
            }
        }
        if let Some(queue) = sender.as_ref()
            && let Err(error) = queue.try_send(line)
        {
            let line = match error {
                std::sync::mpsc::TrySendError::Full(line)
                | std::sync::mpsc::TrySendError::Disconnected(line) => line,
            };
            tracing::warn!(run = %line.run_id, "/ipxe: log line left out (writer busy): {}", line.text);
        }
    }

    /// Writes `text` to the run's log unless a line of this `kind` for the
    /// same run and `peer` was written in the window; a written line says
    /// how many were left out. Whether it was written.
    fn run_line(
        &self,
        orchestrator: &Orchestrator,
        run_id: &str,
        kind: &str,
        peer: IpAddr,
        level: &'static str,
        text: &str,
    ) -> bool {
        let now_ms = orchestrator.now_ms();
        let Some(left_out) = self.admit(&format!("{run_id}\t{kind}\t{peer}"), now_ms) else {
            return false;
        };
        let text = if left_out > 0 {
            format!("{text} ({left_out} more like it in the last window not logged)")
        } else {
            text.to_string()
        };
        self.write(BootLine {
            data_dir: orchestrator.config().data_dir.clone(),
            hub: orchestrator.hub().clone(),
            run_id: run_id.to_string(),
            at_ms: now_ms,
            level,
            text,
        });
        true
    }
}

/// Decides the answer to an `/ipxe/{mac}` request; see the module
/// documentation. Boot scripts handed out or refused are written to the
/// run's log through `boot_log` (rate-limited, off the runtime), and the
/// addresses they went to to the audit.
pub async fn ipxe_answer(
    orchestrator: &Orchestrator,
    leases: Option<&dyn LeaseLookup>,
    boot_log: &BootLog,
    request: IpxeRequest,
) -> Result<IpxeAnswer, OrchestratorError> {
    let exit_script = match request.firmware {
        Some(firmware) => ipxe::exit_script(firmware),
        None => ipxe::exit_script_any_firmware(),
    };
    let mac = Mac::parse(&request.mac.to_string()).map_err(OrchestratorError::BadRequest)?;
    let Some(host) = crate::store::hosts::by_mac(orchestrator.conn(), &mac).await? else {
        let reason = format!(
            "MAC {} is not registered; it boots from its local disk",
            request.mac
        );
        if let Some(left_out) = boot_log.admit(
            &format!("unregistered\t{}", request.peer),
            orchestrator.now_ms(),
        ) {
            tracing::warn!(peer = %request.peer, left_out, "/ipxe: {reason}");
        }
        return Ok(IpxeAnswer::Exit {
            script: exit_script,
            reason,
        });
    };
    let run = orchestrator.operator().active_run_of_host(host.id).await?;
    let waiting = run.filter(|run| {
        matches!(run.state, RunState::WaitingWoL)
            || (run.state == RunState::Booting && run.hello_at_ms.is_none())
    });
    let Some(run) = waiting else {
        return Ok(IpxeAnswer::Exit {
            script: exit_script,
            reason: format!(
                "host `{}` has no run waiting to boot (boot once: the agent already said hello, or no run is in progress)",
                host.name
            ),
        });
    };
    let config = orchestrator.config();
    if let Some(leases) = leases.filter(|leases| leases.hands_out_addresses()) {
        let leased = leases.leased_address(request.mac).await;
        let peer = crate::agent::plain_address(request.peer);
        if leased.map(IpAddr::V4) != Some(peer) {
            let reason = match leased {
                Some(address) => format!(
                    "boot script for run {} refused to {peer}: MAC {} leased {address}, so the token goes only there",
                    run.id, request.mac
                ),
                None => format!(
                    "boot script for run {} refused to {peer}: MAC {} holds no lease from vetting's DHCP server",
                    run.id, request.mac
                ),
            };
            if boot_log.run_line(orchestrator, &run.id, "refused", peer, "warn", &reason) {
                tracing::warn!(run = %run.id, "/ipxe: {reason}");
            }
            return Ok(IpxeAnswer::Refused {
                script: exit_script,
                reason,
            });
        }
    }
    let token = orchestrator.agent().token_for(&run.id).await?;
    let public_url = config.public_url();
    let kernel_url = format!("{public_url}/boot/{}", config.boot.kernel);
    let initrd_url = format!("{public_url}/boot/{}", config.boot.initrd);
    let script = ipxe::boot_script(&BootParams {
        kernel_url: &kernel_url,
        initrd_url: &initrd_url,
        orchestrator_url: &public_url,
        run_id: &run.id,
        token: &token,
        extra_cmdline: &config.boot.extra_cmdline,
        download_attempts: config.boot.download_attempts,
    })
    .map_err(|error| OrchestratorError::Internal(format!("the boot script: {error}")))?;
    let firmware = request
        .firmware
        .map_or_else(|| "unknown".to_string(), |firmware| firmware.to_string());
    let peer = crate::agent::plain_address(request.peer);
    let text = format!(
        "iPXE boot script for the live image handed to {peer} (MAC {}, firmware {firmware})",
        request.mac
    );
    if boot_log.run_line(orchestrator, &run.id, "handed", peer, "info", &text) {
        // once a window per address, before the token leaves: the hello
        // is compared with it
        orchestrator
            .agent()
            .record_boot_script_fetch(&run, peer, &request.mac.to_string())
            .await?;
    }
    Ok(IpxeAnswer::Boot {
        run_id: run.id,
        script,
    })
}

/// The DHCP allowlist for the registered hosts: every MAC of every host
/// that is not removed, named after its host.
pub fn host_entries(hosts: &[Host]) -> Vec<HostEntry> {
    let mut entries = Vec::new();
    for host in hosts.iter().filter(|host| host.removed_at_ms.is_none()) {
        for mac in &host.macs {
            match mac.as_str().parse::<MacAddress>() {
                Ok(parsed) => entries.push(HostEntry {
                    mac: parsed,
                    ipv4: None,
                    name: Some(host.name.clone()),
                }),
                Err(error) => {
                    tracing::warn!(host = %host.name, "stored MAC left out of the DHCP allowlist: {error}");
                }
            }
        }
    }
    entries.sort_by_key(|entry| entry.mac.to_string());
    entries
}

/// Keeps dnsmasq's allowlist equal to the host registry: on every host
/// registered or removed (events hub), and every `resync` anyway (a host
/// registered through another orchestrator process). Runs until `shutdown`.
pub async fn sync_allowlist(
    orchestrator: Orchestrator,
    supervisor: Arc<PxeSupervisor>,
    resync: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut events = orchestrator.hub().subscribe();
    loop {
        match crate::store::hosts::list(orchestrator.conn(), false).await {
            Ok(hosts) => {
                let wanted = host_entries(&hosts);
                if supervisor.hosts().await != wanted {
                    let count = wanted.len();
                    match supervisor.update_hosts(wanted).await {
                        Ok(()) => tracing::info!(macs = count, "DHCP allowlist updated"),
                        Err(error) => tracing::error!("cannot update the DHCP allowlist: {error}"),
                    }
                }
            }
            Err(error) => tracing::error!("cannot read the host registry for DHCP: {error}"),
        }
        let deadline = tokio::time::sleep(resync);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
                event = events.recv() => match event {
                    Ok(HubEvent::HostsChanged)
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}
