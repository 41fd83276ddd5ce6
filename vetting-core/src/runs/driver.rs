//! The driver of the state machine: every transition is decided by
//! [`crate::machine::decide`], persisted compare-and-set (run row, stage
//! rows, transition log, dispatcher slot and audit record in one
//! transaction), announced on the events hub after the commit, and its
//! effects carried out.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, TransactionTrait,
};

use crate::clock::Millis;
use crate::error::{OrchestratorError, Result, db};
use crate::events::HubEvent;
use crate::machine::{
    Effect, Event, HoldReason, Input, InvalidTransition, NotificationKind, Refusal, RunState,
    SlotOp, Stage, StageOp, Transition, decide,
};
use crate::model::{Actor, Applied, Run};
use crate::notify::Notification;
use crate::runs::EventContext;
use crate::store::audit;
use crate::store::entities::{run, slot, stage, transition};

use super::Runs;

impl Runs {
    /// Applies `event` to a run: [`decide`] by the table, persist the
    /// transition compare-and-set (retrying on a concurrent
    /// non-conflicting change), announce it, then carry out its effects.
    /// `ValidateSpec` is left to the caller: the result that led to
    /// SpecValidate resolves it inside its request.
    pub async fn apply(
        &self,
        run_id: &str,
        event: Event,
        context: EventContext,
    ) -> Result<Applied> {
        for _ in 0..20 {
            let run = self.core.run(run_id).await?;
            if let Some(expected) = context.expected_state
                && run.state != expected
            {
                return Err(OrchestratorError::InvalidTransition {
                    run_id: run_id.to_string(),
                    source: InvalidTransition {
                        state: run.state,
                        event,
                    },
                });
            }
            if let Some(version) = context.expected_version
                && run.version != version
            {
                return Err(OrchestratorError::Conflict {
                    run_id: run_id.to_string(),
                });
            }
            // what an override is checked against (read before deciding)
            let (held, storage_attempts) =
                if event == Event::OverrideWipe && run.state == RunState::FailedHolding {
                    let held: Vec<String> = self
                        .core
                        .operator()
                        .held_findings(&run.id)
                        .await?
                        .into_iter()
                        .map(|finding| finding.id)
                        .collect();
                    (held, self.storage_attempts(&run.id).await?)
                } else {
                    (Vec::new(), 0)
                };
            let input = Input {
                reason: context.reason.as_deref(),
                hold_reason: context.hold_reason,
                outcome: context.outcome.as_deref(),
                acknowledged_findings: context.acknowledged_findings.as_deref(),
                held_finding_ids: &held,
                storage_attempts,
            };
            let transition = decide(
                &run,
                event,
                &input,
                &self.core.inner.config.deadlines,
                self.core.now_ms(),
            )
            .map_err(|refusal| refused(run_id, refusal))?;
            match self.persist(&run, &transition, &context).await {
                Ok(Persisted {
                    announced,
                    last_transition_id,
                }) => {
                    for hub_event in announced {
                        self.core.inner.hub.publish(hub_event);
                    }
                    self.carry_out(&run, &transition, &context, last_transition_id);
                    return Ok(Applied {
                        from: run.state,
                        to: transition.entered(),
                        state: transition.run.state,
                        event,
                        effects: transition.effects,
                    });
                }
                Err(OrchestratorError::Conflict { .. }) if context.expected_version.is_none() => {
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
        Err(OrchestratorError::Conflict {
            run_id: run_id.to_string(),
        })
    }

    /// Applies `event` unless the run has moved on: `Ok(None)` when
    /// another request or process got there first (the table refuses the
    /// event in the run's new state, or the expected version changed).
    pub async fn apply_unless_moved(
        &self,
        run_id: &str,
        event: Event,
        context: EventContext,
    ) -> Result<Option<Applied>> {
        match self.apply(run_id, event, context).await {
            Ok(applied) => Ok(Some(applied)),
            Err(
                OrchestratorError::InvalidTransition { .. } | OrchestratorError::Conflict { .. },
            ) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The effects of a committed transition that run beside the request:
    /// the power action, the report worker, the dispatcher, the notifiers.
    fn carry_out(
        &self,
        run: &Run,
        transition: &Transition,
        context: &EventContext,
        transition_id: Option<i64>,
    ) {
        for effect in &transition.effects {
            match effect {
                Effect::PowerOn => {
                    self.core.inner.power_requests.request(&run.id);
                    self.core.poke();
                }
                Effect::WriteReport => self.queue_resolution(&run.id),
                Effect::WakeDispatcher => self.core.poke(),
                // all of the transition's notices at once, below
                Effect::Notify(_) => {}
                // the result that led to SpecValidate resolves it
                Effect::ValidateSpec => {}
            }
        }
        let notices: Vec<NotificationKind> = transition
            .effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Notify(kind) => Some(*kind),
                _ => None,
            })
            .collect();
        if !notices.is_empty() {
            self.notify(run, notices, transition, context, transition_id);
        }
    }

    /// How many Storage attempts a run has had.
    async fn storage_attempts(&self, run_id: &str) -> Result<u32> {
        let attempts = stage::Entity::find()
            .filter(stage::Column::RunId.eq(run_id))
            .filter(stage::Column::Stage.eq(Stage::Storage.as_str()))
            .count(self.core.conn())
            .await
            .map_err(db("counting storage attempts"))?;
        Ok(u32::try_from(attempts).unwrap_or(u32::MAX - 1))
    }

    /// One transaction: CAS the run row first (so SQLite takes the write
    /// lock before any read), then the result's data, the slot, the stage
    /// rows, the transition log and the audit record.
    async fn persist(
        &self,
        run: &Run,
        transition: &Transition,
        context: &EventContext,
    ) -> Result<Persisted> {
        let now = self.core.now_ms();
        let actor = context.actor.clone().unwrap_or_else(Actor::orchestrator);
        let next = &transition.run;
        let txn = self
            .core
            .conn()
            .begin_with_options(crate::store::WRITE)
            .await
            .map_err(db("applying a transition"))?;
        let encoding = |what: &'static str| {
            move |error: serde_json::Error| {
                OrchestratorError::Internal(format!("encoding {what}: {error}"))
            }
        };
        let acknowledged_json = if next.acknowledged_findings.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&next.acknowledged_findings)
                    .map_err(encoding("acknowledged finding ids"))?,
            )
        };
        let wipe_findings_json = match &context.wipe_findings {
            Some(findings) => {
                Some(serde_json::to_string(findings).map_err(encoding("wipe-probe findings"))?)
            }
            None => None,
        };

