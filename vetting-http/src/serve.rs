//! The embeddable server: [`Server`] assembles what `vetting serve` runs
//! and hands back a [`ServerHandle`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use vetting_core::clock::{Clock, SystemClock};
use vetting_core::config::Config;
use vetting_core::error::OrchestratorError;
use vetting_core::notify::{Notifier, Notifiers, Route};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::power::{PowerDrivers, StoredPowerSettings};
use vetting_core::pxe::{PxeError, PxeSettings, PxeSupervisor};
use vetting_core::runs::{Dispatcher, run_reconcilers};

use crate::AppState;
use crate::api::ServeLock;
use vetting_core::model::Actor;
use vetting_core::operator::Role;

/// How often the DHCP allowlist is compared with the host registry even
/// when no host changed here (another process may have registered one).
pub const ALLOWLIST_RESYNC: Duration = Duration::from_secs(60);

/// How long the reconcilers get to finish their pass at shutdown before
/// they are cancelled (every pass is compare-and-set, so cancelling is
/// safe).
pub const RECONCILER_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config: {0}")]
    Config(String),
    #[error("listening on {address}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the orchestrator")]
    Open(#[source] OrchestratorError),
    #[error("reading the host registry for DHCP")]
    Hosts(#[source] OrchestratorError),
    #[error("starting DHCP/TFTP (dnsmasq) on {interface}")]
    Pxe {
        interface: String,
        #[source]
        source: PxeError,
    },
    #[error("serving HTTP")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    Lock(#[from] crate::api::ServeLockError),
    #[error("making the local CLI's admin token")]
    CliToken(#[source] OrchestratorError),
    #[error("the {task} task ended abnormally")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The builder of an orchestrator server: what `vetting serve` runs (the
/// store through [`Orchestrator::open`], the reconcilers, the PXE
/// supervisor and the DHCP allowlist sync when `pxe.enabled`, and
/// [`fn@crate::serve`] under the config's `http` limits). [`Server::start`]
/// hands back a [`ServerHandle`] with the bound address, the orchestrator
/// and a [`ServerHandle::shutdown`] that stops all of it in order.
///
/// The extension points are the builder's: a [`Clock`], the power drivers
/// ([`PowerDrivers`]; default: each host's stored settings) and
/// notification targets ([`Notifier`] with a [`Route`]).
///
/// ```no_run
/// # async fn example() -> Result<(), vetting_http::ServeError> {
/// let mut config = vetting_core::config::Config::default();
/// config.listen = ([127, 0, 0, 1], 0).into();
/// let server = vetting_http::Server::new(config).start().await?;
/// println!("serving on {}", server.url());
/// server
///     .run_until(async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// Where something must happen after the store is open and before anything
/// runs (seeding hosts), use [`Server::open`], then [`OpenedServer::start`].
/// Nothing starts before.
pub struct Server {
    config: Config,
    clock: Arc<dyn Clock>,
    power: Option<Arc<dyn PowerDrivers>>,
    notifiers: Notifiers,
    listener: Option<tokio::net::TcpListener>,
    bcrypt_cost: Option<u32>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Server")
            .field("listen", &self.config.listen)
            .field("clock", &self.clock)
            .field("power", &self.power)
            .field("notifiers", &self.notifiers)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server of `config`: the system clock, each host's stored power
    /// settings, no notification targets, listening on `config.listen`.
    pub fn new(config: Config) -> Self {
        Server {
            config,
            clock: Arc::new(SystemClock),
            power: None,
            notifiers: Notifiers::new(),
            listener: None,
            bcrypt_cost: None,
        }
    }

    /// Another clock (simulations; tests of deadlines).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Other power drivers than the hosts' stored settings.
    pub fn power(mut self, drivers: Arc<dyn PowerDrivers>) -> Self {
        self.power = Some(drivers);
        self
    }

    /// Adds a notification target (see [`Notifiers::add`]).
    pub fn notifier(
        self,
        name: impl Into<String>,
        notifier: Arc<dyn Notifier>,
        route: Route,
    ) -> Self {
        self.notifiers.add(name, notifier, route);
        self
    }

    /// Adds every target of `notifiers`.
    pub fn notifiers(self, notifiers: &Notifiers) -> Self {
        self.notifiers.extend_from(notifiers);
        self
    }

    /// Serves on a listener bound already instead of binding
    /// `config.listen`.
    pub fn listener(mut self, listener: tokio::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// A cheaper bcrypt cost for new run tokens (tests and benchmarks only:
    /// the default is the production cost).
    pub fn bcrypt_cost(mut self, cost: u32) -> Self {
        self.bcrypt_cost = Some(cost);
        self
    }

    /// Binds the listener and opens the store; nothing runs yet. With port
    /// 0 the bound address becomes `config.listen`, so that the default
    /// `public_url` (what agents are told) is the address really served.
    pub async fn open(self) -> Result<OpenedServer, ServeError> {
        let mut config = self.config;
        let pxe_settings = config.pxe_settings().map_err(ServeError::Config)?;
        let listener = match self.listener {
            Some(listener) => listener,
            None => tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    address: config.listen,
                    source,
                })?,
        };
        let local_addr = listener.local_addr().map_err(|source| ServeError::Listen {
            address: config.listen,
            source,
        })?;
        config.listen = local_addr;
        // one server per data folder: the CLI finds it through this lock
        let serve_lock = ServeLock::acquire(&config.data_dir)?;
        let mut orchestrator = Orchestrator::open(config, self.clock)
            .await
            .map_err(ServeError::Open)?;
        if let Some(cost) = self.bcrypt_cost {
            orchestrator = orchestrator.with_bcrypt_cost(cost);
        }
        orchestrator.notifiers().extend_from(&self.notifiers);
        let power = match self.power {
            Some(power) => power,
            None => Arc::new(StoredPowerSettings::of(&orchestrator)),
        };
        Ok(OpenedServer {
            orchestrator,
            listener,
            local_addr,
            pxe_settings,
            power,
            serve_lock,
        })
    }

    /// [`Server::open`], then [`OpenedServer::start`].
    pub async fn start(self) -> Result<ServerHandle, ServeError> {
        self.open().await?.start().await
    }
}

/// A server whose store is open and whose listener is bound, with nothing
/// running yet.
#[derive(Debug)]
pub struct OpenedServer {
    orchestrator: Orchestrator,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    pxe_settings: Option<PxeSettings>,
    power: Arc<dyn PowerDrivers>,
    serve_lock: ServeLock,
}

impl OpenedServer {
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL agents and browsers use (`config.public_url()`).
    pub fn url(&self) -> String {
        self.orchestrator.config().public_url()
    }

    /// Starts dnsmasq and the allowlist sync (when `pxe.enabled`), the
    /// reconcilers and the HTTP server.
    pub async fn start(self) -> Result<ServerHandle, ServeError> {
        let OpenedServer {
            orchestrator,
            listener,
            local_addr,
            pxe_settings,
            power,
            serve_lock,
        } = self;
        let token = local_cli_token(&orchestrator)
            .await
            .map_err(ServeError::CliToken)?;
        serve_lock.publish(&local_url(local_addr), &token)?;
        let (stop_sender, stop) = tokio::sync::watch::channel(false);
        let mut state = AppState::new(orchestrator.clone());
        let mut pxe = None;
        let mut allowlist = None;
        if let Some(settings) = pxe_settings {
            let hosts = orchestrator
                .operator()
                .list_hosts(false)
                .await
                .map_err(ServeError::Hosts)?;
            let interface = settings.interface.clone();
            let supervisor = Arc::new(
                PxeSupervisor::start(settings, vetting_core::boot::host_entries(&hosts))
                    .await
                    .map_err(|source| ServeError::Pxe {
                        interface: interface.clone(),
                        source,
                    })?,
            );
            allowlist = Some(tokio::spawn(vetting_core::boot::sync_allowlist(
                orchestrator.clone(),
                Arc::clone(&supervisor),
                ALLOWLIST_RESYNC,
                stop.clone(),
            )));
            state = state.with_leases(supervisor.clone());
            pxe = Some((interface, supervisor));
        }
        let reconcilers = tokio::spawn(run_reconcilers(
            Dispatcher::new(orchestrator.clone(), power),
            stop,
        ));
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(crate::serve(listener, state, async {
            let _ = http_stopped.await;
        }));
        Ok(ServerHandle {
            orchestrator,
            local_addr,
            stop: stop_sender,
            http_stop: Some(http_stop),
            http,
            reconcilers,
            allowlist,
            pxe,
            serve_lock,
        })
    }
}

/// How the local CLI reaches this server: the bound address, or loopback
/// when it listens on every address.
fn local_url(address: SocketAddr) -> String {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, address.port()))
}

