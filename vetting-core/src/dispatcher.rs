//! The background reconcilers: dispatch queued runs into free slots, send
//! the power action of dispatched runs, and fire deadlines. Each pass is
//! idempotent and compare-and-set, so any number of orchestrator processes
//! may run them against one database; they run on a timer and when poked.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Actor, Host, Run};
use crate::orchestrator::{EventContext, Orchestrator, OrchestratorError};
use crate::state_machine::{Event, RunState};

/// Sends a host's power action for a run. The PXE/power layer provides
/// the real drivers (Wake-on-LAN, IPMI, Redfish, manual).
#[async_trait]
pub trait PowerOn: Send + Sync + std::fmt::Debug {
    /// Returns a line for the run's log saying what was done.
    async fn power_on(&self, host: &Host, run: &Run) -> Result<String, String>;
}

/// No power control: the operator powers the host on by hand.
#[derive(Debug, Default)]
pub struct ManualPower;

#[async_trait]
impl PowerOn for ManualPower {
    async fn power_on(&self, host: &Host, _run: &Run) -> Result<String, String> {
        Ok(format!(
            "manual power: power on host `{}` by hand so it PXE-boots",
            host.name
        ))
    }
}

/// One pass of every reconciler. Returns how many transitions it made.
pub async fn reconcile_once(
    orchestrator: &Orchestrator,
    power: &dyn PowerOn,
    powered: &mut HashSet<(String, i64)>,
) -> Result<usize, OrchestratorError> {
    let mut moved = 0;
    moved += orchestrator.fire_deadlines().await?.len();
    moved += orchestrator.dispatch().await?.len();
    let runs = orchestrator.list_runs(None).await?;
    // orchestrator-owned states left behind by a restart
    for run in &runs {
        if matches!(run.state, RunState::SpecValidate | RunState::Reporting) {
            orchestrator.resolve_owned_states(&run.id).await?;
            moved += 1;
        }
    }
    // the iperf3 server runs only while some run is in flight
    if runs.iter().any(|run| run.state.holds_slot()) {
        let config = orchestrator.config();
        let bind = config.iperf.bind.unwrap_or_else(|| config.listen.ip());
        orchestrator.iperf().ensure(&config.iperf, bind).await;
    } else {
        orchestrator.iperf().stop().await;
    }
    for run in runs {
        if run.state != RunState::WaitingWoL || !powered.insert((run.id.clone(), run.version)) {
            continue;
        }
        let host = orchestrator.get_host(run.host_id).await?;
        match power.power_on(&host, &run).await {
            Ok(line) => {
                tracing::info!(run = %run.id, host = %host.name, "{line}");
                match orchestrator
                    .apply(
                        &run.id,
                        Event::PowerOnSent,
                        EventContext {
                            actor: Some(Actor("power".into())),
                            expected_state: Some(RunState::WaitingWoL),
                            reason: Some(line),
                            ..Default::default()
                        },
                    )
                    .await
                {
                    Ok(_) => moved += 1,
                    Err(OrchestratorError::InvalidTransition { .. })
                    | Err(OrchestratorError::Conflict { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
            Err(message) => {
                tracing::warn!(run = %run.id, host = %host.name, "power action failed: {message}");
                // the power deadline fails the run if it never succeeds;
                // forget it so the next pass tries again
                powered.remove(&(run.id.clone(), run.version));
            }
        }
    }
    Ok(moved)
}

/// Runs the reconcilers until `shutdown` resolves.
pub async fn run_reconcilers(
    orchestrator: Orchestrator,
    power: Arc<dyn PowerOn>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(orchestrator.config().dispatcher.interval_ms.max(10));
    let mut powered = HashSet::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(error) = reconcile_once(&orchestrator, power.as_ref(), &mut powered).await {
            tracing::error!("reconciler pass failed: {error:#}");
        }
        orchestrator.wait_for_poke(interval).await;
    }
}
