//! `/api/v1/runs`: start runs, list and read them, their logs and
//! reports, and the operator's actions on a run.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vetting_core::error::OrchestratorError;
use vetting_core::machine::RunState;
use vetting_core::model::Run;
use vetting_core::operator::{PageRequest, RunFilter};
use vetting_core::reports::{self, ReportError};
use vetting_probes::protocol::Stage;

use super::auth::{Operator, Viewer};
use super::body::{ApiQuery, OptionalJson};
use super::views::{
    Acknowledge, AppliedView, ErrorResponse, LogLineView, OrchestratorLineView, OverrideWipe,
    RetryStage, RunDetail, RunLogsView, RunPage, RunView, StartRuns, StartedRun, StartedRuns,
};
use crate::AppState;
use crate::agent::AppJson;
use crate::error::ApiError;

/// The most log lines one read answers.
pub const LOG_LINES_LIMIT: usize = 10_000;

#[utoipa::path(post, path = "/api/v1/runs", operation_id = "start_runs", tag = "runs", request_body = StartRuns,
    responses((status = 200, description = "each host's run, or why it has none", body = StartedRuns),
        (status = 400, body = ErrorResponse), (status = 404, description = "an unknown host: nothing started", body = ErrorResponse),
        (status = 403, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn start(
    State(state): State<AppState>,
    caller: Operator,
    AppJson(request): AppJson<StartRuns>,
) -> Result<Json<StartedRuns>, ApiError> {
    let operator = state.orchestrator.operator();
    if request.hosts.is_empty() && !request.all_idle {
        return Err(ApiError::bad_request(
            "name at least one host, or ask for all idle hosts",
        ));
    }
    // every name is resolved first: an unknown one starts nothing
    let mut targets: Vec<(i64, String)> = Vec::new();
    for name in &request.hosts {
        let host = operator.host_by_name(name).await?;
        targets.push((host.id, host.name));
    }
    if request.all_idle {
        for host in operator.list_hosts(false).await? {
            if operator.active_run_of_host(host.id).await?.is_none() {
                targets.push((host.id, host.name));
            }
        }
    }
    let ids: Vec<i64> = targets.iter().map(|(id, _)| *id).collect();
    let names: HashMap<i64, String> = targets.into_iter().collect();
    let started = operator
        .start_runs(&ids, &caller.actor())
        .await
        .into_iter()
        .map(|(host_id, outcome)| {
            let host = names.get(&host_id).cloned().unwrap_or_default();
            match outcome {
                Ok(run) => StartedRun {
                    host,
                    run: Some(run),
                    error: None,
                    status: None,
                },
                Err(error) => {
                    let answer = ApiError::from(error);
                    StartedRun {
                        host,
                        run: None,
                        error: Some(answer.message),
                        status: Some(answer.status.as_u16()),
                    }
                }
            }
        })
        .collect();
    Ok(Json(StartedRuns { started }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs in this state (`Queued`, `Storage`, `FailedHolding`, ...).
    pub state: Option<String>,
    /// Only runs of this host (by name).
    pub host: Option<String>,
    /// 1 to 1000, default 50.
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub before: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/runs", operation_id = "list_runs", tag = "runs", params(RunsQuery),
    responses((status = 200, description = "newest first", body = RunPage), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let operator = state.orchestrator.operator();
    let run_state = match &query.state {
        Some(text) => Some(
            RunState::parse(text)
                .ok_or_else(|| ApiError::bad_request(format!("`{text}` is not a run state")))?,
        ),
        None => None,
    };
    let host_id = match &query.host {
        Some(name) => Some(operator.host_by_name(name).await?.id),
        None => None,
    };
    let page = operator
        .list_runs_page(
            RunFilter {
                state: run_state,
                host_id,
            },
            PageRequest {
                limit: query.limit,
                before: query.before,
            },
        )
        .await?;
    let mut names: HashMap<i64, String> = HashMap::new();
    let mut items = Vec::with_capacity(page.items.len());
    for run in page.items {
        items.push(view(&state, &mut names, run).await?);
    }
    Ok(Json(RunPage {
        items,
        next: page.next,
    }))
}

/// A run with its host's name (looked up once per host).
async fn view(
    state: &AppState,
    names: &mut HashMap<i64, String>,
    run: Run,
) -> Result<RunView, ApiError> {
    let host_name = match names.get(&run.host_id) {
        Some(name) => name.clone(),
        None => {
            let name = state
                .orchestrator
                .operator()
                .get_host(run.host_id)
                .await?
                .name;
            names.insert(run.host_id, name.clone());
            name
        }
    };
    Ok(RunView { run, host_name })
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}", operation_id = "get_run", tag = "runs",
    params(("run_id" = String, Path, description = "the run's id")),
    responses((status = 200, body = RunDetail), (status = 404, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _caller: Viewer,
    Path(run_id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let operator = state.orchestrator.operator();
    let run = operator.get_run(&run_id).await?;
    let host = operator.get_host(run.host_id).await?;
    let stages = operator.stages(&run.id).await?;
    let transitions = operator.transitions(Some(&run.id)).await?;
    let held_findings = operator.held_findings(&run.id).await?;
    Ok(Json(RunDetail {
        run: RunView {
            run,
            host_name: host.name.clone(),
        },
        host,
        stages,
        transitions,
        held_findings,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only this stage's attempts (`Storage`, `SMART`, ...).
    pub stage: Option<String>,
    /// The `next` of the previous read: lines with this sequence number and later.
    pub after: Option<u64>,
    /// The `orchestrator_next` of the previous read.
    pub orchestrator_after: Option<usize>,
    /// At most this many agent lines (default and most: 10000).
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}/logs", operation_id = "run_logs", tag = "runs",
    params(("run_id" = String, Path, description = "the run's id"), LogsQuery),
    responses((status = 200, body = RunLogsView), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    _caller: Viewer,
    Path(run_id): Path<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Json<RunLogsView>, ApiError> {
    // the stage is one of the protocol's names or refused: it never
    // reaches a path as the caller wrote it
    let stage = match &query.stage {
        Some(text) => Some(
            Stage::parse(text)
                .ok_or_else(|| ApiError::bad_request(format!("`{text}` is not a stage")))?,
        ),
        None => None,
    };
    let limit = query
        .limit
        .unwrap_or(LOG_LINES_LIMIT)
        .clamp(1, LOG_LINES_LIMIT);
    let logs = state
        .orchestrator
        .operator()
        .run_logs(
            &run_id,
            stage,
            query.after.unwrap_or(0),
            query.orchestrator_after.unwrap_or(0),
            limit,
        )
        .await?;
    Ok(Json(RunLogsView {
        lines: logs
            .lines
            .into_iter()
            .map(|line| LogLineView {
                seq: line.seq,
                at_ms: line.at_ms,
                stream: line.stream,
                text: line.text,
            })
            .collect(),
        next: logs.next,
        orchestrator: logs
            .orchestrator
            .into_iter()
            .map(|line| OrchestratorLineView {
                at_ms: line.at_ms,
                level: line.level,
                text: line.text,
            })
            .collect(),
        orchestrator_next: logs.orchestrator_next,
    }))
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/cancel", operation_id = "cancel_run", tag = "runs",
    params(("run_id" = String, Path, description = "the run's id")),
    request_body(content = Option<Acknowledge>, description = "optional"),
    responses((status = 200, body = AppliedView), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 403, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Operator,
    Path(run_id): Path<String>,
    OptionalJson(body): OptionalJson<Acknowledge>,
) -> Result<Json<AppliedView>, ApiError> {
    let applied = state
        .orchestrator
        .operator()
        .cancel(&run_id, &caller.actor(), body.acknowledge)
        .await?;
    Ok(Json(AppliedView::of(&run_id, &applied)))
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/release", operation_id = "release_run", tag = "runs",
    params(("run_id" = String, Path, description = "the run's id")),
    request_body(content = Option<Acknowledge>, description = "optional"),
    responses((status = 200, body = AppliedView), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 403, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn release(
    State(state): State<AppState>,
    caller: Operator,
    Path(run_id): Path<String>,
    OptionalJson(body): OptionalJson<Acknowledge>,
) -> Result<Json<AppliedView>, ApiError> {
    let applied = state
        .orchestrator
        .operator()
        .release(&run_id, &caller.actor(), body.acknowledge)
        .await?;
    Ok(Json(AppliedView::of(&run_id, &applied)))
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/override-wipe", operation_id = "override_wipe", tag = "runs",
    params(("run_id" = String, Path, description = "the run's id")),
    request_body = OverrideWipe,
    responses((status = 200, body = AppliedView), (status = 404, body = ErrorResponse), (status = 409, description = "not a wipe-probe hold", body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn override_wipe(
    State(state): State<AppState>,
    caller: Operator,
    Path(run_id): Path<String>,
    AppJson(body): AppJson<OverrideWipe>,
) -> Result<Json<AppliedView>, ApiError> {
    let applied = state
        .orchestrator
        .operator()
        .override_wipe(&run_id, &caller.actor(), body.acknowledge)
        .await?;
    Ok(Json(AppliedView::of(&run_id, &applied)))
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/retry-stage", operation_id = "retry_stage", tag = "runs",
    params(("run_id" = String, Path, description = "the run's id")),
    request_body = RetryStage,
    responses((status = 200, body = AppliedView), (status = 404, body = ErrorResponse), (status = 409, description = "the run is not held", body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn retry_stage(
    State(state): State<AppState>,
    caller: Operator,
    Path(run_id): Path<String>,
    AppJson(body): AppJson<RetryStage>,
) -> Result<Json<AppliedView>, ApiError> {
    let applied = state
        .orchestrator
        .operator()
        .retry_stage(&run_id, body.stage, &caller.actor())
        .await?;
    Ok(Json(AppliedView::of(&run_id, &applied)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default), `html` or `ocp` (OCP Test & Validation, one JSON
    /// object per line).
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}/report", operation_id = "run_report", tag = "runs",
    params(("run_id" = String, Path, description = "the run's id"), ReportQuery),
    responses((status = 200, description = "the report (docs/report-schema.md), its HTML page, or the OCP TV artifacts",
            content((Object = "application/json"), (String = "text/html"), (String = "application/x-ndjson"))),
        (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn report(
    State(state): State<AppState>,
    _caller: Viewer,
    Path(run_id): Path<String>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let format = query.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "html" | "ocp") {
        return Err(ApiError::bad_request(format!(
            "`{format}` is not a report format (json, html or ocp)"
        )));
    }
    // the stored run's id, not the caller's text, goes further
    let run = state.orchestrator.operator().get_run(&run_id).await?;
    let orchestrator = &state.orchestrator;
    Ok(match format {
        "ocp" => (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            reports::ocp::ocp_report(orchestrator, &run.id).await?,
        )
            .into_response(),
        "html" => {
            let report = reports::build_report(orchestrator, &run.id)
                .await
                .map_err(report_error)?;
            let page = reports::render_html(&report).map_err(report_error)?;
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
        }
        _ => Json(
            reports::build_report(orchestrator, &run.id)
                .await
                .map_err(report_error)?,
        )
        .into_response(),
    })
}

fn report_error(error: ReportError) -> ApiError {
    match error {
        ReportError::Orchestrator(error) => error.into(),
        ReportError::BadRunId(id) => ApiError::from(OrchestratorError::RunNotFound(id)),
        other => {
            tracing::error!(
                "building a report: {:#}",
                vetting_core::error::chain(&other)
            );
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}
