//! The driver of the state machine: every transition is decided by
//! [`crate::state_machine::decide`], persisted compare-and-set (run row,
//! stage row, transition log, dispatcher slot and audit record in one
//! transaction) and only then announced on the events hub.

use std::sync::Arc;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use vetting_probes::protocol::{Command, RunPosition, StageRef, WipeFinding};

use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::events::{EventsHub, HubEvent};
use crate::model::{
    Actor, Applied, AuditRecord, CorruptRow, Host, Mac, NewHost, Run, StageRecord, TransitionRecord,
};
use crate::state_machine::{Action, Event, HoldReason, InvalidTransition, RunState, Stage, decide};
use crate::store::entities::{audit, host, host_mac, run, slot, stage, transition};
use crate::store::{Store, StoreError};
use crate::tokens::{self, SecretKey, TokenError};

/// Why an orchestrator operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
    #[error("run {run_id}: {source}")]
    InvalidTransition {
        run_id: String,
        #[source]
        source: InvalidTransition,
    },
    #[error("run {0} does not exist")]
    RunNotFound(String),
    #[error("host {0} does not exist")]
    HostNotFound(String),
    #[error("host `{name}`: {message}")]
    InvalidHost { name: String, message: String },
    #[error("MAC {mac} already belongs to host `{host}`")]
    MacTaken { mac: String, host: String },
    #[error("host `{host}` has run {run_id} in state {state}; cancel it first")]
    HostBusy {
        host: String,
        run_id: String,
        state: RunState,
    },
    #[error("no dispatcher slot is free ({max} runs in flight)")]
    NoSlotFree { max: u32 },
    #[error("run {run_id}: the hold ({reason}) cannot be overridden; only wipe-probe holds can")]
    OverrideRefused { run_id: String, reason: String },
    #[error("run {run_id} changed concurrently; try again")]
    Conflict { run_id: String },
    #[error("run {run_id} is in {state}: a result for {stage} attempt {attempt} is not expected")]
    NotCurrentStage {
        run_id: String,
        state: RunState,
        stage: String,
        attempt: u32,
        position: RunPosition,
    },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(TokenError),
    #[error("run {run_id} has ended; its token works only for heartbeats during the grace period")]
    RunEnded { run_id: String },
    #[error("secret key: {0}")]
    Key(#[from] tokens::KeyError),
    #[error("{0}")]
    Internal(String),
    #[error("I/O error while {doing}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// A group of agent writes failed as a whole; each of its writes gets
    /// the same cause.
    #[error("storing agent data")]
    AgentWrites(#[source] std::sync::Arc<crate::agent_api::AgentWriteFailure>),
}

type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

/// Maps a sea-orm error into a store error with what was being done.
fn db(doing: &'static str) -> impl FnOnce(sea_orm::DbErr) -> OrchestratorError {
    move |source| OrchestratorError::Store(StoreError::Db { doing, source })
}

/// Extra facts an event carries into its transition.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    pub actor: Option<Actor>,
    /// For operator actions: what the operator acknowledged.
    pub acknowledged: Option<String>,
    /// For `StageHeld`: why.
    pub hold_reason: Option<HoldReason>,
    /// For failures: the reason shown to the operator.
    pub reason: Option<String>,
    /// Only apply when the run is at this version (compare-and-set by the
    /// caller; otherwise the current version is used and retried).
    pub expected_version: Option<i64>,
    /// Only apply when the run is in this state.
    pub expected_state: Option<RunState>,
    /// The stage outcome to record for stage events (`passed`, `warned`, ...).
    pub outcome: Option<String>,
    /// JSON of the orchestrator's verdict, recorded on the stage row.
    pub verdict_json: Option<String>,
    /// JSON of the agent's verdict, recorded on the stage row.
    pub agent_verdict_json: Option<String>,
    /// For stage results: the inventory and measurements written in the
    /// transition's transaction.
    pub stage_data: Option<Arc<crate::agent_api::StageData>>,
    /// For `StageHeld`: what the wipe probe found, recorded on the stage
    /// row (an override must name ids among them).
    pub wipe_findings: Option<Vec<WipeFinding>>,
    /// For `OverrideWipe`: the finding ids the operator acknowledged.
    pub acknowledged_findings: Option<Vec<String>>,
}

