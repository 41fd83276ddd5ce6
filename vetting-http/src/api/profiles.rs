//! `/api/v1/profiles`: spec profiles, stored as written (YAML text in,
//! validated first).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use vetting_core::spec::SpecProfile;
use vetting_core::spec::parse_spec;

use super::auth::{Admin, Viewer};
use super::body::TextBody;
use super::views::{ErrorResponse, Valid};
use crate::AppState;
use crate::error::ApiError;

fn missing(name: &str) -> ApiError {
    ApiError::not_found(format!("spec profile `{name}` does not exist"))
}

#[utoipa::path(get, path = "/api/v1/profiles", operation_id = "list_profiles", tag = "profiles",
    responses((status = 200, body = Vec<SpecProfile>)), security(("token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Viewer,
) -> Result<Json<Vec<SpecProfile>>, ApiError> {
    Ok(Json(
        state.orchestrator.operator().list_spec_profiles().await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/profiles/{name}", operation_id = "get_profile", tag = "profiles",
    params(("name" = String, Path, description = "the profile's name")),
    responses((status = 200, body = SpecProfile), (status = 404, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _caller: Viewer,
    Path(name): Path<String>,
) -> Result<Json<SpecProfile>, ApiError> {
    state
        .orchestrator
        .operator()
        .get_spec_profile(&name)
        .await?
        .map(Json)
        .ok_or_else(|| missing(&name))
}

#[utoipa::path(put, path = "/api/v1/profiles/{name}", operation_id = "put_profile", tag = "profiles",
    params(("name" = String, Path, description = "the profile's name")),
    request_body(content = String, content_type = "application/yaml", description = "the spec, YAML or JSON"),
    responses((status = 200, body = SpecProfile), (status = 422, description = "the spec is invalid: the message names the field and line", body = ErrorResponse)),
    security(("token" = [])))]
pub async fn put(
    State(state): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
    TextBody(text): TextBody,
) -> Result<Json<SpecProfile>, ApiError> {
    let operator = state.orchestrator.operator();
    operator
        .put_spec_profile(&name, &text, &caller.actor())
        .await?;
    operator
        .get_spec_profile(&name)
        .await?
        .map(Json)
        .ok_or_else(|| missing(&name))
}

#[utoipa::path(delete, path = "/api/v1/profiles/{name}", operation_id = "delete_profile", tag = "profiles",
    params(("name" = String, Path, description = "the profile's name")),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorResponse), (status = 422, description = "a host refers to it", body = ErrorResponse)),
    security(("token" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let operator = state.orchestrator.operator();
    if operator.get_spec_profile(&name).await?.is_none() {
        return Err(missing(&name));
    }
    operator.delete_spec_profile(&name, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/profiles/check", operation_id = "check_profile", tag = "profiles",
    request_body(content = String, content_type = "application/yaml", description = "the spec, YAML or JSON"),
    responses((status = 200, body = Valid), (status = 422, description = "the spec is invalid: the message names the field and line", body = ErrorResponse)),
    security(("token" = [])))]
pub async fn check(_caller: Viewer, TextBody(text): TextBody) -> Result<Json<Valid>, ApiError> {
    parse_spec(&text).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid spec: {error}"),
        )
    })?;
    Ok(Json(Valid { valid: true }))
}