        // 1. compare-and-set the run row
        let updated = run::Entity::update_many()
            .col_expr(run::Column::State, Expr::value(next.state.as_str()))
            .col_expr(run::Column::Version, Expr::value(run.version + 1))
            .col_expr(
                run::Column::HoldReason,
                Expr::value(next.hold_reason.map(|r| r.as_str().to_string())),
            )
            .col_expr(
                run::Column::FailureReason,
                Expr::value(next.failure_reason.clone()),
            )
            .col_expr(
                run::Column::CurrentStage,
                Expr::value(next.current.map(|c| c.stage.as_str().to_string())),
            )
            .col_expr(
                run::Column::CurrentAttempt,
                Expr::value(next.current.map(|c| c.attempt as i32)),
            )
            .col_expr(
                run::Column::StateDeadlineMs,
                Expr::value(next.state_deadline_ms),
            )
            .col_expr(
                run::Column::HeartbeatDeadlineMs,
                Expr::value(next.heartbeat_deadline_ms),
            )
            .col_expr(
                run::Column::OverrideFlags,
                Expr::value(if next.override_flags.is_empty() {
                    None
                } else {
                    Some(next.override_flags.join(","))
                }),
            )
            .col_expr(
                run::Column::AcknowledgedFindings,
                Expr::value(acknowledged_json),
            )
            .col_expr(run::Column::QueuedAtMs, Expr::value(next.queued_at_ms))
            .col_expr(run::Column::HelloAtMs, Expr::value(next.hello_at_ms))
            .col_expr(run::Column::ClaimedAtMs, Expr::value(next.claimed_at_ms))
            .col_expr(run::Column::EndedAtMs, Expr::value(next.ended_at_ms))
            .col_expr(run::Column::UpdatedAtMs, Expr::value(now))
            .filter(run::Column::Id.eq(run.id.as_str()))
            .filter(run::Column::Version.eq(run.version))
            .filter(run::Column::State.eq(run.state.as_str()))
            .exec(&txn)
            .await
            .map_err(db("updating a run"))?;
        if updated.rows_affected != 1 {
            return Err(OrchestratorError::Conflict {
                run_id: run.id.clone(),
            });
        }
        // what a stage result stores beside its transition
        if let Some(data) = &context.stage_data {
            crate::agent::write_stage_data(&txn, &run.id, data, now)
                .await
                .map_err(db("storing a result's inventory and measurements"))?;
        }

