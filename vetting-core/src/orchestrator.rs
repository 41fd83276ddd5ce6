//! The assembled core: the store, the config, the clock, the secret key,
//! the events hub, the notifiers and the caches the services share. Open
//! it once per process (`Orchestrator::open`, or `vetting_http::Server`);
//! cheap to clone. What it does is in its services: `runs()`, `agent()`
//! and `operator()` (see `docs/ARCHITECTURE.md`).

use std::sync::Arc;

use sea_orm::{DatabaseTransaction, TransactionTrait};

use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::error::{OrchestratorError, Result, db};
use crate::events::EventsHub;
use crate::model::{Host, Run};
use crate::store::Store;
use crate::tokens::{self, SecretKey};

/// The orchestrator: open it once per process; cheap to clone.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) config: Config,
    pub(crate) key: SecretKey,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hub: EventsHub,
    pub(crate) bcrypt_cost: u32,
    pub(crate) poke: tokio::sync::Notify,
    pub(crate) iperf: crate::iperf::IperfSupervisor,
    pub(crate) run_locks:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) reports: Arc<crate::runs::report_queue::ReportQueue>,
    /// Runs whose power action a committed dispatch asked for, until the
    /// dispatcher takes them.
    pub(crate) power_requests: crate::runs::PowerRequests,
    /// Runs' token nonces once read (a nonce never changes).
    pub(crate) nonces: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Where notifications go (targets added by the embedding program).
    pub(crate) notifiers: crate::notify::Notifiers,
}

/// The most token nonces kept in memory; past it the map starts over.
const NONCES_KEPT: usize = 65_536;

/// A handle that does not keep the orchestrator alive.
#[derive(Debug, Clone)]
pub struct WeakOrchestrator(std::sync::Weak<Inner>);

impl WeakOrchestrator {
    /// The orchestrator, while some handle still holds it.
    pub fn upgrade(&self) -> Option<Orchestrator> {
        self.0.upgrade().map(|inner| Orchestrator { inner })
    }
}

impl Orchestrator {
    /// Opens the database of `config` (migrating it), loads or creates the
    /// secret key, sizes the dispatcher slots, and rebuilds in-flight state.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Orchestrator> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| OrchestratorError::Io {
            doing: format!("creating data folder {}", config.data_dir.display()),
            source,
        })?;
        let key = match &config.secret_key {
            Some(hex) => SecretKey::from_hex(hex.expose(), "from config key `secret_key`")?,
            None => SecretKey::load_or_create(&config.data_dir.join("secret.key"))?,
        };
        let store = Store::open(&config.database_url()).await?;
        Orchestrator::with_store(store, config, key, clock).await
    }

    /// Builds an orchestrator over an open, migrated store.
    pub async fn with_store(
        store: Store,
        config: Config,
        key: SecretKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Orchestrator> {
        let orchestrator = Orchestrator {
            inner: Arc::new(Inner {
                store,
                config,
                key,
                clock,
                hub: EventsHub::default(),
                bcrypt_cost: tokens::BCRYPT_COST,
                poke: tokio::sync::Notify::new(),
                iperf: crate::iperf::IperfSupervisor::default(),
                run_locks: Default::default(),
                reports: Default::default(),
                power_requests: Default::default(),
                nonces: Default::default(),
                notifiers: Default::default(),
            }),
        };
        orchestrator.runs().size_slots().await?;
        Ok(orchestrator)
    }

    /// Uses a cheaper bcrypt cost for new tokens (tests and benchmarks).
    pub fn with_bcrypt_cost(self, cost: u32) -> Orchestrator {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.bcrypt_cost = cost;
                inner
            }
            Err(shared) => Inner {
                store: shared.store.clone(),
                config: shared.config.clone(),
                key: shared.key.clone(),
                clock: shared.clock.clone(),
                hub: shared.hub.clone(),
                bcrypt_cost: cost,
                poke: tokio::sync::Notify::new(),
                iperf: crate::iperf::IperfSupervisor::default(),
                run_locks: Default::default(),
                reports: Default::default(),
                power_requests: Default::default(),
                nonces: Default::default(),
                notifiers: shared.notifiers.clone(),
            },
        };
        Orchestrator {
            inner: Arc::new(inner),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn hub(&self) -> &EventsHub {
        &self.inner.hub
    }
    pub fn key(&self) -> &SecretKey {
        &self.inner.key
    }
    pub fn now_ms(&self) -> Millis {
        self.inner.clock.now_ms()
    }
    pub(crate) fn conn(&self) -> &sea_orm::DatabaseConnection {
        self.inner.store.db()
    }

    /// The notification targets ([`crate::notify`]); clones share them,
    /// so targets added here are seen by every handle.
    pub fn notifiers(&self) -> &crate::notify::Notifiers {
        &self.inner.notifiers
    }

    /// Begins a writing transaction (`store::WRITE`: on SQLite it holds
    /// the write lock from its first statement); a failure names what was
    /// being done.
    pub(crate) async fn begin_write(&self, doing: &'static str) -> Result<DatabaseTransaction> {
        self.conn()
            .begin_with_options(crate::store::WRITE)
            .await
            .map_err(db(doing))
    }

    /// A run, for the services' own use (frontends read through
    /// [`crate::operator::Operator`]).
    pub(crate) async fn run(&self, run_id: &str) -> Result<Run> {
        crate::store::runs::get(self.conn(), run_id).await
    }

    /// A host, for the services' own use.
    pub(crate) async fn host(&self, host_id: i64) -> Result<Host> {
        crate::store::hosts::get(self.conn(), host_id).await
    }

    /// The iperf3 server of the Network stage.
    pub fn iperf(&self) -> &crate::iperf::IperfSupervisor {
        &self.inner.iperf
    }

    /// A per-run lock serializing log and sensor batches of one run.
    pub(crate) fn run_lock(&self, run_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.inner.run_locks.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        if locks.len() > 4096 {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks
            .entry(run_id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    fn nonces(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.inner
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The token nonce of a run, when it was read before.
    pub(crate) fn known_nonce(&self, run_id: &str) -> Option<String> {
        self.nonces().get(run_id).cloned()
    }

    /// Keeps a run's token nonce for the next requests.
    pub(crate) fn remember_nonce(&self, run_id: &str, nonce: &str) {
        let mut nonces = self.nonces();
        if nonces.len() >= NONCES_KEPT {
            nonces.clear();
        }
        nonces.insert(run_id.to_string(), nonce.to_string());
    }

    /// A handle that does not keep this orchestrator alive.
    pub fn downgrade(&self) -> WeakOrchestrator {
        WeakOrchestrator(Arc::downgrade(&self.inner))
    }

    /// Wakes the reconcilers (dispatcher, deadlines) now.
    pub fn poke(&self) {
        self.inner.poke.notify_one();
    }

    /// Waits until poked or until `timeout` passes.
    pub async fn wait_for_poke(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.poke.notified()).await;
    }
}
