//! `/api/v1/dispatch`: whether new runs start (pause for maintenance).

use axum::Json;
use axum::extract::State;
use vetting_core::operator::DispatchStatus;

use super::auth::{Admin, Viewer};
use super::views::ErrorResponse;
use crate::AppState;
use crate::error::ApiError;

#[utoipa::path(get, path = "/api/v1/dispatch", operation_id = "dispatch_status", tag = "dispatch",
    responses((status = 200, body = DispatchStatus)), security(("token" = [])))]
pub async fn status(
    State(state): State<AppState>,
    _caller: Viewer,
) -> Result<Json<DispatchStatus>, ApiError> {
    Ok(Json(state.orchestrator.operator().dispatch_status().await?))
}

#[utoipa::path(post, path = "/api/v1/dispatch/pause", operation_id = "pause_dispatch", tag = "dispatch",
    responses((status = 200, body = DispatchStatus), (status = 403, body = ErrorResponse)), security(("token" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Admin,
) -> Result<Json<DispatchStatus>, ApiError> {
    Ok(Json(
        state
            .orchestrator
            .operator()
            .pause_dispatch(&caller.actor())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/dispatch/resume", operation_id = "resume_dispatch", tag = "dispatch",
    responses((status = 200, body = DispatchStatus), (status = 403, body = ErrorResponse)), security(("token" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Admin,
) -> Result<Json<DispatchStatus>, ApiError> {
    Ok(Json(
        state
            .orchestrator
            .operator()
            .resume_dispatch(&caller.actor())
            .await?,
    ))
}