/// The orchestrator: open it once per process; cheap to clone.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: Config,
    key: SecretKey,
    clock: Arc<dyn Clock>,
    hub: EventsHub,
    bcrypt_cost: u32,
    poke: tokio::sync::Notify,
    iperf: crate::iperf::IperfSupervisor,
    run_locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    reports: Arc<crate::report_queue::ReportQueue>,
    /// Runs' token nonces once read (a nonce never changes).
    nonces: std::sync::Mutex<std::collections::HashMap<String, String>>,
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
                nonces: Default::default(),
            }),
        };
        orchestrator.size_slots().await?;
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
                nonces: Default::default(),
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
    fn conn(&self) -> &sea_orm::DatabaseConnection {
        self.inner.store.db()
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

    /// Queues the run for its orchestrator-owned states (`SpecValidate`,
    /// `Reporting`) to be resolved by the one report worker, off the
    /// request path. Must be called inside the runtime.
    pub fn queue_resolution(&self, run_id: &str) {
        if self.inner.reports.push(run_id) {
            tokio::spawn(crate::report_queue::work(
                self.inner.reports.clone(),
                self.downgrade(),
            ));
        }
    }

    /// Whether the run waits in (or is being resolved by) the report
    /// worker.
    pub fn resolution_pending(&self, run_id: &str) -> bool {
        self.inner.reports.is_pending(run_id)
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

    /// Registers a host. Its MACs must be free (a removed host's MACs are).
    pub async fn register_host(&self, new: NewHost, actor: &Actor) -> Result<Host> {
        let name = new.name.trim().to_string();
        let invalid = |message: String| OrchestratorError::InvalidHost {
            name: name.clone(),
            message,
        };
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(invalid(
                "the name must be 1 to 128 printable characters".into(),
            ));
        }
        if new.macs.is_empty() {
            return Err(invalid("at least one MAC address is needed".into()));
        }
        let mut macs = Vec::new();
        for text in &new.macs {
            let mac = Mac::parse(text).map_err(invalid)?;
            if !macs.contains(&mac) {
                macs.push(mac);
            }
        }
        let now = self.now_ms();
        let txn = self
            .conn()
            .begin()
            .await
            .map_err(db("registering a host"))?;
        if host::Entity::find()
            .filter(host::Column::Name.eq(name.as_str()))
            .one(&txn)
            .await
            .map_err(db("registering a host"))?
            .is_some()
        {
            return Err(invalid("a host with this name exists".into()));
        }
        for mac in &macs {
            if let Some(taken) =
                crate::store::by_key(host_mac::Entity::find_by_id(mac.as_str().to_string()), &txn)
                    .await
                    .map_err(db("registering a host"))?
            {
                let owner = crate::store::by_key(host::Entity::find_by_id(taken.host_id), &txn)
                    .await
                    .map_err(db("registering a host"))?
                    .map_or_else(|| taken.host_id.to_string(), |owner| owner.name);
                return Err(OrchestratorError::MacTaken {
                    mac: mac.to_string(),
                    host: owner,
                });
            }
        }
        let to_json = |value: &Option<serde_json::Value>| value.as_ref().map(|v| v.to_string());
        let inserted = host::ActiveModel {
            name: Set(name.clone()),
            serial: Set(clean(new.serial.clone())),
            system_uuid: Set(clean(new.system_uuid.clone())),
            spec_profile: Set(clean(new.spec_profile.clone())),
            spec_overrides: Set(to_json(&new.spec_overrides)),
            power: Set(to_json(&new.power)),
            created_at_ms: Set(now),
            removed_at_ms: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(db("registering a host"))?;
        for mac in &macs {
            host_mac::ActiveModel {
                mac: Set(mac.as_str().to_string()),
                host_id: Set(inserted.id),
            }
            .insert(&txn)
            .await
            .map_err(db("registering a host's MAC"))?;
        }
        insert_audit(
            &txn,
            now,
            actor,
            "register_host",
            None,
            Some(inserted.id),
            None,
            Some(serde_json::json!({"name": name, "macs": macs}).to_string()),
        )
        .await?;
        txn.commit().await.map_err(db("registering a host"))?;
        self.inner
            .hub
            .publish(crate::events::HubEvent::HostsChanged);
        Ok(Host::from_entity(inserted, macs))
    }

    /// Removes a host: its MACs are freed (dnsmasq stops answering them),
    /// its history stays. Refused while it has a run in progress.
    pub async fn remove_host(&self, host_id: i64, actor: &Actor) -> Result<()> {
        let now = self.now_ms();
        let txn = self.conn().begin().await.map_err(db("removing a host"))?;
        let found = crate::store::by_key(host::Entity::find_by_id(host_id), &txn)
            .await
            .map_err(db("removing a host"))?
            .ok_or_else(|| OrchestratorError::HostNotFound(host_id.to_string()))?;
        let runs = run::Entity::find()
            .filter(run::Column::HostId.eq(host_id))
            .all(&txn)
            .await
            .map_err(db("removing a host"))?;
        for model in runs {
            let run = Run::from_entity(model)?;
            if !run.state.is_terminal() {
                return Err(OrchestratorError::HostBusy {
                    host: found.name.clone(),
                    run_id: run.id,
                    state: run.state,
                });
            }
        }
        host_mac::Entity::delete_many()
            .filter(host_mac::Column::HostId.eq(host_id))
            .exec(&txn)
            .await
            .map_err(db("removing a host"))?;
        host::Entity::update_many()
            .col_expr(host::Column::RemovedAtMs, Expr::value(now))
            .filter(host::Column::Id.eq(host_id))
            .exec(&txn)
            .await
            .map_err(db("removing a host"))?;
        insert_audit(
            &txn,
            now,
            actor,
            "remove_host",
            None,
            Some(host_id),
            None,
            Some(serde_json::json!({"name": found.name}).to_string()),
        )
        .await?;
        txn.commit().await.map_err(db("removing a host"))?;
        self.inner
            .hub
            .publish(crate::events::HubEvent::HostsChanged);
        Ok(())
    }

    /// Hosts, registered ones first, by name.
    pub async fn list_hosts(&self, include_removed: bool) -> Result<Vec<Host>> {
        let mut query = host::Entity::find().order_by_asc(host::Column::Name);
        if !include_removed {
            query = query.filter(host::Column::RemovedAtMs.is_null());
        }
        let hosts = query.all(self.conn()).await.map_err(db("listing hosts"))?;
        let macs = host_mac::Entity::find()
            .all(self.conn())
            .await
            .map_err(db("listing hosts"))?;
        Ok(hosts
            .into_iter()
            .map(|model| {
                let mut own: Vec<Mac> = macs
                    .iter()
                    .filter(|mac| mac.host_id == model.id)
                    .filter_map(|mac| Mac::parse(&mac.mac).ok())
                    .collect();
                own.sort();
                Host::from_entity(model, own)
            })
            .collect())
    }

    pub async fn get_host(&self, host_id: i64) -> Result<Host> {
        let model = crate::store::by_key(host::Entity::find_by_id(host_id), self.conn())
            .await
            .map_err(db("reading a host"))?
            .ok_or_else(|| OrchestratorError::HostNotFound(host_id.to_string()))?;
        let macs = host_mac::Entity::find()
            .filter(host_mac::Column::HostId.eq(host_id))
            .all(self.conn())
            .await
            .map_err(db("reading a host"))?
            .into_iter()
            .filter_map(|mac| Mac::parse(&mac.mac).ok())
            .collect();
        Ok(Host::from_entity(model, macs))
    }

    /// The host that owns `mac`, if it is registered.
    pub async fn host_by_mac(&self, mac: &Mac) -> Result<Option<Host>> {
        let Some(entry) = crate::store::by_key(
            host_mac::Entity::find_by_id(mac.as_str().to_string()),
            self.conn(),
        )
        .await
        .map_err(db("looking up a MAC"))?
        else {
            return Ok(None);
        };
        Ok(Some(self.get_host(entry.host_id).await?))
    }

    // ----------------------------------------------------------------- runs

    /// Creates a run for a host, in `Registered`, with its token's nonce
    /// and bcrypt hash stored (the token itself is derived when needed).
    pub async fn create_run(&self, host_id: i64, actor: &Actor) -> Result<Run> {
        let host = self.get_host(host_id).await?;
        if host.removed_at_ms.is_some() {
            return Err(OrchestratorError::InvalidHost {
                name: host.name,
                message: "the host was removed".into(),
            });
        }
        if let Some(active) = self.active_run_of_host(host_id).await? {
            return Err(OrchestratorError::HostBusy {
                host: host.name,
                run_id: active.id,
                state: active.state,
            });
        }
        let run_id = uuid::Uuid::new_v4().to_string();
        let issued = tokens::issue_with_cost(&self.inner.key, &run_id, self.inner.bcrypt_cost)
            .map_err(OrchestratorError::Unauthorized)?;
        let now = self.now_ms();
        let txn = self.conn().begin().await.map_err(db("creating a run"))?;
        run::ActiveModel {
            id: Set(run_id.clone()),
            host_id: Set(host_id),
            state: Set(RunState::Registered.as_str().to_string()),
            version: Set(0),
            hold_reason: Set(None),
            failure_reason: Set(None),
            current_stage: Set(None),
            current_attempt: Set(None),
            state_deadline_ms: Set(None),
            heartbeat_deadline_ms: Set(None),
            last_heartbeat_ms: Set(None),
            token_nonce: Set(issued.nonce_hex),
            token_hash: Set(issued.bcrypt_hash),
            token_hash_scheme: Set(Some(issued.scheme.as_str().to_string())),
            claimed_at_ms: Set(None),
            hello_at_ms: Set(None),
            hold_on_failure: Set(self.inner.config.runs.hold_on_failure),
            override_flags: Set(None),
            acknowledged_findings: Set(None),
            queued_at_ms: Set(None),
            created_at_ms: Set(now),
            updated_at_ms: Set(now),
            ended_at_ms: Set(None),
            next_log_seq: Set(0),
            next_sensor_seq: Set(0),
            created_by: Set(actor.as_str().to_string()),
        }
        .insert(&txn)
        .await
        .map_err(db("creating a run"))?;
        insert_audit(
            &txn,
            now,
            actor,
            "create_run",
            Some(&run_id),
            Some(host_id),
            None,
            None,
        )
        .await?;
        txn.commit().await.map_err(db("creating a run"))?;
        self.get_run(&run_id).await
    }

    /// Creates a run and queues it: what an operator's "start" does.
    pub async fn start_run(&self, host_id: i64, actor: &Actor) -> Result<Run> {
        let run = self.create_run(host_id, actor).await?;
        self.apply(
            &run.id,
            Event::Enqueue,
            EventContext {
                actor: Some(actor.clone()),
                ..Default::default()
            },
        )
        .await?;
        self.poke();
        self.get_run(&run.id).await
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        let model = crate::store::by_key(run::Entity::find_by_id(run_id.to_string()), self.conn())
            .await
            .map_err(db("reading a run"))?
            .ok_or_else(|| OrchestratorError::RunNotFound(run_id.to_string()))?;
        Ok(Run::from_entity(model)?)
    }

    /// Runs in any of `states`, oldest first (the reconcilers' view: the
    /// few runs that need them, not the whole history).
    pub async fn runs_in_states(&self, states: &[RunState]) -> Result<Vec<Run>> {
        run::Entity::find()
            .filter(run::Column::State.is_in(states.iter().map(|state| state.as_str())))
            .order_by_asc(run::Column::CreatedAtMs)
            .order_by_asc(run::Column::Id)
            .all(self.conn())
            .await
            .map_err(db("listing runs by state"))?
            .into_iter()
            .map(|model| Run::from_entity(model).map_err(OrchestratorError::from))
            .collect()
    }

    /// Whether some run holds a dispatcher slot.
    pub async fn any_run_holds_a_slot(&self) -> Result<bool> {
        let slot_states = RunState::ALL
            .iter()
            .filter(|state| state.holds_slot())
            .map(|state| state.as_str());
        let found = run::Entity::find()
            .select_only()
            .column(run::Column::Id)
            .filter(run::Column::State.is_in(slot_states))
            .into_tuple::<String>()
            .one(self.conn())
            .await
            .map_err(db("looking for runs in flight"))?;
        Ok(found.is_some())
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, host_id: Option<i64>) -> Result<Vec<Run>> {
        let mut query = run::Entity::find()
            .order_by_desc(run::Column::CreatedAtMs)
            .order_by_desc(run::Column::Id);
        if let Some(host_id) = host_id {
            query = query.filter(run::Column::HostId.eq(host_id));
        }
        query
            .all(self.conn())
            .await
            .map_err(db("listing runs"))?
            .into_iter()
            .map(|model| Run::from_entity(model).map_err(OrchestratorError::from))
            .collect()
    }

    /// The host's run that has not ended, if any (a host has at most one).
    pub async fn active_run_of_host(&self, host_id: i64) -> Result<Option<Run>> {
        for run in self.list_runs(Some(host_id)).await? {
            if !run.state.is_terminal() {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

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

    /// Applies `event` to a run: decide by the table, then persist
    /// compare-and-set (retrying on a concurrent non-conflicting change),
    /// then announce. Follow-up transitions that belong to the same step
    /// (`Failed` → `FailedHolding`) are made in the same transaction.
    pub async fn apply(
        &self,
        run_id: &str,
        event: Event,
        context: EventContext,
    ) -> Result<Applied> {
        for _ in 0..20 {
            let run = self.get_run(run_id).await?;
            if let Some(expected) = context.expected_state
                && run.state != expected
            {
                return Err(OrchestratorError::InvalidTransition {
                    run_id: run_id.to_string(),
                    source: InvalidTransition {
                        state: run.state,
                        event,
                    },
                });
            }
            if let Some(version) = context.expected_version
                && run.version != version
            {
                return Err(OrchestratorError::Conflict {
                    run_id: run_id.to_string(),
                });
            }
            let (to, action) = decide(run.state, event).map_err(|source| {
                OrchestratorError::InvalidTransition {
                    run_id: run_id.to_string(),
                    source,
                }
            })?;
            if event == Event::OverrideWipe {
                match run.hold_reason {
                    Some(reason) if reason.is_wipe_probe() => {}
                    other => {
                        return Err(OrchestratorError::OverrideRefused {
                            run_id: run_id.to_string(),
                            reason: other.map_or("none", HoldReason::as_str).to_string(),
                        });
                    }
                }
                self.check_acknowledged(&run, &context).await?;
            }
            match self.persist(&run, event, to, action, &context).await {
                Ok(announced) => {
                    for hub_event in announced {
                        self.inner.hub.publish(hub_event);
                    }
                    if !to.holds_slot() || to == RunState::WaitingWoL {
                        // a slot may have freed, or a dispatch happened
                        self.poke();
                    }
                    return Ok(Applied {
                        from: run.state,
                        to,
                        event,
                        action,
                    });
                }
                Err(OrchestratorError::Conflict { .. }) if context.expected_version.is_none() => {
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
        Err(OrchestratorError::Conflict {
            run_id: run_id.to_string(),
        })
    }

    /// One transaction: CAS the run row first (so SQLite takes the write
    /// lock before any read), then the slot, stage rows, transition log and
    /// audit record.
    async fn persist(
        &self,
        run: &Run,
        event: Event,
        to: RunState,
        action: Action,
        context: &EventContext,
    ) -> Result<Vec<HubEvent>> {
        let now = self.now_ms();
        let config = &self.inner.config;
        let actor = context.actor.clone().unwrap_or_else(Actor::orchestrator);
        let txn = self
            .conn()
            .begin()
            .await
            .map_err(db("applying a transition"))?;

        // what the run row becomes
        let mut final_state = to;
        let mut hold_reason = run.hold_reason;
        let mut failure_reason = run.failure_reason.clone();
        let mut current = run.current;
        let mut override_flags = run.override_flags.clone();
        let mut acknowledged_findings = run.acknowledged_findings.clone();
        let mut state_deadline = run.state_deadline_ms;
        let mut heartbeat_deadline = run.heartbeat_deadline_ms;
        let mut ended_at = run.ended_at_ms;
        let mut queued_at = run.queued_at_ms;
        let mut hello_at = run.hello_at_ms;
        let mut claimed_at = run.claimed_at_ms;
        let mut extra_transitions: Vec<(RunState, RunState, Event)> = Vec::new();

        match event {
            Event::Enqueue => queued_at = Some(now),
            Event::Hello => {
                hello_at = Some(now);
                heartbeat_deadline = Some(now + secs(config.deadlines.heartbeat_silence_secs));
            }
            Event::Claim => {
                claimed_at = Some(now);
                heartbeat_deadline = Some(now + secs(config.deadlines.heartbeat_silence_secs));
            }
            _ => {}
        }
        // the next stage, for actions that start one
        let next_stage = match action {
            Action::StartStage => to.stage().map(|stage| (stage, 1)),
            Action::RerunStorage => {
                let attempts = stage::Entity::find()
                    .filter(stage::Column::RunId.eq(run.id.as_str()))
                    .filter(stage::Column::Stage.eq(Stage::Storage.as_str()))
                    .count(self.conn())
                    .await
                    .map_err(db("counting storage attempts"))?;
                Some((Stage::Storage, attempts as u32 + 1))
            }
            _ => None,
        };
        if let Some((stage, attempt)) = next_stage {
            current = Some(StageRef { stage, attempt });
        } else if to.stage().is_none() {
            current = None;
        }
        match action {
            Action::Fail => {
                failure_reason = context
                    .reason
                    .clone()
                    .or_else(|| Some(format!("{} in {}", event, run.state)));
                if run.hold_on_failure {
                    final_state = RunState::FailedHolding;
                    hold_reason = Some(HoldReason::Failure);
                    extra_transitions.push((
                        RunState::Failed,
                        RunState::FailedHolding,
                        Event::HoldOpened,
                    ));
                }
            }
            Action::Hold => {
                hold_reason = context.hold_reason.or(Some(HoldReason::Failure));
                failure_reason = context.reason.clone().or(failure_reason);
            }
            Action::RerunStorage => {
                override_flags = vec!["override_wipe".to_string()];
                acknowledged_findings = context.acknowledged_findings.clone().unwrap_or_default();
                hold_reason = None;
                failure_reason = None;
            }
            _ => {}
        }
        if final_state.is_terminal() {
            ended_at = Some(now);
        }
        state_deadline = match final_state {
            RunState::WaitingWoL => Some(now + secs(config.deadlines.power_on_secs)),
            RunState::Booting if event != Event::Hello => {
                Some(now + secs(config.deadlines.boot_secs))
            }
            RunState::Booting => state_deadline,
            RunState::SpecValidate => Some(now + secs(config.deadlines.spec_validate_secs)),
            state => state
                .stage()
                .map(|stage| now + secs(stage_deadline_secs(config, stage))),
        };
        if !final_state.agent_is_active() && final_state != RunState::Booting {
            heartbeat_deadline = None;
        }
        if action == Action::RerunStorage {
            heartbeat_deadline = Some(now + secs(config.deadlines.heartbeat_silence_secs));
        }
        if !matches!(action, Action::RerunStorage) && final_state != RunState::Storage {
            // flags are armed for one Storage attempt
            if !matches!(final_state, RunState::FailedHolding) {
                override_flags.clear();
                acknowledged_findings.clear();
            }
        }

        let encoding = |what: &'static str| {
            move |error: serde_json::Error| {
                OrchestratorError::Internal(format!("encoding {what}: {error}"))
            }
        };
        let acknowledged_json = if acknowledged_findings.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&acknowledged_findings)
                    .map_err(encoding("acknowledged finding ids"))?,
            )
        };
        let wipe_findings_json = match &context.wipe_findings {
            Some(findings) => {
                Some(serde_json::to_string(findings).map_err(encoding("wipe-probe findings"))?)
            }
            None => None,
        };

        // 1. compare-and-set the run row
        let updated = run::Entity::update_many()
            .col_expr(run::Column::State, Expr::value(final_state.as_str()))
            .col_expr(run::Column::Version, Expr::value(run.version + 1))
            .col_expr(
                run::Column::HoldReason,
                Expr::value(hold_reason.map(|r| r.as_str().to_string())),
            )
            .col_expr(
                run::Column::FailureReason,
                Expr::value(failure_reason.clone()),
            )
            .col_expr(
                run::Column::CurrentStage,
                Expr::value(current.map(|c| c.stage.as_str().to_string())),
            )
            .col_expr(
                run::Column::CurrentAttempt,
                Expr::value(current.map(|c| c.attempt as i32)),
            )
            .col_expr(run::Column::StateDeadlineMs, Expr::value(state_deadline))
            .col_expr(
                run::Column::HeartbeatDeadlineMs,
                Expr::value(heartbeat_deadline),
            )
            .col_expr(
                run::Column::OverrideFlags,
                Expr::value(if override_flags.is_empty() {
                    None
                } else {
                    Some(override_flags.join(","))
                }),
            )
            .col_expr(
                run::Column::AcknowledgedFindings,
                Expr::value(acknowledged_json),
            )
            .col_expr(run::Column::QueuedAtMs, Expr::value(queued_at))
            .col_expr(run::Column::HelloAtMs, Expr::value(hello_at))
            .col_expr(run::Column::ClaimedAtMs, Expr::value(claimed_at))
            .col_expr(run::Column::EndedAtMs, Expr::value(ended_at))
            .col_expr(run::Column::UpdatedAtMs, Expr::value(now))
            .filter(run::Column::Id.eq(run.id.as_str()))
            .filter(run::Column::Version.eq(run.version))
            .filter(run::Column::State.eq(run.state.as_str()))
            .exec(&txn)
            .await
            .map_err(db("updating a run"))?;
        if updated.rows_affected != 1 {
            return Err(OrchestratorError::Conflict {
                run_id: run.id.clone(),
            });
        }
        // what a stage result stores beside its transition
        if let Some(data) = &context.stage_data {
            crate::agent_api::write_stage_data(&txn, &run.id, data, now)
                .await
                .map_err(db("storing a result's inventory and measurements"))?;
        }

        // 2. the dispatcher slot
        let held_before = run.state.holds_slot();
        let holds_after = final_state.holds_slot();
        if !held_before && holds_after {
            self.take_slot(&txn, &run.id).await?;
        } else if held_before && !holds_after {
            slot::Entity::update_many()
                .col_expr(slot::Column::RunId, Expr::value(Option::<String>::None))
                .filter(slot::Column::RunId.eq(run.id.as_str()))
                .exec(&txn)
                .await
                .map_err(db("freeing a dispatcher slot"))?;
        }

        // 3. stage rows: close the current one, open the next
        if let Some(finished) = run.current
            && (current != run.current || final_state != run.state)
        {
            let outcome = context.outcome.clone().unwrap_or_else(|| match event {
                Event::StagePassed => "passed".into(),
                Event::StageSkipped => "skipped".into(),
                Event::StageFailed => "failed".into(),
                Event::StageHeld => "held".into(),
                Event::StageTimeout => "timed_out".into(),
                Event::HeartbeatTimeout => "agent_lost".into(),
                Event::Cancel => "cancelled".into(),
                _ => "ended".into(),
            });
            stage::Entity::update_many()
                .col_expr(stage::Column::Outcome, Expr::value(outcome))
                .col_expr(stage::Column::Reason, Expr::value(context.reason.clone()))
                .col_expr(stage::Column::FinishedAtMs, Expr::value(now))
                .col_expr(
                    stage::Column::Verdict,
                    Expr::value(context.verdict_json.clone()),
                )
                .col_expr(
                    stage::Column::AgentVerdict,
                    Expr::value(context.agent_verdict_json.clone()),
                )
                .col_expr(stage::Column::WipeFindings, Expr::value(wipe_findings_json))
                .filter(stage::Column::RunId.eq(run.id.as_str()))
                .filter(stage::Column::Stage.eq(finished.stage.as_str()))
                .filter(stage::Column::Attempt.eq(finished.attempt as i32))
                .filter(stage::Column::FinishedAtMs.is_null())
                .exec(&txn)
                .await
                .map_err(db("closing a stage"))?;
        }
        if let Some((next, attempt)) = next_stage {
            stage::ActiveModel {
                run_id: Set(run.id.clone()),
                stage: Set(next.as_str().to_string()),
                attempt: Set(attempt as i32),
                outcome: Set("running".into()),
                reason: Set(None),
                started_at_ms: Set(now),
                finished_at_ms: Set(None),
                agent_verdict: Set(None),
                verdict: Set(None),
                response: Set(None),
                wipe_findings: Set(None),
            }
            .insert(&txn)
            .await
            .map_err(db("opening a stage"))?;
        }
        if to == RunState::SpecValidate && run.state != RunState::SpecValidate {
            // the orchestrator-owned stage is recorded as a stage row too
            stage::ActiveModel {
                run_id: Set(run.id.clone()),
                stage: Set("SpecValidate".into()),
                attempt: Set(1),
                outcome: Set("running".into()),
                reason: Set(None),
                started_at_ms: Set(now),
                finished_at_ms: Set(None),
                agent_verdict: Set(None),
                verdict: Set(None),
                response: Set(None),
                wipe_findings: Set(None),
            }
            .insert(&txn)
            .await
            .map_err(db("opening SpecValidate"))?;
        }
        if run.state == RunState::SpecValidate && to != RunState::SpecValidate {
            let outcome = match event {
                Event::SpecPassed => "passed",
                Event::SpecFailed => "failed",
                Event::StageTimeout => "timed_out",
                _ => "cancelled",
            };
            stage::Entity::update_many()
                .col_expr(
                    stage::Column::Outcome,
                    Expr::value(
                        context
                            .outcome
                            .clone()
                            .unwrap_or_else(|| outcome.to_string()),
                    ),
                )
                .col_expr(stage::Column::Reason, Expr::value(context.reason.clone()))
                .col_expr(stage::Column::FinishedAtMs, Expr::value(now))
                .filter(stage::Column::RunId.eq(run.id.as_str()))
                .filter(stage::Column::Stage.eq("SpecValidate"))
                .filter(stage::Column::FinishedAtMs.is_null())
                .exec(&txn)
                .await
                .map_err(db("closing SpecValidate"))?;
        }

        // 4. the transition log (and the automatic hold after a failure)
        let detail = context.reason.clone();
        let mut announced = Vec::new();
        let mut steps = vec![(run.state, to, event)];
        steps.extend(extra_transitions);
        for (from, step_to, step_event) in steps {
            transition::ActiveModel {
                run_id: Set(run.id.clone()),
                from_state: Set(from.as_str().to_string()),
                to_state: Set(step_to.as_str().to_string()),
                event: Set(step_event.as_str().to_string()),
                actor: Set(actor.as_str().to_string()),
                at_ms: Set(now),
                detail: Set(detail.clone()),
                ..Default::default()
            }
            .insert(&txn)
            .await
            .map_err(db("recording a transition"))?;
            announced.push(HubEvent::Transition {
                run_id: run.id.clone(),
                host_id: run.host_id,
                from,
                to: step_to,
                event: step_event,
                at_ms: now,
            });
        }

        // 5. operator actions leave an audit record
        if event.is_operator_action() {
            insert_audit(
                &txn,
                now,
                &actor,
                event.as_str(),
                Some(&run.id),
                Some(run.host_id),
                context.acknowledged.clone(),
                Some(
                    match &context.acknowledged_findings {
                        Some(ids) => serde_json::json!({
                            "from": run.state,
                            "to": final_state,
                            "acknowledged_findings": ids,
                        }),
                        None => serde_json::json!({"from": run.state, "to": final_state}),
                    }
                    .to_string(),
                ),
            )
            .await?;
        }
        txn.commit().await.map_err(db("committing a transition"))?;
        Ok(announced)
    }

    /// Takes a free slot for `run_id` inside `txn`, or fails with
    /// `NoSlotFree`. Safe across processes: the slot row is claimed with
    /// `UPDATE ... WHERE run_id IS NULL`, retried on a lost race.
    async fn take_slot(&self, txn: &DatabaseTransaction, run_id: &str) -> Result<()> {
        let max = self.inner.config.dispatcher.max_in_flight;
        for _ in 0..(max as usize * 4 + 4) {
            let free = slot::Entity::find()
                .filter(slot::Column::RunId.is_null())
                .filter(slot::Column::SlotNo.lt(max as i32))
                .order_by_asc(slot::Column::SlotNo)
                .one(txn)
                .await
                .map_err(db("finding a free slot"))?;
            let Some(free) = free else {
                return Err(OrchestratorError::NoSlotFree { max });
            };
            let taken = slot::Entity::update_many()
                .col_expr(slot::Column::RunId, Expr::value(run_id))
                .filter(slot::Column::SlotNo.eq(free.slot_no))
                .filter(slot::Column::RunId.is_null())
                .exec(txn)
                .await
                .map_err(db("taking a slot"))?;
            if taken.rows_affected == 1 {
                return Ok(());
            }
        }
        Err(OrchestratorError::NoSlotFree { max })
    }

    /// Makes the slot rows match `max_in_flight` and frees any slot whose
    /// run no longer holds one (repair after a hand edit).
    async fn size_slots(&self) -> Result<()> {
        let max = self.inner.config.dispatcher.max_in_flight as i32;
        let existing = slot::Entity::find()
            .all(self.conn())
            .await
            .map_err(db("reading slots"))?;
        for slot_no in 0..max {
            if !existing.iter().any(|row| row.slot_no == slot_no) {
                let inserted = slot::ActiveModel {
                    slot_no: Set(slot_no),
                    run_id: Set(None),
                }
                .insert(self.conn())
                .await;
                if let Err(error) = inserted {
                    // another process inserted it first
                    tracing::debug!(slot_no, error = %error, "slot row already there");
                }
            }
        }
        slot::Entity::delete_many()
            .filter(slot::Column::SlotNo.gte(max))
            .filter(slot::Column::RunId.is_null())
            .exec(self.conn())
            .await
            .map_err(db("trimming slots"))?;
        for row in existing {
            if let Some(run_id) = row.run_id {
                let holds = match self.get_run(&run_id).await {
                    Ok(run) => run.state.holds_slot(),
                    Err(_) => false,
                };
                if !holds {
                    slot::Entity::update_many()
                        .col_expr(slot::Column::RunId, Expr::value(Option::<String>::None))
                        .filter(slot::Column::SlotNo.eq(row.slot_no))
                        .filter(slot::Column::RunId.eq(run_id.as_str()))
                        .exec(self.conn())
                        .await
                        .map_err(db("repairing a slot"))?;
                }
            }
        }
        Ok(())
    }

    // ----------------------------------------------------- reconcilers

    /// Dispatches queued runs, first in first out, while slots are free.
    /// Returns the runs dispatched. Idempotent; safe in several processes.
    pub async fn dispatch(&self) -> Result<Vec<String>> {
        let mut dispatched = Vec::new();
        loop {
            let queued = run::Entity::find()
                .filter(run::Column::State.eq(RunState::Queued.as_str()))
                .order_by_asc(run::Column::QueuedAtMs)
                .order_by_asc(run::Column::CreatedAtMs)
                .order_by_asc(run::Column::Id)
                .one(self.conn())
                .await
                .map_err(db("finding queued runs"))?;
            let Some(next) = queued else {
                return Ok(dispatched);
            };
            match self
                .apply(
                    &next.id,
                    Event::Dispatch,
                    EventContext {
                        actor: Some(Actor("dispatcher".into())),
                        expected_state: Some(RunState::Queued),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) => dispatched.push(next.id),
                Err(OrchestratorError::NoSlotFree { .. }) => return Ok(dispatched),
                // another process dispatched or cancelled it: look again
                Err(OrchestratorError::InvalidTransition { .. })
                | Err(OrchestratorError::Conflict { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Fires every deadline that has passed at `now` (by the injected
    /// clock). Returns the transitions made.
    pub async fn fire_deadlines(&self) -> Result<Vec<Applied>> {
        let now = self.now_ms();
        let due = run::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(run::Column::StateDeadlineMs.lte(now))
                    .add(run::Column::HeartbeatDeadlineMs.lte(now)),
            )
            .all(self.conn())
            .await
            .map_err(db("finding due deadlines"))?;
        let mut fired = Vec::new();
        for model in due {
            let run = Run::from_entity(model)?;
            if run.state.is_terminal() || run.state == RunState::FailedHolding {
                continue;
            }
            let state_due = run.state_deadline_ms.is_some_and(|at| at <= now);
            let event = match run.state {
                RunState::WaitingWoL => Event::PowerTimeout,
                RunState::Booting if state_due => Event::BootTimeout,
                RunState::Booting => Event::HeartbeatTimeout,
                RunState::SpecValidate => Event::StageTimeout,
                state if state.stage().is_some() && state_due => Event::StageTimeout,
                state if state.stage().is_some() => Event::HeartbeatTimeout,
                _ => continue,
            };
            let reason = match event {
                Event::PowerTimeout => "the power action did not complete in time".to_string(),
                Event::BootTimeout => {
                    "the host did not boot the live image in time (no hello)".to_string()
                }
                Event::HeartbeatTimeout => "the agent fell silent (no heartbeat)".to_string(),
                _ => format!("{} ran past its deadline", run.state),
            };
            match self
                .apply(
                    &run.id,
                    event,
                    EventContext {
                        expected_version: Some(run.version),
                        reason: Some(reason),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(applied) => fired.push(applied),
                Err(OrchestratorError::Conflict { .. })
                | Err(OrchestratorError::InvalidTransition { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(fired)
    }

    // ---------------------------------------------------- agent-facing

    /// The agent booted: the boot script now exits to disk.
    pub(crate) async fn hello(&self, run: &Run) -> Result<Run> {
        if run.state == RunState::Booting && run.hello_at_ms.is_none() {
            match self
                .apply(
                    &run.id,
                    Event::Hello,
                    EventContext {
                        actor: Some(Actor::agent()),
                        expected_state: Some(RunState::Booting),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) | Err(OrchestratorError::InvalidTransition { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        self.get_run(&run.id).await
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
            .begin()
            .await
            .map_err(db("recording a boot script"))?;
        insert_audit(
            &txn,
            self.now_ms(),
            &Actor::orchestrator(),
            BOOT_SCRIPT_AUDIT,
            Some(&run.id),
            Some(run.host_id),
            None,
            Some(
                serde_json::json!({"peer": plain_address(peer).to_string(), "mac": mac})
                    .to_string(),
            ),
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
            .begin()
            .await
            .map_err(db("recording a hello address mismatch"))?;
        insert_audit(
            &txn,
            now,
            &Actor::orchestrator(),
            "hello_address_mismatch",
            Some(&run.id),
            Some(run.host_id),
            None,
            Some(
                serde_json::json!({"hello": hello, "boot_script_fetched_by": fetched}).to_string(),
            ),
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
            match self
                .apply(
                    &run.id,
                    Event::Claim,
                    EventContext {
                        actor: Some(Actor::agent()),
                        expected_state: Some(RunState::Booting),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) | Err(OrchestratorError::InvalidTransition { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        self.get_run(&run.id).await
    }

    // ---------------------------------------------------- operator actions

    /// Cancels a run from any non-terminal state.
    pub async fn cancel(
        &self,
        run_id: &str,
        actor: &Actor,
        acknowledged: Option<String>,
    ) -> Result<Applied> {
        self.apply(
            run_id,
            Event::Cancel,
            EventContext {
                actor: Some(actor.clone()),
                acknowledged,
                reason: Some(format!("cancelled by {}", actor.as_str())),
                ..Default::default()
            },
        )
        .await
    }

    /// Releases a held host: the agent shuts down.
    pub async fn release(
        &self,
        run_id: &str,
        actor: &Actor,
        acknowledged: Option<String>,
    ) -> Result<Applied> {
        self.apply(
            run_id,
            Event::Release,
            EventContext {
                actor: Some(actor.clone()),
                acknowledged,
                ..Default::default()
            },
        )
        .await
    }

    /// Overrides a wipe-probe hold: Storage runs again as a new attempt,
    /// which writes only disks whose every finding is among `acknowledged`
    /// (finding ids of the hold, see [`Orchestrator::held_findings`]) and
    /// holds again on anything else. Refused for any other hold (a
    /// bad-block failure cannot be overridden), for no ids, and for an id
    /// that is not among the hold's findings. The ids are recorded in the
    /// audit (as `acknowledged` and in its detail).
    pub async fn override_wipe(
        &self,
        run_id: &str,
        actor: &Actor,
        acknowledged: Vec<String>,
    ) -> Result<Applied> {
        let mut ids: Vec<String> = Vec::new();
        for id in acknowledged {
            let id = id.trim().to_string();
            if !id.is_empty() && !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(OrchestratorError::BadRequest(
                "an override must name the wipe-probe findings it acknowledges (their ids)".into(),
            ));
        }
        self.apply(
            run_id,
            Event::OverrideWipe,
            EventContext {
                actor: Some(actor.clone()),
                acknowledged: Some(ids.join(", ")),
                acknowledged_findings: Some(ids),
                ..Default::default()
            },
        )
        .await
    }

    /// The wipe-probe findings of a run's last Storage attempt (what a
    /// wipe hold asks the operator to acknowledge).
    pub async fn held_findings(&self, run_id: &str) -> Result<Vec<WipeFinding>> {
        let row = stage::Entity::find()
            .filter(stage::Column::RunId.eq(run_id))
            .filter(stage::Column::Stage.eq(Stage::Storage.as_str()))
            .order_by_desc(stage::Column::Attempt)
            .one(self.conn())
            .await
            .map_err(db("reading the last Storage attempt"))?;
        match row.and_then(|row| row.wipe_findings) {
            Some(text) => serde_json::from_str(&text).map_err(|_| {
                OrchestratorError::Corrupt(CorruptRow {
                    run_id: run_id.to_string(),
                    field: "wipe_findings",
                    value: text,
                })
            }),
            None => Ok(Vec::new()),
        }
    }

    /// An override's ids must all be among the hold's findings.
    async fn check_acknowledged(&self, run: &Run, context: &EventContext) -> Result<()> {
        let acknowledged = context.acknowledged_findings.as_deref().unwrap_or_default();
        if acknowledged.is_empty() {
            return Err(OrchestratorError::BadRequest(
                "an override must name the wipe-probe findings it acknowledges (their ids)".into(),
            ));
        }
        let findings = self.held_findings(&run.id).await?;
        let unknown: Vec<&str> = acknowledged
            .iter()
            .filter(|id| !findings.iter().any(|finding| &finding.id == *id))
            .map(String::as_str)
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let known: Vec<&str> = findings.iter().map(|finding| finding.id.as_str()).collect();
        Err(OrchestratorError::BadRequest(format!(
            "run {}: the override names finding(s) the hold does not list: {} ({})",
            run.id,
            unknown
                .iter()
                .take(10)
                .map(|id| format!("`{}`", id.chars().take(300).collect::<String>()))
                .collect::<Vec<_>>()
                .join(", "),
            if known.is_empty() {
                "the hold lists none".to_string()
            } else {
                format!("they are: {}", known.join(", "))
            }
        )))
    }

    // ---------------------------------------------------------- queries

    /// The transition log, in commit order (by id).
    pub async fn transitions(&self, run_id: Option<&str>) -> Result<Vec<TransitionRecord>> {
        let mut query = transition::Entity::find().order_by_asc(transition::Column::Id);
        if let Some(run_id) = run_id {
            query = query.filter(transition::Column::RunId.eq(run_id));
        }
        Ok(query
            .all(self.conn())
            .await
            .map_err(db("reading transitions"))?
            .into_iter()
            .map(|model| TransitionRecord {
                id: model.id,
                run_id: model.run_id,
                from: model.from_state,
                to: model.to_state,
                event: model.event,
                actor: model.actor,
                at_ms: model.at_ms,
                detail: model.detail,
            })
            .collect())
    }

    pub async fn audit_log(&self, run_id: Option<&str>) -> Result<Vec<AuditRecord>> {
        let mut query = audit::Entity::find().order_by_asc(audit::Column::Id);
        if let Some(run_id) = run_id {
            query = query.filter(audit::Column::RunId.eq(run_id));
        }
        Ok(query
            .all(self.conn())
            .await
            .map_err(db("reading the audit log"))?
            .into_iter()
            .map(|model| AuditRecord {
                id: model.id,
                at_ms: model.at_ms,
                actor: model.actor,
                action: model.action,
                run_id: model.run_id,
                host_id: model.host_id,
                acknowledged: model.acknowledged,
                detail: model.detail,
            })
            .collect())
    }

    pub async fn stages(&self, run_id: &str) -> Result<Vec<StageRecord>> {
        Ok(stage::Entity::find()
            .filter(stage::Column::RunId.eq(run_id))
            .order_by_asc(stage::Column::StartedAtMs)
            .all(self.conn())
            .await
            .map_err(db("reading stages"))?
            .into_iter()
            .map(|model| StageRecord {
                run_id: model.run_id,
                stage: model.stage,
                attempt: model.attempt.max(0) as u32,
                outcome: model.outcome,
                reason: model.reason,
                started_at_ms: model.started_at_ms,
                finished_at_ms: model.finished_at_ms,
            })
            .collect())
    }

    /// The runs holding a dispatcher slot now.
    pub async fn slots_in_use(&self) -> Result<Vec<String>> {
        Ok(slot::Entity::find()
            .filter(slot::Column::RunId.is_not_null())
            .all(self.conn())
            .await
            .map_err(db("reading slots"))?
            .into_iter()
            .filter_map(|row| row.run_id)
            .collect())
    }
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

fn secs(value: u64) -> i64 {
    i64::try_from(value.saturating_mul(1000)).unwrap_or(i64::MAX / 2)
}

/// The deadline of a testing stage, from config.
pub fn stage_deadline_secs(config: &Config, stage: Stage) -> u64 {
    let deadlines = &config.deadlines;
    match stage {
        Stage::InventoryCheck => deadlines.inventory_check_secs,
        Stage::Smart => deadlines.smart_secs,
        Stage::CpuStress => deadlines.cpu_stress_secs,
        Stage::Storage => deadlines.storage_secs,
        Stage::Network => deadlines.network_secs,
        Stage::Gpu => deadlines.gpu_secs,
        Stage::Psu => deadlines.psu_secs,
    }
}

fn clean(value: Option<String>) -> Option<String> {
    value
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
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

#[allow(clippy::too_many_arguments)]
async fn insert_audit(
    txn: &DatabaseTransaction,
    now: Millis,
    actor: &Actor,
    action: &str,
    run_id: Option<&str>,
    host_id: Option<i64>,
    acknowledged: Option<String>,
    detail: Option<String>,
) -> Result<()> {
    audit::ActiveModel {
        at_ms: Set(now),
        actor: Set(actor.as_str().to_string()),
        action: Set(action.to_string()),
        run_id: Set(run_id.map(str::to_string)),
        host_id: Set(host_id),
        acknowledged: Set(acknowledged),
        detail: Set(detail),
        ..Default::default()
    }
    .insert(txn)
    .await
    .map_err(db("recording an audit record"))?;
    Ok(())
}