        // 2. the dispatcher slot
        match transition.slot {
            SlotOp::Take => self.take_slot(&txn, &run.id).await?,
            SlotOp::Free => {
                slot::Entity::update_many()
                    .col_expr(slot::Column::RunId, Expr::value(Option::<String>::None))
                    .filter(slot::Column::RunId.eq(run.id.as_str()))
                    .exec(&txn)
                    .await
                    .map_err(db("freeing a dispatcher slot"))?;
            }
            SlotOp::Keep => {}
        }

        // 3. stage rows: close the current one, open the next
        for op in &transition.stages {
            match op {
                StageOp::Close {
                    stage: finished,
                    outcome,
                } => {
                    stage::Entity::update_many()
                        .col_expr(stage::Column::Outcome, Expr::value(outcome.as_str()))
                        .col_expr(stage::Column::Reason, Expr::value(context.reason.clone()))
                        .col_expr(stage::Column::FinishedAtMs, Expr::value(now))
                        .col_expr(
                            stage::Column::Verdict,
                            Expr::value(context.verdict_json.clone()),
                        )
                        .col_expr(
                            stage::Column::AgentVerdict,
                            Expr::value(context.agent_verdict_json.clone()),
                        )
                        .col_expr(
                            stage::Column::WipeFindings,
                            Expr::value(wipe_findings_json.clone()),
                        )
                        .filter(stage::Column::RunId.eq(run.id.as_str()))
                        .filter(stage::Column::Stage.eq(finished.stage.as_str()))
                        .filter(stage::Column::Attempt.eq(finished.attempt as i32))
                        .filter(stage::Column::FinishedAtMs.is_null())
                        .exec(&txn)
                        .await
                        .map_err(db("closing a stage"))?;
                }
                StageOp::Open { stage: next } => {
                    open_stage(&txn, &run.id, next.stage.as_str(), next.attempt, now).await?;
                }
                StageOp::OpenSpecValidate => {
                    // the orchestrator-owned stage is recorded as a stage row too
                    open_stage(&txn, &run.id, RunState::SpecValidate.as_str(), 1, now).await?;
                }
                StageOp::CloseSpecValidate { outcome } => {
                    stage::Entity::update_many()
                        .col_expr(stage::Column::Outcome, Expr::value(outcome.as_str()))
                        .col_expr(stage::Column::Reason, Expr::value(context.reason.clone()))
                        .col_expr(stage::Column::FinishedAtMs, Expr::value(now))
                        .filter(stage::Column::RunId.eq(run.id.as_str()))
                        .filter(stage::Column::Stage.eq(RunState::SpecValidate.as_str()))
                        .filter(stage::Column::FinishedAtMs.is_null())
                        .exec(&txn)
                        .await
                        .map_err(db("closing SpecValidate"))?;
                }
            }
        }

        // 4. the transition log (with the automatic hold after a failure)
        let detail = context.reason.clone();
        let mut announced = Vec::new();
        let mut last_transition_id = None;
        for step in &transition.steps {
            let recorded = transition::ActiveModel {
                run_id: Set(run.id.clone()),
                from_state: Set(step.from.as_str().to_string()),
                to_state: Set(step.to.as_str().to_string()),
                event: Set(step.event.as_str().to_string()),
                actor: Set(actor.as_str().to_string()),
                at_ms: Set(now),
                detail: Set(detail.clone()),
                ..Default::default()
            }
            .insert(&txn)
            .await
            .map_err(db("recording a transition"))?;
            last_transition_id = Some(recorded.id);
            announced.push(HubEvent::Transition {
                run_id: run.id.clone(),
                host_id: run.host_id,
                from: step.from,
                to: step.to,
                event: step.event,
                at_ms: now,
            });
        }

