//! The axum frontend of vetting: the agent API, `/ipxe/{mac}`, boot files
//! and the web UI. The only crate that knows axum, HTML and HTTP status
//! codes; a handler parses, calls `vetting-core`, renders.

pub mod agent;
pub mod error;

use axum::Router;
use axum::routing::get;
use vetting_core::orchestrator::Orchestrator;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub orchestrator: Orchestrator,
}

/// The whole HTTP surface over an orchestrator.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .merge(agent::routes())
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}
