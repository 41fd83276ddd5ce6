//! Run actions and the reads behind them.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};
use vetting_probes::protocol::WipeFinding;

use crate::error::{OrchestratorError, Result, db};
use crate::machine::{Event, RunState, Stage};
use crate::model::{Actor, Applied, AuditRecord, CorruptRow, Run, StageRecord, TransitionRecord};
use crate::runs::EventContext;
use crate::store::audit;
use crate::store::entities::{measurement, run, stage};
use crate::tokens::{self};

use super::{Operator, Page, PageRequest, RunFilter};

impl Operator {
    /// Creates a run for a host, in `Registered`, with its token's nonce
    /// and bcrypt hash stored (the token itself is derived when needed).
    pub async fn create_run(&self, host_id: i64, actor: &Actor) -> Result<Run> {
        let host = self.get_host(host_id).await?;
        if host.removed_at_ms.is_some() {
            return Err(OrchestratorError::InvalidHost {
                name: host.name,
                message: "the host was removed".into(),
            });
        }
        if let Some(active) = self.active_run_of_host(host_id).await? {
            return Err(OrchestratorError::HostBusy {
                host: host.name,
                run_id: active.id,
                state: active.state,
            });
        }
        let run_id = uuid::Uuid::new_v4().to_string();
        let issued =
            tokens::issue_with_cost(&self.core.inner.key, &run_id, self.core.inner.bcrypt_cost)
                .map_err(OrchestratorError::Unauthorized)?;
        let now = self.core.now_ms();
        let txn = self.core.begin_write("creating a run").await?;
        run::ActiveModel {
            id: Set(run_id.clone()),
            host_id: Set(host_id),
            state: Set(RunState::Registered.as_str().to_string()),
            version: Set(0),
            hold_reason: Set(None),
            failure_reason: Set(None),
            current_stage: Set(None),
            current_attempt: Set(None),
            state_deadline_ms: Set(None),
            heartbeat_deadline_ms: Set(None),
            last_heartbeat_ms: Set(None),
            token_nonce: Set(issued.nonce_hex),
            token_hash: Set(issued.bcrypt_hash),
            token_hash_scheme: Set(Some(issued.scheme.as_str().to_string())),
            claimed_at_ms: Set(None),
            hello_at_ms: Set(None),
            hold_on_failure: Set(self.core.inner.config.runs.hold_on_failure),
            override_flags: Set(None),
            acknowledged_findings: Set(None),
            queued_at_ms: Set(None),
            created_at_ms: Set(now),
            updated_at_ms: Set(now),
            ended_at_ms: Set(None),
            next_log_seq: Set(0),
            next_sensor_seq: Set(0),
            created_by: Set(actor.as_str().to_string()),
        }
        .insert(&txn)
        .await
        .map_err(db("creating a run"))?;
        audit::record(
            &txn,
            now,
            audit::Entry::new(actor, "create_run")
                .run(&run_id)
                .host(host_id),
        )
        .await?;
        txn.commit().await.map_err(db("creating a run"))?;
        self.get_run(&run_id).await
    }

    /// Starts a run on each of `host_ids`, in order: each host gets its
    /// run or the reason it could not (busy, removed, unknown), and one
    /// host's refusal does not stop the others. Duplicates are started once.
    pub async fn start_runs(&self, host_ids: &[i64], actor: &Actor) -> Vec<(i64, Result<Run>)> {
        let mut started: Vec<(i64, Result<Run>)> = Vec::with_capacity(host_ids.len());
        for &host_id in host_ids {
            if started.iter().any(|(seen, _)| *seen == host_id) {
                continue;
            }
            started.push((host_id, self.start_run(host_id, actor).await));
        }
        started
    }

    /// Creates a run and queues it: what an operator's "start" does.
    pub async fn start_run(&self, host_id: i64, actor: &Actor) -> Result<Run> {
        let run = self.create_run(host_id, actor).await?;
        self.core
            .runs()
            .apply(
                &run.id,
                Event::Enqueue,
                EventContext {
                    actor: Some(actor.clone()),
                    ..Default::default()
                },
            )
            .await?;
        self.core.poke();
        self.get_run(&run.id).await
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        crate::store::runs::get(self.core.conn(), run_id).await
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, host_id: Option<i64>) -> Result<Vec<Run>> {
        crate::store::runs::list(self.core.conn(), host_id).await
    }

    /// One page of runs, newest first (by creation time, then id),
    /// filtered by state and host, through an index.
    pub async fn list_runs_page(&self, filter: RunFilter, page: PageRequest) -> Result<Page<Run>> {
        let limit = super::pages::limit_of(&page)?;
        let after = page
            .before
            .as_deref()
            .map(super::pages::parse_run_cursor)
            .transpose()?;
        let (items, more) = crate::store::runs::page(
            self.core.conn(),
            filter.state,
            filter.host_id,
            after.as_ref(),
            limit,
        )
        .await?;
        let next = match items.last() {
            Some(last) if more => Some(super::pages::run_cursor(&crate::store::runs::RunsAfter {
                created_at_ms: last.created_at_ms,
                id: last.id.clone(),
            })),
            _ => None,
        };
        Ok(Page { items, next })
    }

