//! The run state machine as data: one table of `(state, event) → (next,
//! action)` through which every transition of the system passes. `decide`
//! is pure; the orchestrator is the driver that persists the transition
//! (compare-and-set) and carries out the action.

use serde::{Deserialize, Serialize};

/// Every state a run can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RunState {
    Registered,
    Queued,
    WaitingWoL,
    Booting,
    InventoryCheck,
    SpecValidate,
    #[serde(rename = "SMART")]
    Smart,
    CPUStress,
    Storage,
    Network,
    #[serde(rename = "GPU")]
    Gpu,
    #[serde(rename = "PSU")]
    Psu,
    Reporting,
    Completed,
    Failed,
    FailedHolding,
    Released,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 18] = [
        RunState::Registered,
        RunState::Queued,
        RunState::WaitingWoL,
        RunState::Booting,
        RunState::InventoryCheck,
        RunState::SpecValidate,
        RunState::Smart,
        RunState::CPUStress,
        RunState::Storage,
        RunState::Network,
        RunState::Gpu,
        RunState::Psu,
        RunState::Reporting,
        RunState::Completed,
        RunState::Failed,
        RunState::FailedHolding,
        RunState::Released,
        RunState::Cancelled,
    ];

    /// The name stored in the database and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Registered => "Registered",
            RunState::Queued => "Queued",
            RunState::WaitingWoL => "WaitingWoL",
            RunState::Booting => "Booting",
            RunState::InventoryCheck => "InventoryCheck",
            RunState::SpecValidate => "SpecValidate",
            RunState::Smart => "SMART",
            RunState::CPUStress => "CPUStress",
            RunState::Storage => "Storage",
            RunState::Network => "Network",
            RunState::Gpu => "GPU",
            RunState::Psu => "PSU",
            RunState::Reporting => "Reporting",
            RunState::Completed => "Completed",
            RunState::Failed => "Failed",
            RunState::FailedHolding => "FailedHolding",
            RunState::Released => "Released",
            RunState::Cancelled => "Cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<RunState> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    /// A run in one of these states never moves again. (`Failed` is
    /// terminal when `hold_on_failure` is off; with it on, the same
    /// transaction that enters `Failed` opens the hold.)
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Released | RunState::Cancelled
        )
    }

    /// The states that hold a dispatcher slot: from `WaitingWoL` to the
    /// end of testing. `FailedHolding` frees its slot.
    pub fn holds_slot(self) -> bool {
        matches!(
            self,
            RunState::WaitingWoL
                | RunState::Booting
                | RunState::InventoryCheck
                | RunState::SpecValidate
                | RunState::Smart
                | RunState::CPUStress
                | RunState::Storage
                | RunState::Network
                | RunState::Gpu
                | RunState::Psu
        )
    }

    /// The agent-run testing stage this state stands for, if any.
    pub fn stage(self) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .find(|stage| state_of(*stage) == self)
    }

    /// Whether the agent is expected to heartbeat in this state.
    pub fn agent_is_active(self) -> bool {
        self.stage().is_some() || self == RunState::SpecValidate
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The testing stages the agent runs, in order. `SpecValidate` and
/// `Reporting` are orchestrator-owned and not in this list.
pub use vetting_probes::protocol::Stage;

/// The run state in which the agent runs `stage`.
pub fn state_of(stage: Stage) -> RunState {
    match stage {
        Stage::InventoryCheck => RunState::InventoryCheck,
        Stage::Smart => RunState::Smart,
        Stage::CpuStress => RunState::CPUStress,
        Stage::Storage => RunState::Storage,
        Stage::Network => RunState::Network,
        Stage::Gpu => RunState::Gpu,
        Stage::Psu => RunState::Psu,
    }
}

/// Why a stage held the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// The wipe probe found partition tables or filesystem/LVM/RAID signatures.
    WipeSignatures,
    /// The wipe probe found data without a known signature.
    UnexpectedData,
    /// A failure with `hold_on_failure` on: the operator may inspect the host.
    Failure,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::WipeSignatures => "wipe_signatures",
            HoldReason::UnexpectedData => "unexpected_data",
            HoldReason::Failure => "failure",
        }
    }

    pub fn parse(name: &str) -> Option<HoldReason> {
        [
            HoldReason::WipeSignatures,
            HoldReason::UnexpectedData,
            HoldReason::Failure,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == name)
    }

    /// Only holds opened by the wipe probe can be overridden.
    pub fn is_wipe_probe(self) -> bool {
        matches!(
            self,
            HoldReason::WipeSignatures | HoldReason::UnexpectedData
        )
    }
}

