//! `/api/v1/tokens`: API tokens (admins only); a secret is shown once.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use vetting_core::operator::{ApiToken, CreatedToken};

use super::auth::Admin;
use super::views::{ErrorResponse, NewToken};
use crate::AppState;
use crate::agent::AppJson;
use crate::error::ApiError;

#[utoipa::path(get, path = "/api/v1/tokens", operation_id = "list_tokens", tag = "tokens",
    responses((status = 200, body = Vec<ApiToken>), (status = 403, body = ErrorResponse)), security(("token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Admin,
) -> Result<Json<Vec<ApiToken>>, ApiError> {
    Ok(Json(state.orchestrator.operator().list_api_tokens().await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", operation_id = "create_token", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 422, body = ErrorResponse), (status = 403, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Admin,
    AppJson(new): AppJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let created = state
        .orchestrator
        .operator()
        .create_api_token(&new.name, new.role, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", operation_id = "revoke_token", tag = "tokens",
    params(("name" = String, Path, description = "the token's name")),
    responses((status = 200, description = "revoked", body = ApiToken), (status = 404, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
) -> Result<Json<ApiToken>, ApiError> {
    Ok(Json(
        state
            .orchestrator
            .operator()
            .revoke_api_token(&name, &caller.actor())
            .await?,
    ))
}
