//! The table: one row per allowed `(state, event)`, with the effects the
//! row has once committed. The per-stage rows are generated from the stage
//! order, so they cannot drift from it; the rest are written out.

use serde::{Deserialize, Serialize};

use super::{Event, RunState, Stage, state_of};

/// What a notifier is told about (`crate::notify`), with a default
/// severity per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NotificationKind {
    /// A stage (or the power action, or a stage's deadline) failed the run.
    StageFailed,
    /// SpecValidate found a critical difference from the host's profile.
    SpecMismatch,
    /// The run is held for the operator (after a failure, or by the wipe
    /// probe).
    HoldingOpened,
    /// The run completed: every stage passed, warned or was skipped.
    RunCompleted,
    /// The host was lost: no hello in the boot deadline, or the agent fell
    /// silent.
    HostLost,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 5] = [
        NotificationKind::StageFailed,
        NotificationKind::SpecMismatch,
        NotificationKind::HoldingOpened,
        NotificationKind::RunCompleted,
        NotificationKind::HostLost,
    ];

    /// The seed's name of the event (`StageFailed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::StageFailed => "StageFailed",
            NotificationKind::SpecMismatch => "SpecMismatch",
            NotificationKind::HoldingOpened => "HoldingOpened",
            NotificationKind::RunCompleted => "RunCompleted",
            NotificationKind::HostLost => "HostLost",
        }
    }

    pub fn parse(name: &str) -> Option<NotificationKind> {
        NotificationKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the driver does once a transition is committed. The state itself
/// is what the agent is told (`shutdown`, `abort`, `continue` at its next
/// request): that needs no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Effect {
    /// Send the host's power action (the dispatcher's power task).
    PowerOn,
    /// Run the orchestrator-owned spec validation (inside the `/result`
    /// request that led to `SpecValidate`, as the design requires).
    ValidateSpec,
    /// Write the run's reports (the report worker, off the request path).
    WriteReport,
    /// Tell the notifiers.
    Notify(NotificationKind),
    /// A dispatcher slot freed or a run was queued: dispatch now.
    WakeDispatcher,
}

/// When a row applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// When its event happens to a run in its state.
    Event,
    /// By itself, in the same transaction as the transition that entered
    /// its state, when the guard holds; never by an outside event.
    Automatic(Guard),
}

/// The condition of an automatic row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The run was started with `hold_on_failure` (the default).
    HoldOnFailure,
}

/// A row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub from: RunState,
    pub event: Event,
    pub to: RunState,
    pub trigger: Trigger,
    /// The effects of this row alone (the driver also wakes the
    /// dispatcher when the transition frees a slot).
    pub effects: &'static [Effect],
}

/// A `(state, event)` pair that has no row in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event `{event}` is not allowed in state `{state}`")]
pub struct InvalidTransition {
    pub state: RunState,
    pub event: Event,
}

use Effect as X;
use Event as E;
use NotificationKind as N;
use RunState as S;

const fn row(from: RunState, event: Event, to: RunState, effects: &'static [Effect]) -> Row {
    Row {
        from,
        event,
        to,
        trigger: Trigger::Event,
        effects,
    }
}

/// A failure that ends the run: its report is written and the notifiers
/// hear of it.
const FAILED: &[Effect] = &[X::Notify(N::StageFailed), X::WriteReport];
/// The host was lost (no hello, or the agent fell silent).
const LOST: &[Effect] = &[X::Notify(N::HostLost), X::WriteReport];
/// A run that ends without failing (cancelled, released): its report.
const ENDED: &[Effect] = &[X::WriteReport];
/// The run is held for the operator.
const HELD: &[Effect] = &[X::Notify(N::HoldingOpened), X::WriteReport];

/// The `to` of the `RetryStage` row: a retry leads to the stage the
/// operator names, the earliest being InventoryCheck.
pub const RETRY_TO: RunState = RunState::InventoryCheck;