    /// Re-runs `stage` of a held run (after a repair) as a new attempt,
    /// behind the same gates (Storage's wipe probe runs again first, and
    /// the dispatcher slot is taken again). Refused unless the run is in
    /// `FailedHolding` and `stage` is a testing stage at or before the
    /// failed one. Audited.
    pub async fn retry_stage(&self, run_id: &str, stage: Stage, actor: &Actor) -> Result<Applied> {
        self.core
            .runs()
            .apply(
                run_id,
                Event::RetryStage,
                EventContext {
                    actor: Some(actor.clone()),
                    retry_stage: Some(stage),
                    ..Default::default()
                },
            )
            .await
    }

    /// The host's run that has not ended, if any (a host has at most one).
    pub async fn active_run_of_host(&self, host_id: i64) -> Result<Option<Run>> {
        for run in self.list_runs(Some(host_id)).await? {
            if !run.state.is_terminal() {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

    /// Cancels a run from any non-terminal state.
    pub async fn cancel(
        &self,
        run_id: &str,
        actor: &Actor,
        acknowledged: Option<String>,
    ) -> Result<Applied> {
        let reason = format!("cancelled by {}", actor.as_str());
        self.act(run_id, Event::Cancel, actor, acknowledged, Some(reason))
            .await
    }

    /// Releases a held host: the agent shuts down.
    pub async fn release(
        &self,
        run_id: &str,
        actor: &Actor,
        acknowledged: Option<String>,
    ) -> Result<Applied> {
        self.act(run_id, Event::Release, actor, acknowledged, None)
            .await
    }

    /// An operator's `event` on a run, in the actor's name, with what the
    /// operator acknowledged (the audit records both).
    async fn act(
        &self,
        run_id: &str,
        event: Event,
        actor: &Actor,
        acknowledged: Option<String>,
        reason: Option<String>,
    ) -> Result<Applied> {
        self.core
            .runs()
            .apply(
                run_id,
                event,
                EventContext {
                    actor: Some(actor.clone()),
                    acknowledged,
                    reason,
                    ..Default::default()
                },
            )
            .await
    }

    /// Overrides a wipe-probe hold: Storage runs again as a new attempt,
    /// which writes only disks whose every finding is among `acknowledged`
    /// (finding ids of the hold, see [`Operator::held_findings`]) and
    /// holds again on anything else. Refused for any other hold (a
    /// bad-block failure cannot be overridden), for no ids, and for an id
    /// that is not among the hold's findings. The ids are recorded in the
    /// audit (as `acknowledged` and in its detail).
    pub async fn override_wipe(
        &self,
        run_id: &str,
        actor: &Actor,
        acknowledged: Vec<String>,
    ) -> Result<Applied> {
        let mut ids: Vec<String> = Vec::new();
        for id in acknowledged {
            let id = id.trim().to_string();
            if !id.is_empty() && !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(OrchestratorError::BadRequest(
                "an override must name the wipe-probe findings it acknowledges (their ids)".into(),
            ));
        }
        self.core
            .runs()
            .apply(
                run_id,
                Event::OverrideWipe,
                EventContext {
                    actor: Some(actor.clone()),
                    acknowledged: Some(ids.join(", ")),
                    acknowledged_findings: Some(ids),
                    ..Default::default()
                },
            )
            .await
    }

    /// The wipe-probe findings of a run's last Storage attempt (what a
    /// wipe hold asks the operator to acknowledge).
    pub async fn held_findings(&self, run_id: &str) -> Result<Vec<WipeFinding>> {
        let row = stage::Entity::find()
            .filter(stage::Column::RunId.eq(run_id))
            .filter(stage::Column::Stage.eq(Stage::Storage.as_str()))
            .order_by_desc(stage::Column::Attempt)
            .one(self.core.conn())
            .await
            .map_err(db("reading the last Storage attempt"))?;
        match row.and_then(|row| row.wipe_findings) {
            Some(text) => serde_json::from_str(&text).map_err(|_| {
                OrchestratorError::Corrupt(CorruptRow {
                    run_id: run_id.to_string(),
                    field: "wipe_findings",
                    value: text,
                })
            }),
            None => Ok(Vec::new()),
        }
    }

    /// The transition log, in commit order (by id).
    pub async fn transitions(&self, run_id: Option<&str>) -> Result<Vec<TransitionRecord>> {
        crate::store::transitions::list(self.core.conn(), run_id).await
    }

    pub async fn audit_log(&self, run_id: Option<&str>) -> Result<Vec<AuditRecord>> {
        Ok(audit::list(self.core.conn(), run_id).await?)
    }

    pub async fn stages(&self, run_id: &str) -> Result<Vec<StageRecord>> {
        crate::store::stages::list(self.core.conn(), run_id).await
    }

    /// The sequence numbers of the sensor samples stored for a run, in
    /// order (what the exactly-once checks count).
    pub async fn sensor_sequence_numbers(&self, run_id: &str) -> Result<Vec<i64>> {
        let mut seqs: Vec<i64> = measurement::Entity::find()
            .filter(measurement::Column::RunId.eq(run_id))
            .filter(measurement::Column::Seq.is_not_null())
            .all(self.core.store().db())
            .await
            .map_err(db("reading sensor samples"))?
            .into_iter()
            .filter_map(|row| row.seq)
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }
}
