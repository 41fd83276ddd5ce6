//! The agent API: exactly the served routes of
//! [`vetting_probes::protocol::Endpoint`], under its `API_PREFIX`;
//! bearer-token auth through the core's one [`Agent::authenticate`],
//! told the endpoint and called from the headers before any body is read;
//! a body limit fitted to each endpoint; JSON errors that say what was
//! wrong, unknown paths and wrong methods included. Handlers authenticate,
//! parse, call core, render.
//!
//! [`Agent::authenticate`]: vetting_core::agent::Agent::authenticate

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
use axum::routing::{MethodFilter, MethodRouter, on};
use serde::de::DeserializeOwned;
use vetting_core::agent::position_of;
use vetting_core::agent::{AgentWriter, AuthenticatedRun};
use vetting_probes::protocol::{
    API_PREFIX, ArtifactQuery, BatchAck, ClaimRequest, ClaimResponse, Endpoint, HeartbeatRequest,
    HeartbeatResponse, HelloRequest, LogBatch, Method, ResultResponse, RunPosition, SensorBatch,
    StageResult, StoredArtifact,
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

/// What the agent routes share: the one writer of agent data behind them
/// (started by the first request that needs it), the permits of artifact
/// uploads (bodies held at once) and of claims (bcrypt checks at once).
#[derive(Debug, Clone)]
struct Shared {
    writer: Arc<OnceLock<AgentWriter>>,
    artifact_permits: Arc<tokio::sync::Semaphore>,
    claim_permits: Arc<tokio::sync::Semaphore>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            writer: Arc::default(),
            artifact_permits: Arc::new(tokio::sync::Semaphore::new(ARTIFACT_CONCURRENCY)),
            claim_permits: Arc::new(tokio::sync::Semaphore::new(CLAIM_CONCURRENCY)),
        }
    }
}

impl Shared {
    fn writer(&self, state: &AppState) -> &AgentWriter {
        self.writer
            .get_or_init(|| AgentWriter::start(state.orchestrator.clone()))
    }
}

/// The body limit of each endpoint.
pub fn body_limit(endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::Hello | Endpoint::Claim | Endpoint::Heartbeat | Endpoint::Hold => SMALL_LIMIT,
        Endpoint::Log => LOG_LIMIT,
        Endpoint::Sensor => SENSOR_LIMIT,
        Endpoint::Result => RESULT_LIMIT,
        Endpoint::Artifact => ARTIFACT_LIMIT,
    }
}

/// The handler of an endpoint, with its method and body limit; `None` for
/// an endpoint this build does not serve ([`Endpoint::is_served`]).
fn endpoint_route(endpoint: Endpoint) -> Option<MethodRouter<AppState>> {
    let method = match endpoint.method() {
        Method::Post => MethodFilter::POST,
    };
    let route = match endpoint {
        Endpoint::Hello => on(method, hello),
        Endpoint::Claim => on(method, claim),
        Endpoint::Heartbeat => on(method, heartbeat),
        Endpoint::Log => on(method, log),
        Endpoint::Sensor => on(method, sensor),
        Endpoint::Result => on(method, result),
        Endpoint::Artifact => on(method, artifact),
        Endpoint::Hold => return None,
    };
    Some(
        route
            .layer(DefaultBodyLimit::max(body_limit(endpoint)))
            .layer(axum::middleware::from_fn(move |request, next| {
                crate::api::metrics::count_agent_request(endpoint, request, next)
            })),
    )
}

/// The agent API routes: every served [`Endpoint`], under [`API_PREFIX`].
/// Every answer that is not a success is JSON ([`ApiError`]), an unknown
/// path (404) and a wrong method (405) included.
pub fn routes() -> Router<AppState> {
    Router::new().nest(API_PREFIX, endpoints())
}

/// [`routes`] relative to [`API_PREFIX`], with the JSON fallbacks of
/// everything under it (the operator API's routes merge in here).
pub(crate) fn endpoints() -> Router<AppState> {
    Endpoint::ALL
        .into_iter()
        .filter(|endpoint| endpoint.is_served())
        .filter_map(|endpoint| Some((endpoint.route(), endpoint_route(endpoint)?)))
        .fold(Router::new(), |router, (path, route)| {
            router.route(path, route)
        })
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(Extension(Shared::default()))
}

