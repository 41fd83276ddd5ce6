//! `decide`: a run, an event and its facts in, the whole transition out.
//! Pure: the driver reads what it needs first (the hold's finding ids, the
//! Storage attempts so far), persists the result compare-and-set and
//! carries out its effects after the commit.

use vetting_probes::protocol::StageRef;

use super::table::{Effect, Guard, InvalidTransition, Row, Trigger, automatic_from, lookup};
use super::{Event, HoldReason, RunState, Stage, state_of};
use crate::clock::Millis;
use crate::config::DeadlinesConfig;
use crate::model::Run;

/// The facts an event brings that are not in the run row.
#[derive(Debug, Clone, Copy, Default)]
pub struct Input<'a> {
    /// The reason shown to the operator (failures, holds, spec outcomes).
    pub reason: Option<&'a str>,
    /// For `StageHeld`: why the stage held the run.
    pub hold_reason: Option<HoldReason>,
    /// The outcome recorded on the stage row that closes (`warned`, ...),
    /// when it says more than the event.
    pub outcome: Option<&'a str>,
    /// For `OverrideWipe`: the finding ids the operator acknowledges.
    pub acknowledged_findings: Option<&'a [String]>,
    /// For `OverrideWipe`: the finding ids the hold lists.
    pub held_finding_ids: &'a [String],
    /// For `OverrideWipe`: how many Storage attempts the run has had.
    pub storage_attempts: u32,
    /// For `RetryStage`: the stage the operator retries.
    pub retry_stage: Option<Stage>,
    /// For `RetryStage`: the state whose failure opened the hold (a
    /// testing stage, `SpecValidate`, or `WaitingWoL`/`Booting` when the
    /// host never ran a stage); `None` when unknown.
    pub failed_in: Option<RunState>,
    /// For `RetryStage`: how many attempts the retried stage has had.
    pub retry_attempts: u32,
}

/// Why `decide` refused an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Invalid(#[from] InvalidTransition),
    /// Only a wipe-probe hold can be overridden.
    #[error("the hold ({}) cannot be overridden; only wipe-probe holds can", .reason.map_or("none", HoldReason::as_str))]
    NotOverridable { reason: Option<HoldReason> },
    /// The override's finding ids are missing or not the hold's.
    #[error("{0}")]
    Acknowledgement(String),
    /// A stage retry the hold does not allow.
    #[error("{0}")]
    NotRetryable(String),
}

/// One step of the transition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub from: RunState,
    pub to: RunState,
    pub event: Event,
}

/// The run row after the transition (the columns `decide` owns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUpdate {
    pub state: RunState,
    pub hold_reason: Option<HoldReason>,
    pub failure_reason: Option<String>,
    pub current: Option<StageRef>,
    pub override_flags: Vec<String>,
    pub acknowledged_findings: Vec<String>,
    pub state_deadline_ms: Option<Millis>,
    pub heartbeat_deadline_ms: Option<Millis>,
    pub queued_at_ms: Option<Millis>,
    pub hello_at_ms: Option<Millis>,
    pub claimed_at_ms: Option<Millis>,
    pub ended_at_ms: Option<Millis>,
}

impl RunUpdate {
    fn of(run: &Run) -> RunUpdate {
        RunUpdate {
            state: run.state,
            hold_reason: run.hold_reason,
            failure_reason: run.failure_reason.clone(),
            current: run.current,
            override_flags: run.override_flags.clone(),
            acknowledged_findings: run.acknowledged_findings.clone(),
            state_deadline_ms: run.state_deadline_ms,
            heartbeat_deadline_ms: run.heartbeat_deadline_ms,
            queued_at_ms: run.queued_at_ms,
            hello_at_ms: run.hello_at_ms,
            claimed_at_ms: run.claimed_at_ms,
            ended_at_ms: run.ended_at_ms,
        }
    }
}

/// What happens to the stage rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOp {
    /// Close the open row of this agent stage attempt with `outcome`.
    Close { stage: StageRef, outcome: String },
    /// Open a row for this agent stage attempt.
    Open { stage: StageRef },
    /// Open the row of the orchestrator-owned SpecValidate.
    OpenSpecValidate,
    /// Close the row of SpecValidate with `outcome`.
    CloseSpecValidate { outcome: String },
}

/// What happens to the run's dispatcher slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOp {
    Keep,
    /// Take a free slot (refused when none is).
    Take,
    Free,
}

/// Everything one event does to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The steps for the transition log: the event's, then the automatic
    /// ones it set off (the hold after a failure).
    pub steps: Vec<Step>,
    pub run: RunUpdate,
    pub stages: Vec<StageOp>,
    pub slot: SlotOp,
    /// Carried out after the commit, in this order, each once.
    pub effects: Vec<Effect>,
    /// An operator action: it leaves an audit record.
    pub audit: bool,
}

impl Transition {
    /// The state the event's own row leads to (`Failed` when the
    /// automatic hold then moves the run on to `FailedHolding`).
    pub fn entered(&self) -> RunState {
        self.steps.first().map_or(self.run.state, |step| step.to)
    }
}

