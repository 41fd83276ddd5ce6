//! The one error type of the core's services, the one helper that names
//! what a database failure was doing, and the one formatter of an error
//! chain.

use crate::machine::{InvalidTransition, RunState};
use crate::model::CorruptRow;
use crate::store::StoreError;
use crate::tokens::{self, TokenError};
use vetting_probes::protocol::RunPosition;

/// Why an orchestrator operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
    #[error("run {run_id}: {source}")]
    InvalidTransition {
        run_id: String,
        #[source]
        source: InvalidTransition,
    },
    #[error("run {0} does not exist")]
    RunNotFound(String),
    #[error("host {0} does not exist")]
    HostNotFound(String),
    #[error("host `{name}`: {message}")]
    InvalidHost { name: String, message: String },
    #[error("MAC {mac} already belongs to host `{host}`")]
    MacTaken { mac: String, host: String },
    #[error("host `{host}` has run {run_id} in state {state}; cancel it first")]
    HostBusy {
        host: String,
        run_id: String,
        state: RunState,
    },
    #[error("no dispatcher slot is free ({max} runs in flight)")]
    NoSlotFree { max: u32 },
    #[error("run {run_id}: the hold ({reason}) cannot be overridden; only wipe-probe holds can")]
    OverrideRefused { run_id: String, reason: String },
    #[error("run {run_id} changed concurrently; try again")]
    Conflict { run_id: String },
    #[error("run {run_id} is in {state}: a result for {stage} attempt {attempt} is not expected")]
    NotCurrentStage {
        run_id: String,
        state: RunState,
        stage: String,
        attempt: u32,
        position: RunPosition,
    },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(TokenError),
    #[error("run {run_id} has ended; its token works only for heartbeats during the grace period")]
    RunEnded { run_id: String },
    #[error("secret key: {0}")]
    Key(#[from] tokens::KeyError),
    #[error("{0}")]
    Internal(String),
    /// A dispatch refused inside its transaction because the dispatcher
    /// is paused (`Runs::dispatch` stops there; never an operator's error).
    #[error("the dispatcher is paused: queued runs start when it is resumed")]
    DispatchPaused,
    /// An import where some rows are invalid: nothing was imported.
    #[error("nothing imported: {}", crate::error::rows_text(rows))]
    ImportRejected {
        rows: Vec<crate::operator::RowError>,
    },
    /// The caller's role does not allow the action.
    #[error("{action} needs the {needed} role; this token has {role}")]
    Forbidden {
        action: String,
        needed: crate::operator::Role,
        role: crate::operator::Role,
    },
    /// A wrong, unknown or revoked API token (the message never says which).
    #[error("unauthorized: the API token is not valid")]
    BadCredentials,
    #[error("API token `{0}` does not exist")]
    ApiTokenNotFound(String),
    /// The agent speaks another protocol version than this orchestrator.
    #[error(
        "the agent speaks protocol version {agent}, this orchestrator {server}: boot a live image built for this orchestrator"
    )]
    ProtocolMismatch { agent: u32, server: u32 },
    #[error("I/O error while {doing}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// A group of agent writes failed as a whole; each of its writes gets
    /// the same cause.
    #[error("storing agent data")]
    AgentWrites(#[source] std::sync::Arc<crate::agent::AgentWriteFailure>),
}

pub type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

/// Maps a sea-orm error into a store error with what was being done.
pub fn db(doing: &'static str) -> impl FnOnce(sea_orm::DbErr) -> OrchestratorError {
    move |source| OrchestratorError::Store(StoreError::Db { doing, source })
}

/// An error and its sources on one line: `error: cause: cause`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `line 3: message; line 7: message`.
pub(crate) fn rows_text(rows: &[crate::operator::RowError]) -> String {
    rows.iter()
        .map(|row| format!("line {}: {}", row.line, row.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An internal failure (an encoding that cannot fail, a task that
/// stopped), with its message.
pub(crate) fn internal(error: impl std::fmt::Display) -> OrchestratorError {
    OrchestratorError::Internal(error.to_string())
}
