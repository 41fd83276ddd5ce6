//! The agent API, `/api/v1/runs/{run_id}/...`: bearer-token auth through
//! the core's run tokens, checked from the headers before any body is read;
//! a body limit fitted to each endpoint; JSON errors that say what was
//! wrong, unknown paths and wrong methods included. Handlers authenticate,
//! parse, call core, render.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, Extension, FromRequest, FromRequestParts, Path, Query, Request,
    State,
};
use axum::http::HeaderMap;
use axum::routing::post;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use vetting_core::agent_api::{AgentWriter, ArtifactUpload, StoredArtifact};
use vetting_core::model::Run;
use vetting_core::orchestrator::position_of;
use vetting_probes::protocol::{
    BatchAck, ClaimRequest, ClaimResponse, HeartbeatRequest, HeartbeatResponse, HelloRequest,
    LogBatch, PROTOCOL_VERSION, ResultResponse, RunPosition, SensorBatch, Stage, StageResult,
};

use crate::AppState;
use crate::error::ApiError;

/// Body limits per endpoint.
pub const SMALL_LIMIT: usize = 16 * 1024;
pub const LOG_LIMIT: usize = 4 * 1024 * 1024;
pub const SENSOR_LIMIT: usize = 2 * 1024 * 1024;
pub const RESULT_LIMIT: usize = 8 * 1024 * 1024;
pub const ARTIFACT_LIMIT: usize = 64 * 1024 * 1024;
/// How many claims check their token's bcrypt hash at once. A wave of
/// agents claiming together would otherwise share the CPU so thinly that
/// every claim outlasts its client's timeout, and the retries redo the
/// work: they queue instead, and past [`CLAIM_WAIT`] get 503 (retryable)
/// before any bcrypt is spent on them.
pub const CLAIM_CONCURRENCY: usize = 1;
/// How long a claim waits for its turn.
pub const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many artifact bodies are read at once: the others wait unread in
/// their sockets, so a wave of uploads does not grow memory.
pub const ARTIFACT_CONCURRENCY: usize = 8;

/// The one writer of agent data (log, sensor, heartbeat) behind these
/// routes, started by the first request that needs it, and the permits
/// of artifact uploads.
#[derive(Debug, Clone)]
struct Writer(
    Arc<OnceLock<AgentWriter>>,
    Arc<tokio::sync::Semaphore>,
    Arc<tokio::sync::Semaphore>,
);

impl Default for Writer {
    fn default() -> Self {
        Writer(
            Arc::default(),
            Arc::new(tokio::sync::Semaphore::new(ARTIFACT_CONCURRENCY)),
            Arc::new(tokio::sync::Semaphore::new(CLAIM_CONCURRENCY)),
        )
    }
}

impl Writer {
    fn of(&self, state: &AppState) -> &AgentWriter {
        self.0
            .get_or_init(|| AgentWriter::start(state.orchestrator.clone()))
    }
}

/// The agent API routes, under `/api/v1`. Every answer that is not a
/// success is JSON ([`ApiError`]), an unknown path (404) and a wrong method
/// (405) included.
pub fn routes() -> Router<AppState> {
    let runs = Router::new()
        .route(
            "/runs/{run_id}/hello",
            post(hello).layer(DefaultBodyLimit::max(SMALL_LIMIT)),
        )
        .route(
            "/runs/{run_id}/claim",
            post(claim).layer(DefaultBodyLimit::max(SMALL_LIMIT)),
        )
        .route(
            "/runs/{run_id}/heartbeat",
            post(heartbeat).layer(DefaultBodyLimit::max(SMALL_LIMIT)),
        )
        .route(
            "/runs/{run_id}/log",
            post(log).layer(DefaultBodyLimit::max(LOG_LIMIT)),
        )
        .route(
            "/runs/{run_id}/sensor",
            post(sensor).layer(DefaultBodyLimit::max(SENSOR_LIMIT)),
        )
        .route(
            "/runs/{run_id}/result",
            post(result).layer(DefaultBodyLimit::max(RESULT_LIMIT)),
        )
        .route(
            "/runs/{run_id}/artifact",
            post(artifact).layer(DefaultBodyLimit::max(ARTIFACT_LIMIT)),
        )
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(Extension(Writer::default()));
    Router::new().nest("/api/v1", runs)
}

pub(crate) async fn unknown_path(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

async fn wrong_method(method: axum::http::Method) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed here"),
    )
}

/// The `{run_id}` of the path; a rejection is an [`ApiError`] (400).
#[derive(Debug)]
pub struct RunPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RunPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(run_id)) => Ok(RunPath(run_id)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "bad path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// The JSON body of `request`, read only now: every handler checks the
/// token from the headers first, so a body without a valid token is never
/// read.
async fn json_body<T: DeserializeOwned>(request: Request, state: &AppState) -> Result<T, ApiError> {
    let AppJson(value) = AppJson::<T>::from_request(request, state).await?;
    Ok(value)
}

/// JSON whose rejection is an [`ApiError`] saying what was wrong.
#[derive(Debug)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(AppJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if crate::server::is_slow_body(&rejection) {
        return slow_body();
    }
    let status = rejection.status();
    let message = match &rejection {
        JsonRejection::JsonDataError(error) => {
            format!("invalid request body: {}", error.body_text())
        }
        JsonRejection::JsonSyntaxError(error) => format!("malformed JSON: {}", error.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            "expected `Content-Type: application/json`".to_string()
        }
        other => other.body_text(),
    };
    ApiError::new(status, message)
}

