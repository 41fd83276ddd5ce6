//! The one error type of the HTTP layer: every answer that is not a success
//! is JSON saying what was wrong. Invalid transitions are 409, bad input
//! 400/422, missing things 404, bad auth 401 without saying why; internal
//! errors are logged in full and answered generically.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vetting_core::error::OrchestratorError;
use vetting_core::operator::RowError;
use vetting_probes::protocol::RunPosition;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub position: Option<RunPosition>,
    /// The refused rows of an import (422).
    pub rows: Option<Vec<RowError>>,
}

/// The JSON of an error answer: the agent API's `ErrorBody`, and `rows`
/// for an import.
#[derive(Debug, Serialize)]
struct ErrorJson {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<RunPosition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<Vec<RowError>>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            position: None,
            rows: None,
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized")
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(error: OrchestratorError) -> Self {
        use OrchestratorError as E;
        match error {
            E::InvalidTransition { .. }
            | E::OverrideRefused { .. }
            | E::Conflict { .. }
            | E::HostBusy { .. }
            | E::NoSlotFree { .. }
            | E::MacTaken { .. } => ApiError::new(StatusCode::CONFLICT, error.to_string()),
            E::NotCurrentStage { ref position, .. } => ApiError {
                status: StatusCode::CONFLICT,
                message: error.to_string(),
                position: Some(position.clone()),
                rows: None,
            },
            E::ImportRejected { ref rows } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: error.to_string(),
                position: None,
                rows: Some(rows.clone()),
            },
            E::Forbidden { .. } => ApiError::forbidden(error.to_string()),
            // an agent of another protocol version, at hello: told why and
            // never retried (the agent retries 409 without a position)
            E::ProtocolMismatch { .. } => {
                ApiError::new(StatusCode::UPGRADE_REQUIRED, error.to_string())
            }
            E::RunNotFound(_) | E::HostNotFound(_) | E::ApiTokenNotFound(_) => {
                ApiError::not_found(error.to_string())
            }
            E::InvalidHost { .. } | E::BadRequest(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
            }
            E::Unauthorized(_) | E::RunEnded { .. } | E::BadCredentials => ApiError::unauthorized(),
            // a failed group of agent writes (its cause kept, logged in
            // full below) and every other internal error
            other => {
                tracing::error!("internal error: {:#}", vetting_core::error::chain(&other));
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorJson {
                error: self.message,
                position: self.position,
                rows: self.rows,
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vetting_core::agent::AgentWriteFailure;

    use super::*;

    #[test]
    fn a_failed_group_of_agent_writes_is_500_and_a_sequence_conflict_409() {
        let failed = OrchestratorError::AgentWrites(Arc::new(AgentWriteFailure::Io(
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "/data/runs/r1/logs"),
        )));
        let answer = ApiError::from(failed);
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        // answered generically: no path, no cause
        assert_eq!(answer.message, "internal error");
        let conflict = ApiError::from(OrchestratorError::Conflict {
            run_id: "r1".into(),
        });
        assert_eq!(conflict.status, StatusCode::CONFLICT);
    }

    #[test]
    fn the_operator_errors_have_their_documented_status() {
        use vetting_core::operator::Role;
        let import = ApiError::from(OrchestratorError::ImportRejected {
            rows: vec![RowError {
                line: 3,
                message: "`zz` is not a MAC address".into(),
            }],
        });
        assert_eq!(import.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(import.rows.as_ref().map(Vec::len), Some(1));
        let forbidden = ApiError::from(OrchestratorError::Forbidden {
            action: "POST /api/v1/runs".into(),
            needed: Role::Operator,
            role: Role::Viewer,
        });
        assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
        assert!(forbidden.message.contains("operator"));
        let credentials = ApiError::from(OrchestratorError::BadCredentials);
        assert_eq!(credentials.status, StatusCode::UNAUTHORIZED);
        assert_eq!(credentials.message, "unauthorized");
        let token = ApiError::from(OrchestratorError::ApiTokenNotFound("ci".into()));
        assert_eq!(token.status, StatusCode::NOT_FOUND);
        // an old agent is told why, with a status it does not retry
        let mismatch = ApiError::from(OrchestratorError::ProtocolMismatch {
            agent: 0,
            server: 1,
        });
        assert_eq!(mismatch.status, StatusCode::UPGRADE_REQUIRED);
        assert!(mismatch.message.contains("protocol version 0"));
    }
}