        // 5. operator actions leave an audit record
        if transition.audit {
            let event = transition.steps.first().map(|step| step.event);
            let mut detail = serde_json::json!({"from": run.state, "to": next.state});
            if let Some(ids) = &context.acknowledged_findings {
                detail["acknowledged_findings"] = serde_json::json!(ids);
            }
            audit::record(
                &txn,
                now,
                audit::Entry::new(&actor, event.map_or("transition", Event::as_str))
                    .run(&run.id)
                    .host(run.host_id)
                    .acknowledged(context.acknowledged.clone())
                    .detail(detail),
            )
            .await?;
        }
        txn.commit().await.map_err(db("committing a transition"))?;
        Ok(Persisted {
            announced,
            last_transition_id,
        })
    }

    /// Tells the notifiers of a committed transition: what happened, to
    /// which run and host, in which stage, why. Fire-and-forget, in a task
    /// of its own (the host's name is read there), so neither a slow
    /// notifier nor the lookup delays the request that made the
    /// transition. The notices of one transition are handed over in the
    /// table's order; each target delivers them in a task of its own.
    fn notify(
        &self,
        run: &Run,
        kinds: Vec<NotificationKind>,
        transition: &Transition,
        context: &EventContext,
        transition_id: Option<i64>,
    ) {
        let notifiers = self.core.notifiers().clone();
        if notifiers.is_empty() {
            return;
        }
        let stage = run.current.map_or_else(
            || run.state.as_str().to_string(),
            |current| current.stage.as_str().to_string(),
        );
        let reason = transition
            .run
            .failure_reason
            .clone()
            .or_else(|| context.reason.clone());
        let (core, run_id, host_id, now) = (
            self.core.clone(),
            run.id.clone(),
            run.host_id,
            self.core.now_ms(),
        );
        tokio::spawn(async move {
            let host_name = match core.host(host_id).await {
                Ok(host) => Some(host.name),
                Err(error) => {
                    tracing::warn!(run = %run_id, "notify: cannot read the host: {error}");
                    None
                }
            };
            for kind in kinds {
                let mut notification =
                    Notification::new(kind, run_id.clone(), host_id, now).stage(stage.clone());
                if let Some(reason) = &reason {
                    notification = notification.reason(reason.clone());
                }
                if let Some(id) = transition_id {
                    notification = notification.transition_id(id);
                }
                if let Some(name) = &host_name {
                    notification = notification.host_name(name.clone());
                }
                notifiers.notify(notification);
            }
        });
    }
}

/// A refusal of the table as the orchestrator's error.
fn refused(run_id: &str, refusal: Refusal) -> OrchestratorError {
    match refusal {
        Refusal::Invalid(source) => OrchestratorError::InvalidTransition {
            run_id: run_id.to_string(),
            source,
        },
        Refusal::NotOverridable { reason } => OrchestratorError::OverrideRefused {
            run_id: run_id.to_string(),
            reason: reason.map_or("none", HoldReason::as_str).to_string(),
        },
        Refusal::Acknowledgement(message) => OrchestratorError::BadRequest(message),
    }
}

/// Opens the row of a stage attempt.
async fn open_stage(
    txn: &DatabaseTransaction,
    run_id: &str,
    stage_name: &str,
    attempt: u32,
    now: Millis,
) -> Result<()> {
    stage::ActiveModel {
        run_id: Set(run_id.to_string()),
        stage: Set(stage_name.to_string()),
        attempt: Set(attempt as i32),
        outcome: Set("running".into()),
        reason: Set(None),
        started_at_ms: Set(now),
        finished_at_ms: Set(None),
        agent_verdict: Set(None),
        verdict: Set(None),
        response: Set(None),
        wipe_findings: Set(None),
    }
    .insert(txn)
    .await
    .map_err(db("opening a stage"))?;
    Ok(())
}

/// What a committed transition leaves for after the commit.
struct Persisted {
    announced: Vec<HubEvent>,
    /// The id of the last transition log row written (the automatic hold's
    /// when there is one).
    last_transition_id: Option<i64>,
}
