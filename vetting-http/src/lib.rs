//! The axum frontend of vetting: the agent API, the operator API
//! (`api`: `/api/v1`, `/metrics`), `/ipxe/{mac}`, boot files and the web
//! UI. The only crate that knows axum, HTML and HTTP status
//! codes; a handler parses, calls `vetting-core`, renders.

pub mod agent;
pub mod api;
pub mod boot;
pub mod error;
mod serve;
pub mod server;

pub use serve::{
    ALLOWLIST_RESYNC, OpenedServer, RECONCILER_GRACE, ServeError, Server, ServerHandle,
    init_logging,
};
pub use server::{
    READ_BUFFER_LIMIT, SHUTDOWN_GRACE, open_file_limit, raise_open_file_limit, serve,
};

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use vetting_core::boot::{BootLog, LeaseLookup};
use vetting_core::orchestrator::Orchestrator;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub orchestrator: Orchestrator,
    /// dnsmasq's leases, where this orchestrator runs DHCP: in full-DHCP
    /// mode `/ipxe/{mac}` hands a token only to the MAC's leased address.
    pub leases: Option<Arc<dyn LeaseLookup>>,
    /// What `/ipxe/{mac}` writes: rate-limited, off the runtime.
    pub boot_log: Arc<BootLog>,
    /// The agent API's request counters, exported by `/metrics`.
    pub agent_metrics: Arc<api::AgentMetrics>,
}

impl AppState {
    pub fn new(orchestrator: Orchestrator) -> Self {
        AppState {
            orchestrator,
            leases: None,
            boot_log: Arc::new(BootLog::new()),
            agent_metrics: Arc::default(),
        }
    }

    pub fn with_leases(mut self, leases: Arc<dyn LeaseLookup>) -> Self {
        self.leases = Some(leases);
        self
    }
}

/// The whole HTTP surface over an orchestrator. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: `/ipxe/{mac}`
/// needs the client's address.
pub fn router(state: AppState) -> Router {
    let boot_dir = state.orchestrator.config().boot_dir();
    let agent_metrics = Arc::clone(&state.agent_metrics);
    Router::new()
        .route("/healthz", get(healthz))
        .nest(
            vetting_probes::protocol::API_PREFIX,
            agent::endpoints().merge(api::routes()),
        )
        .merge(api::top_routes())
        .merge(boot::routes(boot_dir))
        .fallback(not_found)
        .layer(axum::Extension(agent_metrics))
        .with_state(state)
}

/// [`router`] as a service that records each client's address, the way
/// `axum::serve` must be given it.
pub fn service(
    state: AppState,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, std::net::SocketAddr> {
    router(state).into_make_service_with_connect_info::<std::net::SocketAddr>()
}

/// What no route matched: under `/api/` the JSON error of the agent API
/// (paths the `/api/v1` nest does not reach, such as `/api/v1/`).
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/api/") {
        agent::unknown_path(uri).await.into_response()
    } else {
        (axum::http::StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}
