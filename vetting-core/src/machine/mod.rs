//! The run state machine: the states and events ([this module]), one
//! table of `(state, event) → (next, effects)` rows ([`table`]) and the
//! pure [`decide`], which turns a run, an event and its facts into the
//! whole [`Transition`]: the run row after it, the stage rows to close and
//! open, the dispatcher slot, the deadlines, the automatic hold after a
//! failure and the effects to carry out once it is committed. Nothing here
//! reads the database or the clock: the runs service (`crate::runs`) is the
//! driver that persists a transition compare-and-set and carries out its
//! effects.

mod decide;
mod table;
#[cfg(test)]
mod tests;

pub use decide::{
    Input, Refusal, RunUpdate, SlotOp, StageOp, Step, Transition, decide, stage_outcome,
};
pub use table::{Effect, Guard, InvalidTransition, NotificationKind, Row, Trigger, lookup, table};

use serde::{Deserialize, Serialize};

/// Every state a run can be in.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The operator retries a stage of a run held after a failure (after
    /// a repair): the named stage runs again as a new attempt.
    RetryStage,
    /// The operator released a held host.
    Release,
    /// The operator cancelled the run.
    Cancel,
}

impl Event {
    pub const ALL: [Event; 22] = [
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
        Event::RetryStage,
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
            Event::RetryStage => "retry_stage",
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
            Event::Enqueue
                | Event::OverrideWipe
                | Event::RetryStage
                | Event::Release
                | Event::Cancel
        )
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
