//! The axum frontend of vetting: the agent API, `/ipxe/{mac}`, boot files
//! and the web UI. The only crate that knows axum, HTML and HTTP status
//! codes; a handler parses, calls `vetting-core`, renders.

pub mod agent;
pub mod boot;
pub mod error;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use vetting_core::boot::LeaseLookup;
use vetting_core::orchestrator::Orchestrator;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub orchestrator: Orchestrator,
    /// dnsmasq's leases, where this orchestrator runs DHCP: in full-DHCP
    /// mode `/ipxe/{mac}` hands a token only to the MAC's leased address.
    pub leases: Option<Arc<dyn LeaseLookup>>,
}

impl AppState {
    pub fn new(orchestrator: Orchestrator) -> Self {
        AppState {
            orchestrator,
            leases: None,
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
    Router::new()
        .route("/healthz", get(healthz))
        .merge(agent::routes())
        .merge(boot::routes(boot_dir))
        .with_state(state)
}

/// [`router`] as a service that records each client's address, the way
/// `axum::serve` must be given it.
pub fn service(
    state: AppState,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, std::net::SocketAddr> {
    router(state).into_make_service_with_connect_info::<std::net::SocketAddr>()
}

/// The most a connection's read buffer grows to. hyper's default (about
/// 400 KiB) lets every connection that once uploaded an artifact keep a
/// buffer of that size: with a thousand agents each holding a connection,
/// that alone was 130 MB of the orchestrator's memory. Headers must fit.
pub const READ_BUFFER_LIMIT: usize = 32 * 1024;

/// How long open connections get to finish after `shutdown` resolves.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves [`router`] on `listener` until `shutdown` resolves, then lets
/// open requests finish (up to [`SHUTDOWN_GRACE`]). HTTP/1.1 with
/// keep-alive; each request carries the client's address (`ConnectInfo`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use tower::ServiceExt;

    let router = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(READ_BUFFER_LIMIT)
        .timer(hyper_util::rt::TokioTimer::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // out of file descriptors and the like: wait, go on
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, "connection ended: {error}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {} s after shutdown; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

async fn healthz() -> &'static str {
    "ok\n"
}