/// The answer to a body cut for arriving too slowly.
fn slow_body() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        "the request body arrived too slowly",
    )
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(ApiError::unauthorized)
}

async fn authenticate(
    state: &AppState,
    run_id: &str,
    headers: &HeaderMap,
    for_heartbeat: bool,
) -> Result<Run, ApiError> {
    let token = bearer(headers)?;
    Ok(state
        .orchestrator
        .authenticate_agent(run_id, token, for_heartbeat)
        .await?)
}

/// The token check of log, sensor and heartbeat: whether the run has
/// ended is checked where they are written.
async fn check_token(state: &AppState, run_id: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = bearer(headers)?;
    Ok(state.orchestrator.check_agent_token(run_id, token).await?)
}

fn check_version(version: u32) -> Result<(), ApiError> {
    if version != PROTOCOL_VERSION {
        return Err(ApiError::bad_request(format!(
            "protocol version {version} is not supported (this orchestrator speaks {PROTOCOL_VERSION})"
        )));
    }
    Ok(())
}

async fn hello(
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<RunPosition>, ApiError> {
    let run = authenticate(&state, &run_id, request.headers(), false).await?;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let request: HelloRequest = json_body(request, &state).await?;
    check_version(request.protocol_version)?;
    let first = run.hello_at_ms.is_none();
    let run = state.orchestrator.agent_hello(&run).await?;
    if first
        && let Some(peer) = peer
        && let Err(error) = state.orchestrator.check_hello_address(&run, peer).await
    {
        // the hello stands: the check only reports
        tracing::error!(run = %run.id, "checking the hello's address: {error}");
    }
    tracing::info!(run = %run.id, addresses = ?request.addresses, agent = %request.agent_version, "agent hello");
    Ok(Json(position_of(&run)))
}

async fn claim(
    State(state): State<AppState>,
    Extension(writer): Extension<Writer>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<ClaimResponse>, ApiError> {
    let token = bearer(request.headers())?.to_string();
    let run = authenticate(&state, &run_id, request.headers(), false).await?;
    let request: ClaimRequest = json_body(request, &state).await?;
    check_version(request.protocol_version)?;
    let busy = || {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many claims at once; retry",
        )
    };
    let _turn = tokio::time::timeout(CLAIM_WAIT, writer.2.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    Ok(Json(state.orchestrator.agent_claim(&run, &token).await?))
}

async fn heartbeat(
    State(state): State<AppState>,
    Extension(writer): Extension<Writer>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    check_token(&state, &run_id, request.headers()).await?;
    let request: HeartbeatRequest = json_body(request, &state).await?;
    Ok(Json(writer.of(&state).heartbeat(&run_id, &request).await?))
}

async fn log(
    State(state): State<AppState>,
    Extension(writer): Extension<Writer>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<BatchAck>, ApiError> {
    check_token(&state, &run_id, request.headers()).await?;
    let batch: LogBatch = json_body(request, &state).await?;
    Ok(Json(writer.of(&state).log(&run_id, batch).await?))
}

async fn sensor(
    State(state): State<AppState>,
    Extension(writer): Extension<Writer>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<BatchAck>, ApiError> {
    check_token(&state, &run_id, request.headers()).await?;
    let batch: SensorBatch = json_body(request, &state).await?;
    Ok(Json(writer.of(&state).sensor(&run_id, batch).await?))
}

async fn result(
    State(state): State<AppState>,
    Extension(writer): Extension<Writer>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<ResultResponse>, ApiError> {
    let run = authenticate(&state, &run_id, request.headers(), false).await?;
    let result: StageResult = json_body(request, &state).await?;
    Ok(Json(writer.of(&state).result(&run, result).await?))
}

/// The query of an artifact upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactQuery {
    pub name: String,
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub subject: Option<String>,
}

async fn artifact(
    State(state): State<AppState>,
    Extension(writer): Extension<Writer>,
    RunPath(run_id): RunPath,
    headers: HeaderMap,
    query: Result<Query<ArtifactQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Json<StoredArtifact>, ApiError> {
    let run = authenticate(&state, &run_id, &headers, false).await?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let stage = match query.stage.as_deref() {
        Some(name) => Some(
            Stage::parse(name)
                .ok_or_else(|| ApiError::bad_request(format!("`{name}` is not a stage")))?,
        ),
        None => None,
    };
    let upload = ArtifactUpload {
        name: query.name,
        tool: query.tool,
        stage,
        attempt: query.attempt,
    };
    // the permit bounds the bodies held in memory: it is held while the
    // body is read and written to its file, not while the row waits for
    // the writer
    let file = {
        let _permit = writer.1.acquire().await.map_err(|_| {
            ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        })?;
        let body = Bytes::from_request(request, &state)
            .await
            .map_err(|rejection| {
                if crate::server::is_slow_body(&rejection) {
                    slow_body()
                } else {
                    ApiError::new(rejection.status(), rejection.body_text())
                }
            })?;
        state
            .orchestrator
            .write_artifact_file(&run, upload, &body)
            .await?
    };
    Ok(Json(writer.of(&state).artifact_row(file).await?))
}