/// A new admin token for the local CLI, named by
/// [`crate::api::cli_token_name`]; this data folder's previous one is
/// revoked.
async fn local_cli_token(orchestrator: &Orchestrator) -> Result<String, OrchestratorError> {
    let operator = orchestrator.operator();
    let actor = Actor::orchestrator();
    let name = crate::api::cli_token_name(&orchestrator.config().data_dir);
    match operator.revoke_api_token(&name, &actor).await {
        Ok(_) | Err(OrchestratorError::ApiTokenNotFound(_)) => {}
        Err(error) => return Err(error),
    }
    let created = operator
        .create_api_token(&name, Role::Admin, &actor)
        .await?;
    Ok(created.secret)
}

/// A running server. Dropping it without [`ServerHandle::shutdown`] leaves
/// its tasks running until the runtime ends.
#[derive(Debug)]
pub struct ServerHandle {
    orchestrator: Orchestrator,
    local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    http_stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: JoinHandle<std::io::Result<()>>,
    reconcilers: JoinHandle<()>,
    allowlist: Option<JoinHandle<()>>,
    pxe: Option<(String, Arc<PxeSupervisor>)>,
    /// Held while the server runs; `serve.json` is withdrawn at shutdown.
    serve_lock: ServeLock,
}

impl ServerHandle {
    /// The address the HTTP server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL agents and browsers use (`config.public_url()`).
    pub fn url(&self) -> String {
        self.orchestrator.config().public_url()
    }

    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }

    /// The interface dnsmasq serves, when this server runs PXE.
    pub fn pxe_interface(&self) -> Option<&str> {
        self.pxe.as_ref().map(|(interface, _)| interface.as_str())
    }

    /// Serves until `signal` resolves (or the HTTP server fails), then
    /// [`ServerHandle::shutdown`].
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let ended_early = tokio::select! {
            () = signal => None,
            ended = &mut self.http => Some(ended),
        };
        match ended_early {
            None => self.shutdown().await,
            Some(ended) => {
                let served = http_outcome(ended);
                let stopped = self.stop_background().await;
                served.and(stopped)
            }
        }
    }

    /// Stops the HTTP server (open requests get [`crate::SHUTDOWN_GRACE`]),
    /// then the reconcilers, the allowlist sync, dnsmasq and the iperf3
    /// server; returns when they have stopped.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(http_stop) = self.http_stop.take() {
            let _ = http_stop.send(());
        }
        let served = http_outcome((&mut self.http).await);
        let stopped = self.stop_background().await;
        served.and(stopped)
    }

    /// Everything but the HTTP server, which has ended.
    async fn stop_background(self) -> Result<(), ServeError> {
        let ServerHandle {
            orchestrator,
            stop,
            reconcilers,
            allowlist,
            pxe,
            serve_lock,
            ..
        } = self;
        let _ = stop.send(true);
        orchestrator.poke();
        let mut outcome = Ok(());
        let mut reconcilers = reconcilers;
        match tokio::time::timeout(RECONCILER_GRACE, &mut reconcilers).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                outcome = Err(ServeError::Task {
                    task: "reconciler",
                    source,
                });
            }
            Err(_) => {
                tracing::warn!(
                    "the reconcilers did not stop within {} s: cancelled",
                    RECONCILER_GRACE.as_secs()
                );
                reconcilers.abort();
            }
        }
        if let Some(allowlist) = allowlist
            && let Err(source) = allowlist.await
            && outcome.is_ok()
        {
            outcome = Err(ServeError::Task {
                task: "DHCP allowlist",
                source,
            });
        }
        if let Some((interface, supervisor)) = pxe {
            match Arc::try_unwrap(supervisor) {
                Ok(supervisor) => supervisor.shutdown().await,
                // a power action or report still holds it: dropping the
                // last handle stops dnsmasq
                Err(_) => tracing::warn!("dnsmasq on {interface} stops with its last user"),
            }
        }
        orchestrator.iperf().stop().await;
        serve_lock.withdraw();
        drop(serve_lock);
        outcome
    }
}

fn http_outcome(
    ended: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ServeError::Http(error)),
        Err(source) => Err(ServeError::Task {
            task: "HTTP server",
            source,
        }),
    }
}

/// The log output of a server process: `tracing` lines on stderr, filtered
/// by the environment variable `filter_variable` (default `info`). For
/// binaries; an embedding program sets up its own subscriber.
pub fn init_logging(filter_variable: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(filter_variable)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_url_of_every_address_is_loopback() {
        let url = |text: &str| {
            local_url(
                text.parse()
                    .unwrap_or_else(|_| SocketAddr::from(([0; 4], 0))),
            )
        };
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080");
        assert_eq!(url("10.0.0.5:80"), "http://10.0.0.5:80");
    }
}
