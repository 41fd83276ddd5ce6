//! The driver of the state machine: every transition is decided by
//! [`crate::machine::decide`], persisted compare-and-set (run row,
//! stage row, transition log, dispatcher slot and audit record in one
//! transaction) and only then announced on the events hub.

use std::sync::Arc;

use sea_orm::{EntityTrait, TransactionTrait};
use vetting_probes::protocol::{Command, RunPosition, StageRef};

use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::error::{OrchestratorError, Result, db};
use crate::events::EventsHub;
use crate::machine::{Event, RunState};
use crate::model::{Actor, CorruptRow, Host, Run};
use crate::runs::EventContext;
use crate::store::Store;
use crate::store::audit;
use crate::store::entities::run;
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
    pub(crate) power_requests: crate::dispatcher::PowerRequests,
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

    // ---------------------------------------------------------------- hosts

    // ----------------------------------------------------------------- runs

    /// The run token, derived from the stored nonce and the secret key.
    pub async fn token_for(&self, run_id: &str) -> Result<String> {
        let model = crate::store::by_key(run::Entity::find_by_id(run_id.to_string()), self.conn())
            .await
            .map_err(db("reading a run"))?
            .ok_or_else(|| OrchestratorError::RunNotFound(run_id.to_string()))?;
        let nonce = hex::decode(&model.token_nonce).map_err(|_| CorruptRow {
            run_id: run_id.to_string(),
            field: "token_nonce",
            value: model.token_nonce.clone(),
        })?;
        Ok(tokens::derive_token(&self.inner.key, run_id, &nonce))
    }

    // ------------------------------------------------------ the one driver

    // ----------------------------------------------------- reconcilers

    // ---------------------------------------------------- agent-facing

    /// The agent booted: the boot script now exits to disk.
    pub(crate) async fn hello(&self, run: &Run) -> Result<Run> {
        if run.state == RunState::Booting && run.hello_at_ms.is_none() {
            self.runs()
                .apply_unless_moved(
                    &run.id,
                    Event::Hello,
                    EventContext {
                        actor: Some(Actor::agent()),
                        expected_state: Some(RunState::Booting),
                        ..Default::default()
                    },
                )
                .await?;
        }
        self.run(&run.id).await
    }

    /// Records that `run`'s boot script, token included, went to `peer`
    /// (an audit record `boot_script`): the agent's hello is compared with
    /// it ([`Orchestrator::check_hello_address`]).
    pub async fn record_boot_script_fetch(
        &self,
        run: &Run,
        peer: std::net::IpAddr,
        mac: &str,
    ) -> Result<()> {
        let txn = self
            .conn()
            .begin_with_options(crate::store::WRITE)
            .await
            .map_err(db("recording a boot script"))?;
        audit::record(
            &txn,
            self.now_ms(),
            audit::Entry::new(&Actor::orchestrator(), BOOT_SCRIPT_AUDIT)
                .run(&run.id)
                .host(run.host_id)
                .detail(serde_json::json!({"peer": plain_address(peer).to_string(), "mac": mac})),
        )
        .await?;
        txn.commit().await.map_err(db("recording a boot script"))?;
        Ok(())
    }

    /// The agent's first hello came from `hello_peer`. Where the boot
    /// script went to another address, or to more than this one, a warning
    /// goes to the run's log and an audit record `hello_address_mismatch`
    /// names them all: whoever fetched the token first can say hello and
    /// close the real host's boot window. The hello stands (the token is
    /// the gate); nothing is said when no fetch was recorded.
    pub(crate) async fn check_hello_address(
        &self,
        run: &Run,
        hello_peer: std::net::IpAddr,
    ) -> Result<()> {
        let hello = plain_address(hello_peer).to_string();
        let fetched: std::collections::BTreeSet<String> = self
            .operator()
            .audit_log(Some(&run.id))
            .await?
            .into_iter()
            .filter(|record| record.action == BOOT_SCRIPT_AUDIT)
            .filter_map(|record| {
                let detail: serde_json::Value =
                    serde_json::from_str(record.detail.as_deref()?).ok()?;
                Some(detail.get("peer")?.as_str()?.to_string())
            })
            .collect();
        if fetched.is_empty() || fetched.iter().all(|peer| *peer == hello) {
            return Ok(());
        }
        let fetched: Vec<String> = fetched.into_iter().collect();
        let text = format!(
            "agent hello from {hello}, but the boot script with the run's token was fetched by {}",
            fetched.join(", ")
        );
        tracing::warn!(run = %run.id, "{text}");
        let now = self.now_ms();
        crate::oplog::append(
            &self.config().data_dir,
            self.hub(),
            &run.id,
            now,
            "warn",
            &text,
        );
        let txn = self
            .conn()
            .begin_with_options(crate::store::WRITE)
            .await
            .map_err(db("recording a hello address mismatch"))?;
        audit::record(
            &txn,
            now,
            audit::Entry::new(&Actor::orchestrator(), "hello_address_mismatch")
                .run(&run.id)
                .host(run.host_id)
                .detail(serde_json::json!({"hello": hello, "boot_script_fetched_by": fetched})),
        )
        .await?;
        txn.commit()
            .await
            .map_err(db("recording a hello address mismatch"))?;
        Ok(())
    }

    /// The agent claims the run: bcrypt is checked here, once per run.
    pub(crate) async fn claim(&self, run: &Run, token: &str) -> Result<Run> {
        if run.claimed_at_ms.is_none() {
            let model = crate::store::by_key(run::Entity::find_by_id(run.id.clone()), self.conn())
                .await
                .map_err(db("reading a run"))?
                .ok_or_else(|| OrchestratorError::RunNotFound(run.id.clone()))?;
            let token = token.to_string();
            let hash = model.token_hash.clone();
            let scheme = tokens::HashScheme::from_stored(model.token_hash_scheme.as_deref())
                .ok_or(OrchestratorError::Unauthorized(
                    tokens::TokenError::HashMismatch,
                ))?;
            tokio::task::spawn_blocking(move || tokens::verify_bcrypt(&token, &hash, scheme))
                .await
                .map_err(|error| OrchestratorError::BadRequest(error.to_string()))?
                .map_err(OrchestratorError::Unauthorized)?;
        }
        if run.state == RunState::Booting {
            self.runs()
                .apply_unless_moved(
                    &run.id,
                    Event::Claim,
                    EventContext {
                        actor: Some(Actor::agent()),
                        expected_state: Some(RunState::Booting),
                        ..Default::default()
                    },
                )
                .await?;
        }
        self.run(&run.id).await
    }

    // ---------------------------------------------------- operator actions

    // ---------------------------------------------------------- queries
}

/// What the heartbeat answers in each state.
pub fn command_for(run: &Run, agent_current: Option<StageRef>) -> Command {
    match run.state {
        RunState::Completed | RunState::Released | RunState::Cancelled | RunState::Failed => {
            Command::Shutdown
        }
        RunState::FailedHolding => Command::Abort,
        state if state.stage().is_some() => {
            if run.current.is_some() && agent_current != run.current {
                Command::RetryStage
            } else {
                Command::Continue
            }
        }
        _ => Command::Continue,
    }
}

/// The position the agent is told.
pub fn position_of(run: &Run) -> RunPosition {
    RunPosition {
        state: run.state.as_str().to_string(),
        current: run.current,
    }
}

/// The audit action of a boot script handed out.
const BOOT_SCRIPT_AUDIT: &str = "boot_script";

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as plain IPv4.
pub fn plain_address(address: std::net::IpAddr) -> std::net::IpAddr {
    match address {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, std::net::IpAddr::V4),
        v4 => v4,
    }
}