/// Everything that can happen to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The operator started the run: it waits for a dispatcher slot.
    Enqueue,
    /// A dispatcher slot is free.
    Dispatch,
    /// The power action (WoL, IPMI, Redfish, manual) was sent.
    PowerOnSent,
    /// The agent said hello from the live image.
    Hello,
    /// The agent claimed the run with its token.
    Claim,
    /// The current stage passed (or warned: it continues).
    StagePassed,
    /// The current stage was skipped, with a reason.
    StageSkipped,
    /// The current stage failed.
    StageFailed,
    /// The current stage held the run (the wipe probe).
    StageHeld,
    /// The orchestrator's spec validation found no critical difference.
    SpecPassed,
    /// The orchestrator's spec validation found a critical difference.
    SpecFailed,
    /// The report was written.
    ReportWritten,
    /// The power action did not complete in time.
    PowerTimeout,
    /// The power action failed for good (the BMC refused it, or every
    /// attempt failed); the reason carries the BMC's or tool's message.
    PowerFailed,
    /// The agent did not say hello within the boot deadline.
    BootTimeout,
    /// The current stage ran past its deadline.
    StageTimeout,
    /// The agent fell silent past the heartbeat deadline.
    HeartbeatTimeout,
    /// A failed run is held for the operator (`hold_on_failure`).
    HoldOpened,
    /// The operator overrode a wipe-probe hold: Storage runs again.
    OverrideWipe,
    /// The operator released a held host.
    Release,
    /// The operator cancelled the run.
    Cancel,
}

impl Event {
    pub const ALL: [Event; 21] = [
        Event::Enqueue,
        Event::Dispatch,
        Event::PowerOnSent,
        Event::Hello,
        Event::Claim,
        Event::StagePassed,
        Event::StageSkipped,
        Event::StageFailed,
        Event::StageHeld,
        Event::SpecPassed,
        Event::SpecFailed,
        Event::ReportWritten,
        Event::PowerTimeout,
        Event::PowerFailed,
        Event::BootTimeout,
        Event::StageTimeout,
        Event::HeartbeatTimeout,
        Event::HoldOpened,
        Event::OverrideWipe,
        Event::Release,
        Event::Cancel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Enqueue => "enqueue",
            Event::Dispatch => "dispatch",
            Event::PowerOnSent => "power_on_sent",
            Event::Hello => "hello",
            Event::Claim => "claim",
            Event::StagePassed => "stage_passed",
            Event::StageSkipped => "stage_skipped",
            Event::StageFailed => "stage_failed",
            Event::StageHeld => "stage_held",
            Event::SpecPassed => "spec_passed",
            Event::SpecFailed => "spec_failed",
            Event::ReportWritten => "report_written",
            Event::PowerTimeout => "power_timeout",
            Event::PowerFailed => "power_failed",
            Event::BootTimeout => "boot_timeout",
            Event::StageTimeout => "stage_timeout",
            Event::HeartbeatTimeout => "heartbeat_timeout",
            Event::HoldOpened => "hold_opened",
            Event::OverrideWipe => "override_wipe",
            Event::Release => "release",
            Event::Cancel => "cancel",
        }
    }

    pub fn parse(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|event| event.as_str() == name)
    }

    /// Events only an operator can cause; each leaves an audit record.
    pub fn is_operator_action(self) -> bool {
        matches!(
            self,
            Event::Enqueue | Event::OverrideWipe | Event::Release | Event::Cancel
        )
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the driver does once a transition is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing beyond recording the transition.
    None,
    /// Wait in the queue for a dispatcher slot (the dispatcher is poked).
    AwaitSlot,
    /// Send the host's power action (a slot was taken with this transition).
    PowerOn,
    /// Serve the boot script and wait for the agent's hello.
    AwaitHello,
    /// The boot script now exits to disk; wait for the claim.
    AwaitClaim,
    /// Hand the agent its stage plan; it starts the first stage.
    StartStage,
    /// Run the orchestrator-owned spec validation.
    ValidateSpec,
    /// Write the reports (the slot is freed: testing is over).
    WriteReport,
    /// The run completed: tell the agent to shut down.
    Complete,
    /// The run failed: notify, free the slot, open the hold when configured.
    Fail,
    /// The host is held for the operator: the agent aborts and waits.
    Hold,
    /// Storage runs again as a new attempt (the run takes a slot again).
    RerunStorage,
    /// The held host is released: the agent shuts down.
    ReleaseHost,
    /// The run is cancelled: free any slot, the agent shuts down.
    CancelRun,
}

