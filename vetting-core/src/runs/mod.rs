//! The runs service: the driver that applies transitions and carries out
//! their effects (`driver`), dispatch and the dispatcher slots
//! (`dispatch`), deadlines (`deadlines`), and the reconcilers that
//! recover what a restart interrupted (`reconcile`).

use vetting_probes::protocol::WipeFinding;

use crate::machine::{HoldReason, RunState};
use crate::model::Actor;
use crate::orchestrator::Orchestrator;

mod deadlines;
mod dispatch;
mod driver;
mod owned;
mod reconcile;
pub(crate) mod report_queue;

pub(crate) use reconcile::PowerRequests;
pub use reconcile::{Dispatcher, run_reconcilers};

/// Extra facts an event carries into its transition.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    pub actor: Option<Actor>,
    /// For operator actions: what the operator acknowledged.
    pub acknowledged: Option<String>,
    /// For `StageHeld`: why.
    pub hold_reason: Option<HoldReason>,
    /// For failures: the reason shown to the operator.
    pub reason: Option<String>,
    /// Only apply when the run is at this version (compare-and-set by the
    /// caller; otherwise the current version is used and retried).
    pub expected_version: Option<i64>,
    /// Only apply when the run is in this state.
    pub expected_state: Option<RunState>,
    /// The stage outcome to record for stage events (`passed`, `warned`, ...).
    pub outcome: Option<String>,
    /// JSON of the orchestrator's verdict, recorded on the stage row.
    pub verdict_json: Option<String>,
    /// JSON of the agent's verdict, recorded on the stage row.
    pub agent_verdict_json: Option<String>,
    /// For stage results: the inventory and measurements written in the
    /// transition's transaction.
    pub stage_data: Option<std::sync::Arc<crate::agent::StageData>>,
    /// For `StageHeld`: what the wipe probe found, recorded on the stage
    /// row (an override must name ids among them).
    pub wipe_findings: Option<Vec<WipeFinding>>,
    /// For `OverrideWipe`: the finding ids the operator acknowledged.
    pub acknowledged_findings: Option<Vec<String>>,
    /// For `RetryStage`: the stage to run again.
    pub retry_stage: Option<vetting_probes::protocol::Stage>,
}

/// The runs service of an orchestrator (`Orchestrator::runs`).
#[derive(Debug, Clone)]
pub struct Runs {
    pub(crate) core: Orchestrator,
}

impl Orchestrator {
    /// The runs service: transitions, dispatch, deadlines.
    pub fn runs(&self) -> Runs {
        Runs { core: self.clone() }
    }
}

impl Runs {
    /// Queues the run for its orchestrator-owned states (`SpecValidate`,
    /// `Reporting`) to be resolved by the one report worker, off the
    /// request path. Must be called inside the runtime.
    pub fn queue_resolution(&self, run_id: &str) {
        if self.core.inner.reports.push(run_id) {
            tokio::spawn(report_queue::work(
                self.core.inner.reports.clone(),
                self.core.downgrade(),
            ));
        }
    }

    /// Whether the run waits in (or is being resolved by) the report
    /// worker.
    pub fn resolution_pending(&self, run_id: &str) -> bool {
        self.core.inner.reports.is_pending(run_id)
    }

    /// The runs whose power action was asked for since the last call.
    pub(crate) fn take_power_requests(&self) -> Vec<String> {
        self.core.inner.power_requests.take()
    }
}

impl report_queue::Resolve for crate::orchestrator::WeakOrchestrator {
    async fn resolve(&self, run_id: String) -> bool {
        let Some(core) = self.upgrade() else {
            return false;
        };
        if let Err(error) = core.runs().resolve_owned_states(&run_id).await {
            tracing::warn!(run = %run_id, "cannot resolve the run's reports: {error}");
        }
        true
    }

    fn alive(&self) -> bool {
        self.upgrade().is_some()
    }
}
