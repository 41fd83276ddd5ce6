//! The operator API, `/api/v1` beside the agent API (docs/operator-api.md):
//! token-authenticated JSON with three roles (`auth`), cursor pages, the
//! events stream (`events`), `/metrics` (`metrics`) and the OpenAPI
//! document (`openapi`). Handlers extract, call `orchestrator.operator()`
//! and nothing below it, render. The CLI on the local database calls
//! [`router`] in-process with a [`Trusted`] principal.

mod auth;
mod body;
mod discovery;
mod dispatch;
mod events;
mod hosts;
pub mod metrics;
mod openapi;
mod profiles;
mod runs;
mod tokens;
mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use vetting_core::orchestrator::Orchestrator;
use vetting_probes::protocol::API_PREFIX;

pub use auth::{Caller, Trusted};
pub use body::{JSON_LIMIT, TEXT_LIMIT};
pub use discovery::{
    CLI_TOKEN_FILE, CLI_TOKEN_NAME, Discovered, SERVE_JSON, SERVE_LOCK, ServeLock, ServeLockError,
    cli_token_name, discover,
};
pub use events::KEEP_ALIVE;
pub use metrics::AgentMetrics;
pub use openapi::document as openapi_document;
pub use runs::LOG_LINES_LIMIT;
pub use views::*;

use crate::AppState;

/// The operator routes, relative to [`API_PREFIX`] (mounted beside the
/// agent's endpoints by [`crate::router`]). JSON bodies are limited to
/// [`JSON_LIMIT`], CSV and YAML to [`TEXT_LIMIT`].
pub fn routes() -> Router<AppState> {
    let text = || DefaultBodyLimit::max(TEXT_LIMIT);
    Router::new()
        .route("/hosts", get(hosts::list).post(hosts::create))
        .route("/hosts/import", post(hosts::import).layer(text()))
        .route(
            "/hosts/{name}",
            get(hosts::get).patch(hosts::edit).delete(hosts::remove),
        )
        .route("/profiles", get(profiles::list))
        .route("/profiles/check", post(profiles::check).layer(text()))
        .route(
            "/profiles/{name}",
            get(profiles::get)
                .put(profiles::put)
                .delete(profiles::remove)
                .layer(text()),
        )
        .route("/runs", get(runs::list).post(runs::start))
        .route("/runs/{run_id}", get(runs::get))
        .route("/runs/{run_id}/logs", get(runs::logs))
        .route("/runs/{run_id}/report", get(runs::report))
        .route("/runs/{run_id}/cancel", post(runs::cancel))
        .route("/runs/{run_id}/release", post(runs::release))
        .route("/runs/{run_id}/override-wipe", post(runs::override_wipe))
        .route("/runs/{run_id}/retry-stage", post(runs::retry_stage))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}", axum::routing::delete(tokens::revoke))
        .route("/dispatch", get(dispatch::status))
        .route("/dispatch/pause", post(dispatch::pause))
        .route("/dispatch/resume", post(dispatch::resume))
        .route("/events", get(events::events))
        .route("/openapi.json", get(openapi::openapi_json))
        .method_not_allowed_fallback(crate::agent::wrong_method)
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
}

/// The routes outside `/api/v1` that belong to the operator side:
/// `/metrics`.
pub fn top_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics::metrics))
}

/// The operator API alone over `orchestrator` (what the CLI calls
/// in-process through `tower::ServiceExt::oneshot`, each request with a
/// [`Trusted`] extension): the `/api/v1` routes and JSON errors for
/// unknown paths.
pub fn router(orchestrator: Orchestrator) -> Router {
    let api = routes().fallback(crate::agent::unknown_path);
    Router::new()
        .nest(API_PREFIX, api)
        .with_state(AppState::new(orchestrator))
}