/// The outcome a closing stage row records for `event` when the event's
/// facts name none.
pub fn stage_outcome(event: Event) -> &'static str {
    match event {
        Event::StagePassed | Event::SpecPassed => "passed",
        Event::StageSkipped => "skipped",
        Event::StageFailed | Event::SpecFailed => "failed",
        Event::StageHeld => "held",
        Event::StageTimeout => "timed_out",
        Event::HeartbeatTimeout => "agent_lost",
        Event::Cancel => "cancelled",
        _ => "ended",
    }
}

fn after(now: Millis, secs: u64) -> Millis {
    now.saturating_add(crate::clock::secs_to_ms(secs))
}

/// Decides what `event` does to `run` at `now`: the table's row, the
/// automatic rows it sets off, and everything they change. Refuses a pair
/// without a row, an automatic row asked for by an outside event, and an
/// override the hold does not allow.
pub fn decide(
    run: &Run,
    event: Event,
    input: &Input<'_>,
    deadlines: &DeadlinesConfig,
    now: Millis,
) -> Result<Transition, Refusal> {
    let row = lookup(run.state, event)?;
    if row.trigger != Trigger::Event {
        return Err(InvalidTransition {
            state: run.state,
            event,
        }
        .into());
    }
    if event == Event::OverrideWipe {
        check_override(run, input)?;
    }
    let row = if event == Event::RetryStage {
        Row {
            to: state_of(check_retry(run, input)?),
            ..row
        }
    } else {
        row
    };
    let mut next = RunUpdate::of(run);
    let heartbeat = after(now, deadlines.heartbeat_silence_secs);
    match event {
        Event::Enqueue => next.queued_at_ms = Some(now),
        Event::Hello => {
            next.hello_at_ms = Some(now);
            next.heartbeat_deadline_ms = Some(heartbeat);
        }
        Event::Claim => {
            next.claimed_at_ms = Some(now);
            next.heartbeat_deadline_ms = Some(heartbeat);
        }
        _ => {}
    }

    // the stage attempt the row enters, if it enters one
    let opened = match row.to.stage() {
        Some(stage) if row.to != run.state => Some(StageRef {
            stage,
            attempt: match event {
                Event::OverrideWipe => {
                    debug_assert_eq!(stage, Stage::Storage);
                    input.storage_attempts + 1
                }
                Event::RetryStage => input.retry_attempts + 1,
                _ => 1,
            },
        }),
        _ => None,
    };
    if opened.is_some() {
        next.current = opened;
    } else if row.to.stage().is_none() {
        next.current = None;
    }

    // what the row's event records on the run
    let mut steps = vec![Step {
        from: run.state,
        to: row.to,
        event,
    }];
    let mut rows = vec![row];
    next.state = row.to;
    match event {
        Event::StageHeld => {
            next.hold_reason = input.hold_reason.or(Some(HoldReason::Failure));
            next.failure_reason = input.reason.map(str::to_string).or(next.failure_reason);
        }
        Event::OverrideWipe => {
            next.override_flags = vec!["override_wipe".to_string()];
            next.acknowledged_findings = input.acknowledged_findings.unwrap_or_default().to_vec();
            next.hold_reason = None;
            next.failure_reason = None;
            next.heartbeat_deadline_ms = Some(heartbeat);
        }
        Event::RetryStage => {
            // a retry is not an override: no disk write is acknowledged
            next.override_flags.clear();
            next.acknowledged_findings.clear();
            next.hold_reason = None;
            next.failure_reason = None;
            next.heartbeat_deadline_ms = Some(heartbeat);
        }
        _ => {}
    }
    if row.to == RunState::Failed {
        next.failure_reason = Some(
            input
                .reason
                .map_or_else(|| format!("{} in {}", event, run.state), str::to_string),
        );
    }
    // the automatic rows the new state sets off
    while let Some(auto) = automatic_from(next.state).find(|auto| holds(auto, run)) {
        steps.push(Step {
            from: next.state,
            to: auto.to,
            event: auto.event,
        });
        if auto.event == Event::HoldOpened {
            next.hold_reason = Some(HoldReason::Failure);
        }
        next.state = auto.to;
        rows.push(auto);
    }

    let state = next.state;
    if state.is_terminal() {
        next.ended_at_ms = Some(now);
    }
    next.state_deadline_ms = match state {
        RunState::WaitingWoL => Some(after(now, deadlines.power_on_secs)),
        RunState::Booting if event == Event::Hello => run.state_deadline_ms,
        RunState::Booting => Some(after(now, deadlines.boot_secs)),
        RunState::SpecValidate => Some(after(now, deadlines.spec_validate_secs)),
        state => state
            .stage()
            .map(|stage| after(now, deadlines.stage_secs(stage))),
    };
    if !state.agent_is_active() && state != RunState::Booting {
        next.heartbeat_deadline_ms = None;
    }
    // an override is armed for one Storage attempt, and kept while held
    if event != Event::OverrideWipe && !matches!(state, RunState::Storage | RunState::FailedHolding)
    {
        next.override_flags.clear();
        next.acknowledged_findings.clear();
    }

    let mut stages = Vec::new();
    if let Some(finished) = run.current
        && (next.current != run.current || state != run.state)
    {
        stages.push(StageOp::Close {
            stage: finished,
            outcome: outcome_of(input, event),
        });
    }
    if let Some(stage) = opened {
        stages.push(StageOp::Open { stage });
    }
    if row.to == RunState::SpecValidate && run.state != RunState::SpecValidate {
        stages.push(StageOp::OpenSpecValidate);
    }
    if run.state == RunState::SpecValidate && row.to != RunState::SpecValidate {
        stages.push(StageOp::CloseSpecValidate {
            outcome: outcome_of(input, event),
        });
    }

    let slot = match (run.state.holds_slot(), state.holds_slot()) {
        (false, true) => SlotOp::Take,
        (true, false) => SlotOp::Free,
        _ => SlotOp::Keep,
    };
    let mut effects: Vec<Effect> = Vec::new();
    let freed = (slot == SlotOp::Free).then_some(Effect::WakeDispatcher);
    for effect in rows
        .iter()
        .flat_map(|row| row.effects.iter().copied())
        .chain(freed)
    {
        if !effects.contains(&effect) {
            effects.push(effect);
        }
    }
    Ok(Transition {
        steps,
        run: next,
        stages,
        slot,
        effects,
        audit: event.is_operator_action(),
    })
}