/// The fixed rows of the table.
const FIXED_ROWS: &[Row] = &[
    row(S::Registered, E::Enqueue, S::Queued, &[X::WakeDispatcher]),
    row(S::Registered, E::Cancel, S::Cancelled, ENDED),
    row(S::Queued, E::Dispatch, S::WaitingWoL, &[X::PowerOn]),
    row(S::Queued, E::Cancel, S::Cancelled, ENDED),
    row(S::WaitingWoL, E::PowerOnSent, S::Booting, &[]),
    row(S::WaitingWoL, E::PowerTimeout, S::Failed, FAILED),
    row(S::WaitingWoL, E::PowerFailed, S::Failed, FAILED),
    row(S::WaitingWoL, E::Cancel, S::Cancelled, ENDED),
    row(S::Booting, E::Hello, S::Booting, &[]),
    row(S::Booting, E::Claim, S::InventoryCheck, &[]),
    row(S::Booting, E::BootTimeout, S::Failed, LOST),
    row(S::Booting, E::HeartbeatTimeout, S::Failed, LOST),
    row(S::Booting, E::Cancel, S::Cancelled, ENDED),
    row(S::SpecValidate, E::SpecPassed, S::Smart, &[]),
    row(
        S::SpecValidate,
        E::SpecFailed,
        S::Failed,
        &[X::Notify(N::SpecMismatch), X::WriteReport],
    ),
    row(S::SpecValidate, E::StageTimeout, S::Failed, FAILED),
    row(S::SpecValidate, E::Cancel, S::Cancelled, ENDED),
    row(
        S::Reporting,
        E::ReportWritten,
        S::Completed,
        &[X::Notify(N::RunCompleted), X::WriteReport],
    ),
    row(S::Reporting, E::Cancel, S::Cancelled, ENDED),
    Row {
        from: S::Failed,
        event: E::HoldOpened,
        to: S::FailedHolding,
        trigger: Trigger::Automatic(Guard::HoldOnFailure),
        effects: HELD,
    },
    row(S::FailedHolding, E::OverrideWipe, S::Storage, &[]),
    // to the stage the operator names (`Input::retry_stage`), at or
    // before the one that failed; the row names the first of them, and
    // `decide` puts the named one in its place
    row(S::FailedHolding, E::RetryStage, RETRY_TO, &[]),
    row(S::FailedHolding, E::Release, S::Released, ENDED),
    row(S::FailedHolding, E::Cancel, S::Cancelled, ENDED),
];

/// The state that follows a stage that passed, warned or was skipped.
fn after_stage(stage: Stage) -> RunState {
    match stage {
        Stage::InventoryCheck => RunState::SpecValidate,
        Stage::Psu => RunState::Reporting,
        other => Stage::ALL
            .into_iter()
            .skip_while(|candidate| *candidate != other)
            .nth(1)
            .map_or(RunState::Reporting, state_of),
    }
}

/// What entering `next` after a finished stage sets off.
fn entering(next: RunState) -> &'static [Effect] {
    match next {
        RunState::SpecValidate => &[X::ValidateSpec],
        RunState::Reporting => &[X::WriteReport],
        _ => &[],
    }
}

/// The whole table, every row exactly once.
pub fn table() -> Vec<Row> {
    let mut rows: Vec<Row> = FIXED_ROWS.to_vec();
    for stage in Stage::ALL {
        let state = state_of(stage);
        let next = after_stage(stage);
        rows.push(row(state, E::StagePassed, next, entering(next)));
        rows.push(row(state, E::StageSkipped, next, entering(next)));
        rows.push(row(state, E::StageFailed, S::Failed, FAILED));
        rows.push(row(state, E::StageHeld, S::FailedHolding, HELD));
        rows.push(row(state, E::StageTimeout, S::Failed, FAILED));
        rows.push(row(state, E::HeartbeatTimeout, S::Failed, LOST));
        rows.push(row(state, E::Cancel, S::Cancelled, ENDED));
    }
    rows
}

/// The row of `(state, event)`, automatic rows included, or an error
/// naming the state and the event.
pub fn lookup(state: RunState, event: Event) -> Result<Row, InvalidTransition> {
    static TABLE: std::sync::OnceLock<std::collections::HashMap<(RunState, Event), Row>> =
        std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        table()
            .into_iter()
            .map(|row| ((row.from, row.event), row))
            .collect()
    });
    table
        .get(&(state, event))
        .copied()
        .ok_or(InvalidTransition { state, event })
}

/// The automatic rows leaving `state`.
pub(super) fn automatic_from(state: RunState) -> impl Iterator<Item = Row> {
    FIXED_ROWS
        .iter()
        .copied()
        .filter(move |row| row.from == state && matches!(row.trigger, Trigger::Automatic(_)))
}