pub(crate) async fn unknown_path(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

pub(crate) async fn wrong_method(method: axum::http::Method) -> ApiError {
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

pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(ApiError::unauthorized)
}

/// What authentication reads from a request: its bearer token and where
/// it came from (read out before any await: a request is not `Sync`).
struct Credentials {
    token: String,
    peer: Option<std::net::IpAddr>,
}

fn credentials(request: &Request) -> Result<Credentials, ApiError> {
    Ok(Credentials {
        token: bearer(request.headers())?.to_string(),
        peer: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip()),
    })
}

/// The request's token, checked by core for `endpoint` from the headers
/// alone (the body is not read yet).
async fn authenticate(
    state: &AppState,
    endpoint: Endpoint,
    run_id: &str,
    credentials: Credentials,
) -> Result<AuthenticatedRun, ApiError> {
    Ok(state
        .orchestrator
        .agent()
        .authenticate(endpoint, run_id, &credentials.token, credentials.peer)
        .await?)
}

async fn hello(
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<RunPosition>, ApiError> {
    let authenticated =
        authenticate(&state, Endpoint::Hello, &run_id, credentials(&request)?).await?;
    let request: HelloRequest = json_body(request, &state).await?;
    // another protocol version is refused before the run changes (426)
    let run = state
        .orchestrator
        .agent()
        .hello_request(&authenticated, &request)
        .await?;
    tracing::info!(run = %run.id, addresses = ?request.addresses, agent = %request.agent_version, "agent hello");
    Ok(Json(position_of(&run)))
}

async fn claim(
    State(state): State<AppState>,
    Extension(shared): Extension<Shared>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<ClaimResponse>, ApiError> {
    let authenticated =
        authenticate(&state, Endpoint::Claim, &run_id, credentials(&request)?).await?;
    let request: ClaimRequest = json_body(request, &state).await?;
    vetting_core::agent::check_protocol_version(request.protocol_version)?;
    let busy = || {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many claims at once; retry",
        )
    };
    let _turn = tokio::time::timeout(CLAIM_WAIT, shared.claim_permits.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    Ok(Json(
        state
            .orchestrator
            .agent()
            .agent_claim(&authenticated)
            .await?,
    ))
}

async fn heartbeat(
    State(state): State<AppState>,
    Extension(shared): Extension<Shared>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let authenticated =
        authenticate(&state, Endpoint::Heartbeat, &run_id, credentials(&request)?).await?;
    let request: HeartbeatRequest = json_body(request, &state).await?;
    Ok(Json(
        shared
            .writer(&state)
            .heartbeat(&authenticated, &request)
            .await?,
    ))
}

async fn log(
    State(state): State<AppState>,
    Extension(shared): Extension<Shared>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<BatchAck>, ApiError> {
    let authenticated =
        authenticate(&state, Endpoint::Log, &run_id, credentials(&request)?).await?;
    let batch: LogBatch = json_body(request, &state).await?;
    Ok(Json(
        shared.writer(&state).log(&authenticated, batch).await?,
    ))
}

async fn sensor(
    State(state): State<AppState>,
    Extension(shared): Extension<Shared>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<BatchAck>, ApiError> {
    let authenticated =
        authenticate(&state, Endpoint::Sensor, &run_id, credentials(&request)?).await?;
    let batch: SensorBatch = json_body(request, &state).await?;
    Ok(Json(
        shared.writer(&state).sensor(&authenticated, batch).await?,
    ))
}

async fn result(
    State(state): State<AppState>,
    Extension(shared): Extension<Shared>,
    RunPath(run_id): RunPath,
    request: Request,
) -> Result<Json<ResultResponse>, ApiError> {
    let authenticated =
        authenticate(&state, Endpoint::Result, &run_id, credentials(&request)?).await?;
    let result: StageResult = json_body(request, &state).await?;
    Ok(Json(
        shared.writer(&state).result(&authenticated, result).await?,
    ))
}

async fn artifact(
    State(state): State<AppState>,
    Extension(shared): Extension<Shared>,
    RunPath(run_id): RunPath,
    query: Result<Query<ArtifactQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Json<StoredArtifact>, ApiError> {
    let authenticated =
        authenticate(&state, Endpoint::Artifact, &run_id, credentials(&request)?).await?;
    let Query(upload) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    // the permit bounds the bodies held in memory: it is held while the
    // body is read and written to its file, not while the row waits for
    // the writer
    let file = {
        let _permit = shared.artifact_permits.acquire().await.map_err(|_| {
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
            .agent()
            .write_artifact_file(&authenticated, upload, &body)
            .await?
    };
    Ok(Json(shared.writer(&state).artifact_row(file).await?))
}
