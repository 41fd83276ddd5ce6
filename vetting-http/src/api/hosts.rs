//! `/api/v1/hosts`: the host registry (reads for viewers, changes for
//! admins).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use vetting_core::model::{Host, NewHost};
use vetting_core::operator::{HostEdit, PageRequest};

use super::auth::{Admin, Viewer};
use super::body::{ApiQuery, TextBody};
use super::views::{ErrorResponse, HostDetail, HostPage, RECENT_RUNS};
use crate::AppState;
use crate::agent::AppJson;
use crate::error::ApiError;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HostsQuery {
    /// 1 to 1000, default 50.
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub before: Option<String>,
    /// Also removed hosts.
    #[serde(default)]
    pub include_removed: bool,
}

#[utoipa::path(get, path = "/api/v1/hosts", operation_id = "list_hosts", tag = "hosts", params(HostsQuery),
    responses((status = 200, body = HostPage), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiQuery(query): ApiQuery<HostsQuery>,
) -> Result<Json<HostPage>, ApiError> {
    let page = state
        .orchestrator
        .operator()
        .list_hosts_page(
            query.include_removed,
            PageRequest {
                limit: query.limit,
                before: query.before,
            },
        )
        .await?;
    Ok(Json(HostPage {
        items: page.items,
        next: page.next,
    }))
}

#[utoipa::path(post, path = "/api/v1/hosts", operation_id = "create_host", tag = "hosts", request_body = NewHost,
    responses((status = 201, body = Host), (status = 409, description = "a MAC is taken", body = ErrorResponse),
        (status = 422, body = ErrorResponse), (status = 403, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Admin,
    AppJson(new): AppJson<NewHost>,
) -> Result<(StatusCode, Json<Host>), ApiError> {
    let host = state
        .orchestrator
        .operator()
        .register_host(new, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(host)))
}

#[utoipa::path(post, path = "/api/v1/hosts/import", operation_id = "import_hosts", tag = "hosts",
    request_body(content = String, content_type = "text/csv", description = "header `name,macs,serial,profile,power`"),
    responses((status = 201, body = Vec<Host>), (status = 422, description = "nothing imported; `rows` names each bad line", body = ErrorResponse)),
    security(("token" = [])))]
pub async fn import(
    State(state): State<AppState>,
    caller: Admin,
    TextBody(text): TextBody,
) -> Result<(StatusCode, Json<Vec<Host>>), ApiError> {
    let hosts = state
        .orchestrator
        .operator()
        .import_hosts_csv(&text, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(hosts)))
}

#[utoipa::path(get, path = "/api/v1/hosts/{name}", operation_id = "get_host", tag = "hosts",
    params(("name" = String, Path, description = "the host's name")),
    responses((status = 200, body = HostDetail), (status = 404, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _caller: Viewer,
    Path(name): Path<String>,
) -> Result<Json<HostDetail>, ApiError> {
    let operator = state.orchestrator.operator();
    let host = operator.host_by_name(&name).await?;
    let active_run = operator.active_run_of_host(host.id).await?;
    let mut recent_runs = operator.list_runs(Some(host.id)).await?;
    recent_runs.truncate(RECENT_RUNS);
    Ok(Json(HostDetail {
        host,
        active_run,
        recent_runs,
    }))
}

#[utoipa::path(patch, path = "/api/v1/hosts/{name}", operation_id = "edit_host", tag = "hosts", request_body = HostEdit,
    params(("name" = String, Path, description = "the host's name")),
    responses((status = 200, body = Host), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn edit(
    State(state): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
    AppJson(edit): AppJson<HostEdit>,
) -> Result<Json<Host>, ApiError> {
    let operator = state.orchestrator.operator();
    let host = operator.host_by_name(&name).await?;
    Ok(Json(
        operator.edit_host(host.id, edit, &caller.actor()).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/hosts/{name}", operation_id = "remove_host", tag = "hosts",
    params(("name" = String, Path, description = "the host's name")),
    responses((status = 204, description = "removed (its history stays)"), (status = 404, body = ErrorResponse), (status = 409, description = "a run is in progress", body = ErrorResponse)),
    security(("token" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let operator = state.orchestrator.operator();
    let host = operator.host_by_name(&name).await?;
    operator.remove_host(host.id, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
