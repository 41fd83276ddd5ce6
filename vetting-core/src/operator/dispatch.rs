//! Pausing the dispatcher (maintenance, upgrades): queued runs wait, runs
//! in flight go on. The flag is in the database, so every orchestrator
//! process sharing it obeys, and a restart keeps it.

use crate::error::Result;
use crate::model::Actor;

use super::{DispatchStatus, Operator, RunMetrics};

impl Operator {
    /// Stops starting new runs. Audited; idempotent.
    pub async fn pause_dispatch(&self, actor: &Actor) -> Result<DispatchStatus> {
        let _ = actor;
        todo!("issue 11: dispatch pause")
    }

    /// Starts new runs again (and wakes the dispatcher). Audited; idempotent.
    pub async fn resume_dispatch(&self, actor: &Actor) -> Result<DispatchStatus> {
        let _ = actor;
        todo!("issue 11: dispatch pause")
    }

    pub async fn dispatch_status(&self) -> Result<DispatchStatus> {
        todo!("issue 11: dispatch pause")
    }

    /// What `/metrics` exports from the database.
    pub async fn run_metrics(&self) -> Result<RunMetrics> {
        todo!("issue 11: metrics")
    }
}
