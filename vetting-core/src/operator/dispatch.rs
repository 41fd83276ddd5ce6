//! Pausing the dispatcher (maintenance, upgrades): queued runs wait, runs
//! in flight go on. The flag is in the database, so every orchestrator
//! process sharing it obeys, and a restart keeps it.
//!
//! While paused, only `Queued → WaitingWoL` is held back (checked inside
//! the dispatch's own transaction). Runs in flight make all their own
//! transitions, and an operator's override or stage retry of a held run
//! still takes a slot: those are acts on a run already started, not new
//! runs.

use crate::error::{Result, db};
use crate::machine::RunState;
use crate::model::Actor;
use crate::store::audit;

use super::{DispatchStatus, Operator, RunMetrics};

impl Operator {
    /// Stops starting new runs. Audited; idempotent.
    pub async fn pause_dispatch(&self, actor: &Actor) -> Result<DispatchStatus> {
        self.set_dispatch_paused(true, actor).await
    }

    /// Starts new runs again (and wakes the dispatcher). Audited; idempotent.
    pub async fn resume_dispatch(&self, actor: &Actor) -> Result<DispatchStatus> {
        let status = self.set_dispatch_paused(false, actor).await?;
        self.core.poke();
        Ok(status)
    }

    async fn set_dispatch_paused(&self, paused: bool, actor: &Actor) -> Result<DispatchStatus> {
        let doing = if paused {
            "pausing the dispatcher"
        } else {
            "resuming the dispatcher"
        };
        let now = self.core.now_ms();
        let txn = self.core.begin_write(doing).await?;
        let changed = crate::store::dispatcher_state::set_paused(&txn, paused, actor.as_str(), now)
            .await
            .map_err(db(doing))?;
        audit::record(
            &txn,
            now,
            audit::Entry::new(
                actor,
                if paused {
                    "pause_dispatch"
                } else {
                    "resume_dispatch"
                },
            )
            .detail(serde_json::json!({"changed": changed})),
        )
        .await?;
        txn.commit().await.map_err(db(doing))?;
        self.dispatch_status().await
    }

    pub async fn dispatch_status(&self) -> Result<DispatchStatus> {
        let state = crate::store::dispatcher_state::get(self.core.conn())
            .await
            .map_err(db("reading the dispatcher's state"))?;
        let slots = crate::store::slots::usage(self.core.conn()).await?;
        let queued = crate::store::runs::count_in_state(self.core.conn(), RunState::Queued).await?;
        Ok(DispatchStatus {
            paused: state.paused,
            paused_by: state.paused_by,
            paused_at_ms: state.paused_at_ms,
            slots_total: self.core.config().dispatcher.max_in_flight,
            slots_in_use: slots.in_use,
            queued,
        })
    }

    /// What `/metrics` exports from the database: three small queries
    /// (runs `GROUP BY state`, the slot rows, failed stage attempts
    /// `GROUP BY stage`).
    pub async fn run_metrics(&self) -> Result<RunMetrics> {
        let counted = crate::store::runs::count_by_state(self.core.conn()).await?;
        let count_of = |state: RunState| {
            counted
                .iter()
                .find(|(name, _)| name == state.as_str())
                .map_or(0, |(_, count)| (*count).max(0) as u64)
        };
        let runs_by_state: Vec<(RunState, u64)> = RunState::ALL
            .into_iter()
            .map(|state| (state, count_of(state)))
            .collect();
        let slots = crate::store::slots::usage(self.core.conn()).await?;
        let stage_failures = crate::store::stages::failures_by_stage(self.core.conn())
            .await
            .map_err(db("counting failed stage attempts"))?
            .into_iter()
            .map(|(stage, count)| (stage, count.max(0) as u64))
            .collect();
        Ok(RunMetrics {
            queued: count_of(RunState::Queued),
            runs_by_state,
            slots_total: self.core.config().dispatcher.max_in_flight,
            slots_in_use: slots.in_use,
            stage_failures,
        })
    }
}
