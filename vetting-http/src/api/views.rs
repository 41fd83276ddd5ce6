//! The operator API's own wire shapes: the views that join core's types
//! (a run and its host's name, a host and its runs) and the request
//! bodies. The CLI reads the same types back.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vetting_core::machine::{Event, RunState};
use vetting_core::model::{Applied, Host, Run, StageRecord, TransitionRecord};
use vetting_core::operator::{Role, RowError};
use vetting_probes::protocol::{Stage, WipeFinding};

/// A run and the name of its host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    #[serde(flatten)]
    pub run: Run,
    pub host_name: String,
}

/// One page of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    pub items: Vec<RunView>,
    /// The `before` of the next page; `null` on the last one.
    pub next: Option<String>,
}

/// One page of hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostPage {
    pub items: Vec<Host>,
    pub next: Option<String>,
}

/// A host, the run it has in progress, and its latest runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostDetail {
    pub host: Host,
    pub active_run: Option<Run>,
    /// Newest first, at most [`RECENT_RUNS`].
    pub recent_runs: Vec<Run>,
}

/// How many runs a host's detail lists.
pub const RECENT_RUNS: usize = 20;

/// A run with everything about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    pub run: RunView,
    pub host: Host,
    pub stages: Vec<StageRecord>,
    pub transitions: Vec<TransitionRecord>,
    /// The wipe-probe findings of the last Storage attempt (what an
    /// override acknowledges by id).
    pub held_findings: Vec<WipeFinding>,
}

/// What an action on a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AppliedView {
    pub run_id: String,
    pub from: RunState,
    /// The state the event's row led to.
    pub to: RunState,
    /// The state the run is in now.
    pub state: RunState,
    pub event: Event,
}

impl AppliedView {
    pub fn of(run_id: &str, applied: &Applied) -> Self {
        AppliedView {
            run_id: run_id.to_string(),
            from: applied.from,
            to: applied.to,
            state: applied.state,
            event: applied.event,
        }
    }
}

/// `POST /runs`: the hosts to start a run on, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRuns {
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Also every registered host without a run in progress.
    #[serde(default)]
    pub all_idle: bool,
}

/// Each host's new run, or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StartedRuns {
    pub started: Vec<StartedRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StartedRun {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status the refusal would have had alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// `POST /runs/{id}/cancel` and `/release`: what the operator
/// acknowledged (optional; the body may be left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledge {
    #[serde(default)]
    pub acknowledge: Option<String>,
}

/// `POST /runs/{id}/override-wipe`: the finding ids acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideWipe {
    pub acknowledge: Vec<String>,
}

/// `POST /runs/{id}/retry-stage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryStage {
    pub stage: Stage,
}

/// `POST /tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
}

/// One agent log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLineView {
    pub seq: u64,
    pub at_ms: i64,
    /// `stdout`, `stderr` or `agent`.
    pub stream: String,
    pub text: String,
}

/// One line of the orchestrator's own (power actions, boot scripts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrchestratorLineView {
    pub at_ms: i64,
    pub level: String,
    pub text: String,
}

/// A piece of a run's log and the cursors of the next read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunLogsView {
    pub lines: Vec<LogLineView>,
    /// The `after` of the next read.
    pub next: u64,
    /// The orchestrator's lines (none when a stage was asked).
    pub orchestrator: Vec<OrchestratorLineView>,
    /// The `orchestrator_after` of the next read.
    pub orchestrator_next: usize,
}

/// `POST /profiles/check` of a valid spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Valid {
    pub valid: bool,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// What was wrong.
    pub error: String,
    /// An import's refused rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<RowError>>,
}

/// A transition as the events stream sends it (`event: transition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransitionEvent {
    #[serde(flatten)]
    pub transition: TransitionRecord,
    pub host_name: String,
}
