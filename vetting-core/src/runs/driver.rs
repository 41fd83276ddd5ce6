//! The driver of the state machine: every transition is decided by
//! [`crate::machine::decide`], persisted compare-and-set (run row, stage
//! rows, transition log, dispatcher slot and audit record in one
//! transaction), announced on the events hub after the commit, and its
//! effects carried out.

use crate::error::{OrchestratorError, Result, db};
use crate::events::HubEvent;
use crate::machine::{
    Effect, Event, HoldReason, Input, InvalidTransition, NotificationKind, Refusal, RunState,
    SlotOp, Stage, StageOp, Transition, decide,
};
use crate::model::{Actor, Applied, Run};
use crate::notify::Notification;
use crate::runs::EventContext;
use crate::store::{self, audit};

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
            // what a retry is checked against: where the run failed, and
            // the retried stage's attempts so far
            let (failed_in, retry_attempts) = match context.retry_stage {
                Some(stage)
                    if event == Event::RetryStage && run.state == RunState::FailedHolding =>
                {
                    (
                        self.failed_in(&run.id).await?,
                        self.stage_attempts(&run.id, stage).await?,
                    )
                }
                _ => (None, 0),
            };
            let input = Input {
                reason: context.reason.as_deref(),
                hold_reason: context.hold_reason,
                outcome: context.outcome.as_deref(),
                acknowledged_findings: context.acknowledged_findings.as_deref(),
                held_finding_ids: &held,
                storage_attempts,
                retry_stage: context.retry_stage,
                failed_in,
                retry_attempts,
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
        self.stage_attempts(run_id, Stage::Storage).await
    }

    /// How many attempts of `stage` a run has had.
    async fn stage_attempts(&self, run_id: &str, stage: Stage) -> Result<u32> {
        let attempts = store::stages::attempts(self.core.conn(), run_id, stage.as_str())
            .await
            .map_err(db("counting stage attempts"))?;
        Ok(u32::try_from(attempts).unwrap_or(u32::MAX - 1))
    }

    /// The state whose failure opened a run's current hold, from the
    /// transition log (in commit order): the `from` of the last step into
    /// `FailedHolding`, or of the `Failed` step before the automatic hold.
    async fn failed_in(&self, run_id: &str) -> Result<Option<RunState>> {
        let log = store::transitions::list(self.core.conn(), Some(run_id)).await?;
        let mut steps = log.iter().rev();
        let Some(hold) = steps.find(|step| step.to == RunState::FailedHolding.as_str()) else {
            return Ok(None);
        };
        let from = if hold.from == RunState::Failed.as_str() {
            match steps.find(|step| step.to == RunState::Failed.as_str()) {
                Some(failure) => failure.from.as_str(),
                None => return Ok(None),
            }
        } else {
            hold.from.as_str()
        };
        Ok(RunState::parse(from))
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
        let txn = self.core.begin_write("applying a transition").await?;
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
        let updated = store::runs::compare_and_set(&txn, run, next, acknowledged_json, now)
            .await
            .map_err(db("updating a run"))?;
        if !updated {
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

        // a queued run starts only while the dispatcher is not paused
        // (read in this transaction: see `store::dispatcher_state`)
        if transition.steps.first().map(|step| step.event) == Some(Event::Dispatch)
            && store::dispatcher_state::paused_for_dispatch(&txn)
                .await
                .map_err(db("reading whether the dispatcher is paused"))?
        {
            return Err(OrchestratorError::DispatchPaused);
        }

        // 2. the dispatcher slot
        match transition.slot {
            SlotOp::Take => self.take_slot(&txn, &run.id).await?,
            SlotOp::Free => store::slots::free(&txn, &run.id)
                .await
                .map_err(db("freeing a dispatcher slot"))?,
            SlotOp::Keep => {}
        }

        // 3. stage rows: close the current one, open the next
        let closing = store::stages::Closing {
            reason: context.reason.clone(),
            verdict: context.verdict_json.clone(),
            agent_verdict: context.agent_verdict_json.clone(),
            wipe_findings: wipe_findings_json,
        };
        for op in &transition.stages {
            match op {
                StageOp::Close { stage, outcome } => {
                    store::stages::close(&txn, &run.id, *stage, outcome, closing.clone(), now)
                        .await
                        .map_err(db("closing a stage"))?;
                }
                StageOp::Open { stage } => {
                    store::stages::open(&txn, &run.id, stage.stage.as_str(), stage.attempt, now)
                        .await
                        .map_err(db("opening a stage"))?;
                }
                StageOp::OpenSpecValidate => {
                    // the orchestrator-owned stage is recorded as a stage row too
                    store::stages::open(&txn, &run.id, RunState::SpecValidate.as_str(), 1, now)
                        .await
                        .map_err(db("opening SpecValidate"))?;
                }
                StageOp::CloseSpecValidate { outcome } => {
                    store::stages::close_spec_validate(
                        &txn,
                        &run.id,
                        outcome,
                        context.reason.clone(),
                        now,
                    )
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
            let id = store::transitions::record(&txn, &run.id, *step, &actor, now, detail.clone())
                .await
                .map_err(db("recording a transition"))?;
            last_transition_id = Some(id);
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
            if let (Some(Event::RetryStage), Some(stage)) = (event, context.retry_stage) {
                detail["stage"] = serde_json::json!(stage.as_str());
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
        Refusal::Acknowledgement(message) | Refusal::NotRetryable(message) => {
            OrchestratorError::BadRequest(message)
        }
    }
}

/// What a committed transition leaves for after the commit.
struct Persisted {
    announced: Vec<HubEvent>,
    /// The id of the last transition log row written (the automatic hold's
    /// when there is one).
    last_transition_id: Option<i64>,
}