fn outcome_of(input: &Input<'_>, event: Event) -> String {
    input
        .outcome
        .map_or_else(|| stage_outcome(event).to_string(), str::to_string)
}

fn holds(row: &Row, run: &Run) -> bool {
    match row.trigger {
        Trigger::Automatic(Guard::HoldOnFailure) => run.hold_on_failure,
        Trigger::Event => false,
    }
}

/// A retry must be of a hold after a failure (a wipe-probe hold is
/// overridden instead), and name a testing stage at or before the state
/// that failed: after a spec mismatch (SpecValidate) that is
/// InventoryCheck, whose new inventory is validated again; a run that
/// failed before any stage ran (power, boot) has none to retry.
fn check_retry(run: &Run, input: &Input<'_>) -> Result<Stage, Refusal> {
    match run.hold_reason {
        Some(HoldReason::Failure) => {}
        Some(reason) => {
            return Err(Refusal::NotRetryable(format!(
                "run {}: the hold ({}) is the wipe probe's: override it (override-wipe) \
                 naming the findings, or release it",
                run.id,
                reason.as_str()
            )));
        }
        None => {
            return Err(Refusal::NotRetryable(format!(
                "run {}: the run is not held after a failure",
                run.id
            )));
        }
    }
    let Some(stage) = input.retry_stage else {
        return Err(Refusal::NotRetryable(format!(
            "run {}: a retry must name the stage to run again",
            run.id
        )));
    };
    let failed = match input.failed_in {
        Some(failed) if failed.stage().is_some() || failed == RunState::SpecValidate => failed,
        Some(other) => {
            return Err(Refusal::NotRetryable(format!(
                "run {}: it failed in {other}, before any stage ran; cancel it and start a new run",
                run.id
            )));
        }
        None => {
            return Err(Refusal::NotRetryable(format!(
                "run {}: the stage that failed is not recorded",
                run.id
            )));
        }
    };
    if state_of(stage) > failed {
        return Err(Refusal::NotRetryable(format!(
            "run {}: {stage} comes after {failed}, where the run failed; \
             retry {failed} or a stage before it",
            run.id
        )));
    }
    Ok(stage)
}

/// An override must be of a wipe-probe hold and name ids, all among the
/// hold's findings.
fn check_override(run: &Run, input: &Input<'_>) -> Result<(), Refusal> {
    match run.hold_reason {
        Some(reason) if reason.is_wipe_probe() => {}
        other => return Err(Refusal::NotOverridable { reason: other }),
    }
    let acknowledged = input.acknowledged_findings.unwrap_or_default();
    if acknowledged.is_empty() {
        return Err(Refusal::Acknowledgement(
            "an override must name the wipe-probe findings it acknowledges (their ids)".into(),
        ));
    }
    let held = input.held_finding_ids;
    let unknown: Vec<&str> = acknowledged
        .iter()
        .filter(|id| !held.contains(id))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Refusal::Acknowledgement(format!(
        "run {}: the override names finding(s) the hold does not list: {} ({})",
        run.id,
        unknown
            .iter()
            .take(10)
            .map(|id| format!("`{}`", id.chars().take(300).collect::<String>()))
            .collect::<Vec<_>>()
            .join(", "),
        if held.is_empty() {
            "the hold lists none".to_string()
        } else {
            format!("they are: {}", held.join(", "))
        }
    )))
}
