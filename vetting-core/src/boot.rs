//! What `/ipxe/{mac}` answers, and the DHCP allowlist that follows the host
//! registry.
//!
//! Boot once: a MAC whose host has a run waiting to boot (`WaitingWoL`, or
//! `Booting` before the agent's hello) gets the script that boots the live
//! image with the run's parameters, token included; every other MAC gets
//! the script that leaves for the local disk. The token is in the kernel
//! command line, so where the orchestrator is the DHCP server (full-DHCP
//! mode) it goes only to the address dnsmasq leased to that MAC.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::events::HubEvent;
use crate::model::{Host, Mac};
use crate::orchestrator::{Orchestrator, OrchestratorError};
use crate::pxe::ipxe::{self, BootParams, Firmware};
use crate::pxe::{HostEntry, MacAddress, PxeSupervisor};
use crate::state_machine::RunState;

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

/// Decides the answer to an `/ipxe/{mac}` request; see the module
/// documentation. Every boot script handed out or refused is written to
/// the run's log.
pub async fn ipxe_answer(
    orchestrator: &Orchestrator,
    leases: Option<&dyn LeaseLookup>,
    request: IpxeRequest,
) -> Result<IpxeAnswer, OrchestratorError> {
    let exit_script = match request.firmware {
        Some(firmware) => ipxe::exit_script(firmware),
        None => ipxe::exit_script_any_firmware(),
    };
    let mac = Mac::parse(&request.mac.to_string()).map_err(OrchestratorError::BadRequest)?;
    let Some(host) = orchestrator.host_by_mac(&mac).await? else {
        let reason = format!(
            "MAC {} is not registered; it boots from its local disk",
            request.mac
        );
        tracing::warn!(peer = %request.peer, "/ipxe: {reason}");
        return Ok(IpxeAnswer::Exit {
            script: exit_script,
            reason,
        });
    };
    let run = orchestrator.active_run_of_host(host.id).await?;
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
    let log = |level: &str, text: &str| {
        crate::oplog::append(
            &config.data_dir,
            orchestrator.hub(),
            &run.id,
            orchestrator.now_ms(),
            level,
            text,
        );
    };
    if let Some(leases) = leases.filter(|leases| leases.hands_out_addresses()) {
        let leased = leases.leased_address(request.mac).await;
        let peer = match request.peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(request.peer),
            v4 => v4,
        };
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
            tracing::warn!(run = %run.id, "/ipxe: {reason}");
            log("warn", &reason);
            return Ok(IpxeAnswer::Refused {
                script: exit_script,
                reason,
            });
        }
    }
    let token = orchestrator.token_for(&run.id).await?;
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
    log(
        "info",
        &format!(
            "iPXE boot script for the live image handed to {} (MAC {}, firmware {firmware})",
            request.peer, request.mac
        ),
    );
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
        match orchestrator.list_hosts(false).await {
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