/// A row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: RunState,
    pub event: Event,
    pub to: RunState,
    pub action: Action,
}

/// A `(state, event)` pair that has no row in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event `{event}` is not allowed in state `{state}`")]
pub struct InvalidTransition {
    pub state: RunState,
    pub event: Event,
}

const fn row(from: RunState, event: Event, to: RunState, action: Action) -> Transition {
    Transition {
        from,
        event,
        to,
        action,
    }
}

use Action as A;
use Event as E;
use RunState as S;

/// The fixed rows of the table (the per-stage rows are generated by
/// [`table`] from the stage order, so they cannot drift from it).
const FIXED_ROWS: &[Transition] = &[
    row(S::Registered, E::Enqueue, S::Queued, A::AwaitSlot),
    row(S::Registered, E::Cancel, S::Cancelled, A::CancelRun),
    row(S::Queued, E::Dispatch, S::WaitingWoL, A::PowerOn),
    row(S::Queued, E::Cancel, S::Cancelled, A::CancelRun),
    row(S::WaitingWoL, E::PowerOnSent, S::Booting, A::AwaitHello),
    row(S::WaitingWoL, E::PowerTimeout, S::Failed, A::Fail),
    row(S::WaitingWoL, E::PowerFailed, S::Failed, A::Fail),
    row(S::WaitingWoL, E::Cancel, S::Cancelled, A::CancelRun),
    row(S::Booting, E::Hello, S::Booting, A::AwaitClaim),
    row(S::Booting, E::Claim, S::InventoryCheck, A::StartStage),
    row(S::Booting, E::BootTimeout, S::Failed, A::Fail),
    row(S::Booting, E::HeartbeatTimeout, S::Failed, A::Fail),
    row(S::Booting, E::Cancel, S::Cancelled, A::CancelRun),
    row(S::SpecValidate, E::SpecPassed, S::Smart, A::StartStage),
    row(S::SpecValidate, E::SpecFailed, S::Failed, A::Fail),
    row(S::SpecValidate, E::StageTimeout, S::Failed, A::Fail),
    row(S::SpecValidate, E::Cancel, S::Cancelled, A::CancelRun),
    row(S::Reporting, E::ReportWritten, S::Completed, A::Complete),
    row(S::Reporting, E::Cancel, S::Cancelled, A::CancelRun),
    row(S::Failed, E::HoldOpened, S::FailedHolding, A::Hold),
    row(
        S::FailedHolding,
        E::OverrideWipe,
        S::Storage,
        A::RerunStorage,
    ),
    row(S::FailedHolding, E::Release, S::Released, A::ReleaseHost),
    row(S::FailedHolding, E::Cancel, S::Cancelled, A::CancelRun),
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

/// What a finished stage leads to: the action that enters `next`.
fn entering(next: RunState) -> Action {
    match next {
        RunState::SpecValidate => Action::ValidateSpec,
        RunState::Reporting => Action::WriteReport,
        _ => Action::StartStage,
    }
}

/// The whole table, every row exactly once.
pub fn table() -> Vec<Transition> {
    let mut rows: Vec<Transition> = FIXED_ROWS.to_vec();
    for stage in Stage::ALL {
        let state = state_of(stage);
        let next = after_stage(stage);
        rows.push(row(state, E::StagePassed, next, entering(next)));
        rows.push(row(state, E::StageSkipped, next, entering(next)));
        rows.push(row(state, E::StageFailed, S::Failed, A::Fail));
        rows.push(row(state, E::StageHeld, S::FailedHolding, A::Hold));
        rows.push(row(state, E::StageTimeout, S::Failed, A::Fail));
        rows.push(row(state, E::HeartbeatTimeout, S::Failed, A::Fail));
        rows.push(row(state, E::Cancel, S::Cancelled, A::CancelRun));
    }
    rows
}

/// Looks up `(state, event)`: the next state and the action, or an error
/// naming the state and the event.
pub fn decide(state: RunState, event: Event) -> Result<(RunState, Action), InvalidTransition> {
    static TABLE: std::sync::OnceLock<std::collections::HashMap<(RunState, Event), Transition>> =
        std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        table()
            .into_iter()
            .map(|transition| ((transition.from, transition.event), transition))
            .collect()
    });
    table
        .get(&(state, event))
        .map(|transition| (transition.to, transition.action))
        .ok_or(InvalidTransition { state, event })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The valid transitions, written down a second time by hand. Every
    /// `(state, event)` pair of the product is checked against this list:
    /// listed pairs must move to the listed state, all others are refused.
    const BY_HAND: &[(RunState, Event, RunState)] = &[
        (S::Registered, E::Enqueue, S::Queued),
        (S::Registered, E::Cancel, S::Cancelled),
        (S::Queued, E::Dispatch, S::WaitingWoL),
        (S::Queued, E::Cancel, S::Cancelled),
        (S::WaitingWoL, E::PowerOnSent, S::Booting),
        (S::WaitingWoL, E::PowerTimeout, S::Failed),
        (S::WaitingWoL, E::PowerFailed, S::Failed),
        (S::WaitingWoL, E::Cancel, S::Cancelled),
        (S::Booting, E::Hello, S::Booting),
        (S::Booting, E::Claim, S::InventoryCheck),
        (S::Booting, E::BootTimeout, S::Failed),
        (S::Booting, E::HeartbeatTimeout, S::Failed),
        (S::Booting, E::Cancel, S::Cancelled),
        (S::InventoryCheck, E::StagePassed, S::SpecValidate),
        (S::InventoryCheck, E::StageSkipped, S::SpecValidate),
        (S::InventoryCheck, E::StageFailed, S::Failed),
        (S::InventoryCheck, E::StageHeld, S::FailedHolding),
        (S::InventoryCheck, E::StageTimeout, S::Failed),
        (S::InventoryCheck, E::HeartbeatTimeout, S::Failed),
        (S::InventoryCheck, E::Cancel, S::Cancelled),
        (S::SpecValidate, E::SpecPassed, S::Smart),
        (S::SpecValidate, E::SpecFailed, S::Failed),
        (S::SpecValidate, E::StageTimeout, S::Failed),
        (S::SpecValidate, E::Cancel, S::Cancelled),
        (S::Smart, E::StagePassed, S::CPUStress),
        (S::Smart, E::StageSkipped, S::CPUStress),
        (S::Smart, E::StageFailed, S::Failed),
        (S::Smart, E::StageHeld, S::FailedHolding),
        (S::Smart, E::StageTimeout, S::Failed),
        (S::Smart, E::HeartbeatTimeout, S::Failed),
        (S::Smart, E::Cancel, S::Cancelled),
        (S::CPUStress, E::StagePassed, S::Storage),
        (S::CPUStress, E::StageSkipped, S::Storage),
        (S::CPUStress, E::StageFailed, S::Failed),
        (S::CPUStress, E::StageHeld, S::FailedHolding),
        (S::CPUStress, E::StageTimeout, S::Failed),
        (S::CPUStress, E::HeartbeatTimeout, S::Failed),
        (S::CPUStress, E::Cancel, S::Cancelled),
        (S::Storage, E::StagePassed, S::Network),
        (S::Storage, E::StageSkipped, S::Network),
        (S::Storage, E::StageFailed, S::Failed),
        (S::Storage, E::StageHeld, S::FailedHolding),
        (S::Storage, E::StageTimeout, S::Failed),
        (S::Storage, E::HeartbeatTimeout, S::Failed),
        (S::Storage, E::Cancel, S::Cancelled),
        (S::Network, E::StagePassed, S::Gpu),
        (S::Network, E::StageSkipped, S::Gpu),
        (S::Network, E::StageFailed, S::Failed),
        (S::Network, E::StageHeld, S::FailedHolding),
        (S::Network, E::StageTimeout, S::Failed),
        (S::Network, E::HeartbeatTimeout, S::Failed),
        (S::Network, E::Cancel, S::Cancelled),
        (S::Gpu, E::StagePassed, S::Psu),
        (S::Gpu, E::StageSkipped, S::Psu),
        (S::Gpu, E::StageFailed, S::Failed),
        (S::Gpu, E::StageHeld, S::FailedHolding),
        (S::Gpu, E::StageTimeout, S::Failed),
        (S::Gpu, E::HeartbeatTimeout, S::Failed),
        (S::Gpu, E::Cancel, S::Cancelled),
        (S::Psu, E::StagePassed, S::Reporting),
        (S::Psu, E::StageSkipped, S::Reporting),
        (S::Psu, E::StageFailed, S::Failed),
        (S::Psu, E::StageHeld, S::FailedHolding),
        (S::Psu, E::StageTimeout, S::Failed),
        (S::Psu, E::HeartbeatTimeout, S::Failed),
        (S::Psu, E::Cancel, S::Cancelled),
        (S::Reporting, E::ReportWritten, S::Completed),
        (S::Reporting, E::Cancel, S::Cancelled),
        (S::Failed, E::HoldOpened, S::FailedHolding),
        (S::FailedHolding, E::OverrideWipe, S::Storage),
        (S::FailedHolding, E::Release, S::Released),
        (S::FailedHolding, E::Cancel, S::Cancelled),
    ];

    #[test]
    fn every_state_event_pair_matches_the_hand_written_list() {
        let allowed: std::collections::HashMap<(RunState, Event), RunState> = BY_HAND
            .iter()
            .map(|(from, event, to)| ((*from, *event), *to))
            .collect();
        assert_eq!(allowed.len(), BY_HAND.len(), "duplicate row in BY_HAND");
        let mut checked = 0;
        for state in RunState::ALL {
            for event in Event::ALL {
                checked += 1;
                match (decide(state, event), allowed.get(&(state, event))) {
                    (Ok((next, _)), Some(expected)) => {
                        assert_eq!(next, *expected, "{state} + {event}")
                    }
                    (Err(error), None) => {
                        let message = error.to_string();
                        assert!(message.contains(state.as_str()), "{message}");
                        assert!(message.contains(event.as_str()), "{message}");
                    }
                    (Ok((next, _)), None) => {
                        panic!("{state} + {event} -> {next} is in the table but not by hand")
                    }
                    (Err(_), Some(expected)) => {
                        panic!("{state} + {event} -> {expected} is by hand but not in the table")
                    }
                }
            }
        }
        assert_eq!(checked, RunState::ALL.len() * Event::ALL.len());
        assert_eq!(table().len(), BY_HAND.len());
    }

    #[test]
    fn the_table_has_no_duplicate_pairs() {
        let mut seen = HashSet::new();
        for transition in table() {
            assert!(
                seen.insert((transition.from, transition.event)),
                "duplicate row {transition:?}"
            );
        }
    }

    #[test]
    fn terminal_states_have_no_way_out_except_the_hold_of_a_failure() {
        for transition in table() {
            if transition.from.is_terminal() {
                assert_eq!(
                    (transition.from, transition.event),
                    (S::Failed, E::HoldOpened)
                );
            }
        }
    }

    #[test]
    fn cancel_is_allowed_from_every_non_terminal_state() {
        for state in RunState::ALL {
            if !state.is_terminal() {
                assert_eq!(decide(state, E::Cancel), Ok((S::Cancelled, A::CancelRun)));
            }
        }
    }

    #[test]
    fn every_active_state_has_a_deadline_event() {
        // no run can hang forever: every state the agent or the power
        // action drives has a timeout row (Queued waits for a slot without
        // one; FailedHolding never releases itself).
        for state in RunState::ALL {
            if state.is_terminal() || matches!(state, S::Registered | S::Queued | S::FailedHolding)
            {
                continue;
            }
            let timeouts = [
                E::PowerTimeout,
                E::BootTimeout,
                E::StageTimeout,
                E::HeartbeatTimeout,
            ];
            let has_deadline =
                timeouts.iter().any(|event| decide(state, *event).is_ok()) || state == S::Reporting;
            assert!(has_deadline, "{state} has no deadline");
        }
    }

    #[test]
    fn names_round_trip() {
        for state in RunState::ALL {
            assert_eq!(RunState::parse(state.as_str()), Some(state));
        }
        for event in Event::ALL {
            assert_eq!(Event::parse(event.as_str()), Some(event));
        }
    }
}
