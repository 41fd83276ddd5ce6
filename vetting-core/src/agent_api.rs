//! What the agent API does, without HTTP: hello, claim, heartbeat, log and
//! sensor batches (exactly once by sequence number), artifacts, and stage
//! results. The orchestrator re-applies the verdict rules of
//! `vetting-probes` to the uploaded tool outputs; its verdict decides the
//! transition, and a disagreement with the agent is logged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    TransactionTrait,
};
use sha2::{Digest, Sha256};
use vetting_probes::protocol::{
    ArtifactQuery, BatchAck, ClaimResponse, Endpoint, HeartbeatRequest, HeartbeatResponse,
    LogBatch, LogLine, MAX_FINDING_ID_LEN, Outcome, ResultResponse, SensorBatch, SensorSample,
    Stage, StageParams, StageRef, StageResult, StoredArtifact, WipeFinding,
};
use vetting_probes::{Status, Tool, Verdict};

use crate::error::OrchestratorError;
use crate::events::HubEvent;
use crate::evidence;
use crate::machine::{Effect, Event, HoldReason, RunState, state_of};
use crate::model::{Actor, CorruptRow, Run};
use crate::orchestrator::{Orchestrator, command_for, position_of};
use crate::runlogs;
use crate::runs::EventContext;
use crate::store::StoreError;
use crate::store::entities::{artifact, component, inventory, log_file, measurement, run, stage};
use crate::tokens::{self, TokenError};

type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

fn db(doing: &'static str) -> impl FnOnce(sea_orm::DbErr) -> OrchestratorError {
    move |source| OrchestratorError::Store(StoreError::Db { doing, source })
}

fn internal(error: impl std::fmt::Display) -> OrchestratorError {
    OrchestratorError::Internal(error.to_string())
}

/// An agent request whose run token checked out for one endpoint. Only
/// [`Orchestrator::authenticate`] makes one, and every agent service
/// (hello, claim, the writer's log, sensor, heartbeat, artifact and
/// result) takes one: there is no way in without the token check.
#[derive(Clone)]
pub struct AuthenticatedRun {
    endpoint: Endpoint,
    run_id: String,
    /// The run's row as authentication read it, for the endpoints that
    /// act on the run's state; log, sensor and heartbeat leave the row to
    /// the writer, which reads it once for a whole group of writes.
    run: Option<Run>,
    /// Where the request came from (the hello's address check).
    peer: Option<std::net::IpAddr>,
    /// Claim only: the token, for its one bcrypt check.
    claim_token: Option<String>,
}

impl std::fmt::Debug for AuthenticatedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatedRun")
            .field("endpoint", &self.endpoint)
            .field("run_id", &self.run_id)
            .field("state", &self.run.as_ref().map(|run| run.state))
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl AuthenticatedRun {
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's row as read when the token was checked, for the
    /// endpoints that read it (all but log, sensor and heartbeat).
    pub fn run(&self) -> Option<&Run> {
        self.run.as_ref()
    }

    /// Refuses use for another endpoint than the one it was checked for:
    /// the rules applied (the run's row read, the grace after the end)
    /// are that endpoint's.
    fn serves(&self, endpoint: Endpoint) -> Result<()> {
        if self.endpoint == endpoint {
            Ok(())
        } else {
            Err(internal(format!(
                "a request authenticated for {} was used for {endpoint}",
                self.endpoint
            )))
        }
    }

    /// The run's row, for an endpoint that reads it at authentication.
    fn row(&self, endpoint: Endpoint) -> Result<&Run> {
        self.serves(endpoint)?;
        self.run
            .as_ref()
            .ok_or_else(|| internal(format!("{endpoint} was authenticated without its run")))
    }
}

/// Whether authenticating `endpoint` reads the run's row. Log, sensor and
/// heartbeat, the hot path, check the token against the nonce kept in
/// memory and leave the row to the writer.
fn reads_run_at_authentication(endpoint: Endpoint) -> bool {
    !matches!(
        endpoint,
        Endpoint::Log | Endpoint::Sensor | Endpoint::Heartbeat
    )
}

/// Whether `endpoint` is still answered during the token grace after the
/// run ended: only the heartbeat, so that the agent hears `shutdown`.
fn answered_after_the_end(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::Heartbeat)
}

/// An artifact's file, written and synced under a temporary name, whose
/// row is not recorded yet (made only by
/// [`Orchestrator::write_artifact_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    run_id: String,
    upload: ArtifactQuery,
    stage: StageRef,
    /// Where the body was written.
    temporary: PathBuf,
    /// Where it goes once its row is taken.
    path: PathBuf,
    size: u64,
    sha256: String,
}

/// One write of agent data, for [`Orchestrator::write_agent_data`].
#[derive(Debug, Clone)]
///
/// Each names its run by id: the writer reads the rows of a whole group in
/// one query and checks there that the run has not ended (a heartbeat is
/// let through during the token grace), so a request whose token checked
/// out needs no read of its own.
pub(crate) enum AgentWrite {
    Log {
        run_id: String,
        lines: Vec<LogLine>,
    },
    Sensor {
        run_id: String,
        samples: Vec<SensorSample>,
    },
    Heartbeat {
        run_id: String,
        current: Option<StageRef>,
    },
    /// The row of an artifact whose file is written and synced.
    Artifact(ArtifactFile),
}

impl AgentWrite {
    /// The run a write goes to.
    fn run_id(&self) -> &str {
        match self {
            AgentWrite::Log { run_id, .. }
            | AgentWrite::Sensor { run_id, .. }
            | AgentWrite::Heartbeat { run_id, .. } => run_id,
            AgentWrite::Artifact(file) => &file.run_id,
        }
    }

    /// The endpoint whose rules the write follows.
    fn endpoint(&self) -> Endpoint {
        match self {
            AgentWrite::Log { .. } => Endpoint::Log,
            AgentWrite::Sensor { .. } => Endpoint::Sensor,
            AgentWrite::Heartbeat { .. } => Endpoint::Heartbeat,
            AgentWrite::Artifact(_) => Endpoint::Artifact,
        }
    }
}

impl ArtifactFile {
    /// What the agent is told of the stored artifact.
    fn stored(&self) -> StoredArtifact {
        StoredArtifact {
            name: self.upload.name.clone(),
            size_bytes: self.size,
            sha256: self.sha256.clone(),
        }
    }
}

/// An id list for an `IN (...)`: sorted, without repeats, and padded to a
/// power of two (repeating the last) so that few distinct statements reach
/// the statement cache.
fn id_list<T: Ord + Clone>(mut ids: Vec<T>) -> Vec<T> {
    ids.sort_unstable();
    ids.dedup();
    if let Some(last) = ids.last().cloned() {
        ids.resize(ids.len().next_power_of_two(), last);
    }
    ids
}

/// The answer to an [`AgentWrite`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AgentWritten {
    Batch(BatchAck),
    Heartbeat(HeartbeatResponse),
    Artifact(StoredArtifact),
}

/// The most measurements one result carries.
pub const MAX_MEASUREMENTS: usize = 100_000;
/// The most reasons an agent's verdict carries.
pub const MAX_VERDICT_REASONS: usize = 4096;
/// Rows per insert of a result's measurements (9 values each: far below
/// the bound-variable limits of SQLite and PostgreSQL).
const MEASUREMENT_CHUNK: usize = 500;

/// How many results re-judge their evidence at once.
static REJUDGE_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A result, checked: what its commit writes.
enum Prepared {
    /// A repeat of a result already taken: its stored answer.
    Repeat(ResultResponse),
    New(Box<PreparedResult>),
}

struct PreparedResult {
    /// The run as read when the result was checked (its version is
    /// compare-and-set at the commit).
    run: Run,
    reference: StageRef,
    outcome: Outcome,
    verdict: Verdict,
    agent_verdict: Verdict,
    hold_reason: Option<HoldReason>,
    /// For a held Storage result: the wipe probe's findings, checked.
    wipe_findings: Option<Vec<WipeFinding>>,
    data: StageData,
}

/// What a stage result stores beside its transition, in the transition's
/// transaction (see [`write_stage_data`]).
#[derive(Debug, Clone)]
pub struct StageData {
    pub stage: StageRef,
    pub inventory: Option<InventoryRows>,
    pub measurements: Vec<vetting_probes::protocol::Measurement>,
}

/// An InventoryCheck's inventory and its components, checked.
#[derive(Debug, Clone)]
pub struct InventoryRows {
    pub attempt: u32,
    pub json: String,
    pub components: Vec<(String, String, String)>,
}

/// Writes a result's inventory and summary measurements inside the
/// transaction of its transition (a repeated write replaces them).
pub(crate) async fn write_stage_data<C: sea_orm::ConnectionTrait>(
    txn: &C,
    run_id: &str,
    data: &StageData,
    now_ms: i64,
) -> std::result::Result<(), sea_orm::DbErr> {
    if let Some(rows) = &data.inventory {
        inventory::Entity::delete_many()
            .filter(inventory::Column::RunId.eq(run_id))
            .filter(inventory::Column::Attempt.eq(rows.attempt as i32))
            .exec(txn)
            .await?;
        inventory::ActiveModel {
            run_id: Set(run_id.to_string()),
            attempt: Set(rows.attempt as i32),
            inventory: Set(rows.json.clone()),
            created_at_ms: Set(now_ms),
        }
        .insert(txn)
        .await?;
        component::Entity::delete_many()
            .filter(component::Column::RunId.eq(run_id))
            .exec(txn)
            .await?;
        for chunk in rows.components.chunks(MEASUREMENT_CHUNK) {
            component::Entity::insert_many(chunk.iter().map(|(kind, identity, summary)| {
                component::ActiveModel {
                    run_id: Set(run_id.to_string()),
                    kind: Set(kind.clone()),
                    identity: Set(identity.clone()),
                    summary: Set(summary.clone()),
                    ..Default::default()
                }
            }))
            .exec(txn)
            .await?;
        }
    }
    if data.measurements.is_empty() {
        return Ok(());
    }
    measurement::Entity::delete_many()
        .filter(measurement::Column::RunId.eq(run_id))
        .filter(measurement::Column::Stage.eq(data.stage.stage.as_str()))
        .filter(measurement::Column::Attempt.eq(data.stage.attempt as i32))
        .filter(measurement::Column::Seq.is_null())
        .exec(txn)
        .await?;
    for chunk in data.measurements.chunks(MEASUREMENT_CHUNK) {
        measurement::Entity::insert_many(chunk.iter().map(|m| measurement::ActiveModel {
            run_id: Set(run_id.to_string()),
            stage: Set(Some(data.stage.stage.as_str().to_string())),
            attempt: Set(Some(data.stage.attempt as i32)),
            seq: Set(None),
            name: Set(m.name.clone()),
            value: Set(m.value),
            unit: Set(m.unit.clone()),
            at_ms: Set(now_ms),
            ..Default::default()
        }))
        .exec(txn)
        .await?;
    }
    Ok(())
}

/// A run's next sequence numbers as read, and as they become.
#[derive(Debug, Clone, Copy)]
struct Sequences {
    log_before: i64,
    sensor_before: i64,
    log_next: u64,
    sensor_next: u64,
}

/// Why a group of agent writes failed as a whole, with its cause: every
/// write of the group is answered with it (shared, as
/// [`OrchestratorError::AgentWrites`]), and the agents retry.
#[derive(Debug, thiserror::Error)]
pub enum AgentWriteFailure {
    #[error("{doing}")]
    Db {
        doing: &'static str,
        #[source]
        source: sea_orm::DbErr,
    },
    #[error("appending to run logs")]
    Io(#[source] std::io::Error),
    #[error("reading the group's runs")]
    Corrupt(#[source] CorruptRow),
}

/// How a group of writes failed: a concurrent change of a run's
/// sequence numbers (409, retried), or a failure with its cause.
#[derive(Debug)]
enum GroupFailure {
    Conflict(String),
    Failed(std::sync::Arc<AgentWriteFailure>),
}

impl GroupFailure {
    fn db(doing: &'static str, source: sea_orm::DbErr) -> Self {
        GroupFailure::Failed(std::sync::Arc::new(AgentWriteFailure::Db { doing, source }))
    }

    fn io(source: std::io::Error) -> Self {
        GroupFailure::Failed(std::sync::Arc::new(AgentWriteFailure::Io(source)))
    }

    fn corrupt(source: CorruptRow) -> Self {
        GroupFailure::Failed(std::sync::Arc::new(AgentWriteFailure::Corrupt(source)))
    }

    /// The error one write of the group is answered with.
    fn again(&self) -> OrchestratorError {
        match self {
            GroupFailure::Conflict(run_id) => OrchestratorError::Conflict {
                run_id: run_id.clone(),
            },
            GroupFailure::Failed(failure) => OrchestratorError::AgentWrites(failure.clone()),
        }
    }
}

/// The one writer of an HTTP front's agent requests. Log lines, sensor
/// readings and heartbeats queue (a bounded queue: a flood waits instead
/// of growing memory) and one task writes whatever has queued in one
/// transaction, so each commit and file sync is shared by many requests.
/// On SQLite the database half of artifacts and results runs in the same
/// task, one at a time between those groups: SQLite has one write lock,
/// and writers that fight over it sleep in its busy handler. Dropping
/// every handle stops the task.
#[derive(Debug, Clone)]
pub struct AgentWriter {
    orchestrator: Orchestrator,
    queue: tokio::sync::mpsc::Sender<Queued>,
}

type ExclusiveTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

enum Queued {
    Write {
        write: Box<AgentWrite>,
        answer: tokio::sync::oneshot::Sender<Result<AgentWritten>>,
    },
    Exclusive(ExclusiveTask),
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queued::Write { write, .. } => f.debug_tuple("Write").field(write).finish(),
            Queued::Exclusive(_) => f.write_str("Exclusive"),
        }
    }
}

/// How many requests may wait for the writer.
pub const AGENT_WRITE_QUEUE: usize = 4096;
/// The most writes one transaction takes.
const AGENT_WRITE_GROUP: usize = 512;

impl AgentWriter {
    /// Starts the writer task of `orchestrator` (on the current runtime).
    pub fn start(orchestrator: Orchestrator) -> AgentWriter {
        let (queue, mut queued) = tokio::sync::mpsc::channel::<Queued>(AGENT_WRITE_QUEUE);
        let writer = orchestrator.clone();
        tokio::spawn(async move {
            let mut received = Vec::with_capacity(AGENT_WRITE_GROUP);
            let mut writes = Vec::new();
            let mut answers = Vec::new();
            while queued.recv_many(&mut received, AGENT_WRITE_GROUP).await > 0 {
                // let the requests that are ready queue theirs too: one
                // transaction for all of them
                tokio::task::yield_now().await;
                while received.len() < AGENT_WRITE_GROUP {
                    match queued.try_recv() {
                        Ok(item) => received.push(item),
                        Err(_) => break,
                    }
                }
                for item in received.drain(..) {
                    match item {
                        Queued::Write { write, answer } => {
                            writes.push(*write);
                            answers.push(answer);
                        }
                        Queued::Exclusive(task) => {
                            // in order: what queued before it is written first
                            flush(&writer, &mut writes, &mut answers).await;
                            task.await;
                        }
                    }
                }
                flush(&writer, &mut writes, &mut answers).await;
            }
        });
        AgentWriter {
            orchestrator,
            queue,
        }
    }

    async fn write(&self, write: AgentWrite) -> Result<AgentWritten> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.queue
            .send(Queued::Write {
                write: Box::new(write),
                answer,
            })
            .await
            .map_err(|_| internal("the agent writer has stopped"))?;
        answered
            .await
            .map_err(|_| internal("the agent writer has stopped"))?
    }

    /// Runs `task` in the writer task where the store is SQLite (alone,
    /// between groups of writes); directly on PostgreSQL.
    async fn exclusive<T, F>(&self, task: F) -> Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        if self.orchestrator.store().is_postgres() {
            return task.await;
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        let task: ExclusiveTask = Box::pin(async move {
            let _ = answer.send(task.await);
        });
        self.queue
            .send(Queued::Exclusive(task))
            .await
            .map_err(|_| internal("the agent writer has stopped"))?;
        answered
            .await
            .map_err(|_| internal("the agent writer has stopped"))?
    }

    /// The row of an artifact whose file is written (see
    /// [`Orchestrator::write_artifact_file`], which checked its request):
    /// in the next group of writes, with the log lines and readings queued
    /// beside it.
    pub async fn artifact_row(&self, file: ArtifactFile) -> Result<StoredArtifact> {
        match self.write(AgentWrite::Artifact(file)).await? {
            AgentWritten::Artifact(stored) => Ok(stored),
            _ => Err(internal("an artifact was answered as something else")),
        }
    }

    /// `result`: the stage is done. Everything is checked and the
    /// uploaded outputs re-judged first, outside the writer (reads only:
    /// a refused result leaves no trace); then the result is written in
    /// one transaction, on SQLite inside the writer, so no request holds
    /// it longer than those writes. The orchestrator's verdict decides the
    /// transition. A repeated result for the same stage and attempt gets
    /// the same answer; a result for another stage or attempt gets 409.
    pub async fn result(
        &self,
        request: &AuthenticatedRun,
        result: StageResult,
    ) -> Result<ResultResponse> {
        let run = request.row(Endpoint::Result)?;
        // one result of a run at a time, from the checks to the commit
        let guard = self.orchestrator.run_lock(&run.id).lock_owned().await;
        let prepared = match self.orchestrator.prepare_result(run, result).await? {
            Prepared::Repeat(response) => return Ok(response),
            Prepared::New(prepared) => prepared,
        };
        let orchestrator = self.orchestrator.clone();
        self.exclusive(async move {
            let _guard = guard;
            orchestrator.commit_result(*prepared).await
        })
        .await
    }

    /// `log`: stores each line exactly once (by sequence number), in its
    /// stage's flat file. Refused once the run has ended.
    pub async fn log(&self, request: &AuthenticatedRun, batch: LogBatch) -> Result<BatchAck> {
        request.serves(Endpoint::Log)?;
        match self
            .write(AgentWrite::Log {
                run_id: request.run_id.clone(),
                lines: batch.lines,
            })
            .await?
        {
            AgentWritten::Batch(ack) => Ok(ack),
            _ => Err(internal("a log batch was answered as something else")),
        }
    }

    /// `sensor`: stores each sample exactly once (by sequence number) as
    /// a measurement. Refused once the run has ended.
    pub async fn sensor(&self, request: &AuthenticatedRun, batch: SensorBatch) -> Result<BatchAck> {
        request.serves(Endpoint::Sensor)?;
        match self
            .write(AgentWrite::Sensor {
                run_id: request.run_id.clone(),
                samples: batch.samples,
            })
            .await?
        {
            AgentWritten::Batch(ack) => Ok(ack),
            _ => Err(internal("a sensor batch was answered as something else")),
        }
    }

    /// `heartbeat`: records liveness and answers the control command;
    /// answered during the token grace after the run ended, so the agent
    /// hears `shutdown`.
    pub async fn heartbeat(
        &self,
        request: &AuthenticatedRun,
        heartbeat: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse> {
        request.serves(Endpoint::Heartbeat)?;
        match self
            .write(AgentWrite::Heartbeat {
                run_id: request.run_id.clone(),
                current: heartbeat.current,
            })
            .await?
        {
            AgentWritten::Heartbeat(response) => Ok(response),
            _ => Err(internal("a heartbeat was answered as something else")),
        }
    }
}

/// Writes the queued writes as one group and answers each.
async fn flush(
    orchestrator: &Orchestrator,
    writes: &mut Vec<AgentWrite>,
    answers: &mut Vec<tokio::sync::oneshot::Sender<Result<AgentWritten>>>,
) {
    if writes.is_empty() {
        return;
    }
    let results = orchestrator.write_agent_data(std::mem::take(writes)).await;
    for (answer, result) in answers.drain(..).zip(results) {
        let _ = answer.send(result);
    }
}

/// Records the row of an artifact's written file, replacing the row of
/// the same name and stage attempt.
async fn artifact_row<C: sea_orm::ConnectionTrait>(
    txn: &C,
    file: ArtifactFile,
    now_ms: i64,
) -> std::result::Result<(), sea_orm::DbErr> {
    let ArtifactFile {
        run_id,
        upload,
        stage,
        temporary: _,
        path,
        size,
        sha256,
    } = file;
    artifact::Entity::delete_many()
        .filter(artifact::Column::RunId.eq(run_id.as_str()))
        .filter(artifact::Column::Name.eq(upload.name.as_str()))
        .filter(artifact::Column::Stage.eq(stage.stage.as_str()))
        .filter(artifact::Column::Attempt.eq(stage.attempt as i32))
        .exec(txn)
        .await?;
    artifact::ActiveModel {
        run_id: Set(run_id),
        stage: Set(Some(stage.stage.as_str().to_string())),
        attempt: Set(Some(stage.attempt as i32)),
        name: Set(upload.name),
        tool: Set(upload.tool),
        path: Set(path.display().to_string()),
        size_bytes: Set(size as i64),
        sha256: Set(sha256),
        created_at_ms: Set(now_ms),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// Artifact names are file names: letters, digits, `.`, `_`, `-`.
pub fn valid_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Orchestrator {
    fn artifacts_dir(&self, run_id: &str) -> PathBuf {
        self.config()
            .data_dir
            .join("runs")
            .join(run_id)
            .join("artifacts")
    }

    /// `hello`: the agent booted. The first hello's address is compared
    /// with where the boot script went ([`Orchestrator::check_hello_address`],
    /// which only reports: the hello stands).
    pub async fn agent_hello(&self, request: &AuthenticatedRun) -> Result<Run> {
        let run = request.row(Endpoint::Hello)?;
        let first = run.hello_at_ms.is_none();
        let run = self.hello(run).await?;
        if first
            && let Some(peer) = request.peer
            && let Err(error) = self.check_hello_address(&run, peer).await
        {
            tracing::error!(run = %run.id, "checking the hello's address: {error}");
        }
        Ok(run)
    }

    /// `claim`: the stage plan and its parameters. bcrypt is checked once.
    pub async fn agent_claim(&self, request: &AuthenticatedRun) -> Result<ClaimResponse> {
        let run = request.row(Endpoint::Claim)?;
        let token = request
            .claim_token
            .as_deref()
            .ok_or_else(|| internal("a claim was authenticated without its token"))?;
        let run = self.claim(run, token).await?;
        if !run.state.agent_is_active() && run.state != RunState::FailedHolding {
            return Err(OrchestratorError::InvalidTransition {
                run_id: run.id.clone(),
                source: crate::machine::InvalidTransition {
                    state: run.state,
                    event: Event::Claim,
                },
            });
        }
        let params = self.stage_params(&run).await?;
        Ok(ClaimResponse {
            run_id: run.id.clone(),
            position: position_of(&run),
            stages: Stage::ALL.to_vec(),
            params,
            thresholds: self.config().thresholds.clone(),
            heartbeat_interval_secs: (self.config().deadlines.heartbeat_silence_secs / 6).max(1),
            slow_heartbeat_interval_secs: (self.config().deadlines.heartbeat_silence_secs / 3)
                .max(1),
            next_log_seq: run.next_log_seq.max(0) as u64,
            next_sensor_seq: run.next_sensor_seq.max(0) as u64,
        })
    }

    /// The parameters handed to the agent: config, plus what the host's
    /// spec expects (the device allowlist), plus the iperf3 server.
    async fn stage_params(&self, run: &Run) -> Result<StageParams> {
        let mut params = self.config().stages.clone();
        let host = self.host(run.host_id).await?;
        if let Some(spec) = self.operator().host_spec(&host).await.map_err(internal)? {
            params.storage.expected_disks = crate::spec::expected_disks(&spec);
            params.expected = crate::spec::expected_parts(&spec);
        } else {
            params.storage.expected_disks = Vec::new();
        }
        params.storage.override_wipe = run.override_flags.iter().any(|f| f == "override_wipe");
        params.storage.acknowledged_findings = if params.storage.override_wipe {
            run.acknowledged_findings.clone()
        } else {
            Vec::new()
        };
        let bind = self
            .config()
            .iperf
            .bind
            .unwrap_or_else(|| self.config().listen.ip());
        if let Some(port) = self.iperf().ensure(&self.config().iperf, bind).await {
            params.network.iperf_host = Some(self.public_host());
            params.network.iperf_port = Some(port);
        }
        Ok(params)
    }

    /// The host part of `public_url` (what the agent connects to).
    pub fn public_host(&self) -> String {
        let url = self.config().public_url();
        let rest = url.split("://").nth(1).unwrap_or(&url);
        let authority = rest.split('/').next().unwrap_or(rest);
        if let Some(stripped) = authority.strip_prefix('[') {
            return stripped.split(']').next().unwrap_or(stripped).to_string();
        }
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
            .to_string()
    }

    /// The one authentication of the agent API, told which endpoint it
    /// serves, called before any body is read. The token is checked by
    /// HMAC and a constant-time comparison against the run's nonce (no
    /// bcrypt; claim checks bcrypt once, later). Then the endpoint's rules:
    /// hello, claim, result, artifact and hold read the run's row and are
    /// refused once the run has ended; log, sensor and heartbeat use the
    /// nonce kept in memory (read once) and leave the row, and whether the
    /// run has ended, to the writer; a heartbeat is answered during the
    /// token grace after the end. `peer` is where the request came from
    /// (the hello's address check). A refusal says only `Unauthorized` or
    /// `RunEnded`, never why the token was wrong.
    pub async fn authenticate(
        &self,
        endpoint: Endpoint,
        run_id: &str,
        token: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<AuthenticatedRun> {
        let run = if reads_run_at_authentication(endpoint) {
            let run = Run::from_entity(self.read_verified(run_id, token).await?)?;
            self.refuse_if_ended(&run, endpoint)?;
            Some(run)
        } else {
            match self.known_nonce(run_id) {
                Some(nonce) => tokens::verify(self.key(), run_id, &nonce, token)
                    .map_err(OrchestratorError::Unauthorized)?,
                None => {
                    self.read_verified(run_id, token).await?;
                }
            }
            None
        };
        Ok(AuthenticatedRun {
            endpoint,
            run_id: run_id.to_string(),
            run,
            peer,
            claim_token: (endpoint == Endpoint::Claim).then(|| token.to_string()),
        })
    }

    /// The run's row, once its token is checked against the row's nonce
    /// (which is then kept in memory).
    async fn read_verified(&self, run_id: &str, token: &str) -> Result<run::Model> {
        let model = crate::store::by_key(
            run::Entity::find_by_id(run_id.to_string()),
            self.store().db(),
        )
        .await
        .map_err(db("reading a run"))?
        .ok_or(OrchestratorError::Unauthorized(TokenError::WrongRun))?;
        tokens::verify(self.key(), run_id, &model.token_nonce, token)
            .map_err(OrchestratorError::Unauthorized)?;
        self.remember_nonce(run_id, &model.token_nonce);
        Ok(model)
    }

    /// Whether a write may go to `run` (as the group read it): it exists
    /// and has not ended.
    fn check_writable(&self, run: Option<&Run>, run_id: &str, endpoint: Endpoint) -> Result<()> {
        let run = run.ok_or_else(|| OrchestratorError::RunNotFound(run_id.to_string()))?;
        self.refuse_if_ended(run, endpoint)
    }

    /// Refuses an agent request for a run that has ended; the endpoints
    /// [`answered_after_the_end`] (the heartbeat) still get through during
    /// the token grace, so the agent hears `shutdown`.
    fn refuse_if_ended(&self, run: &Run, endpoint: Endpoint) -> Result<()> {
        if run.state.is_terminal() {
            let grace_ms = self.config().deadlines.token_grace_secs as i64 * 1000;
            let ended = run.ended_at_ms.unwrap_or(run.updated_at_ms);
            if !answered_after_the_end(endpoint) || self.now_ms() > ended + grace_ms {
                return Err(OrchestratorError::RunEnded {
                    run_id: run.id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Writes agent data of any number of runs in one transaction: log
    /// lines (appended to their files, synced, then the committed lengths),
    /// sensor readings and heartbeats. Each item of a batch is kept exactly
    /// once: the run's next sequence numbers are compare-and-set. Answers
    /// in the order of `writes`; when the transaction fails, every write
    /// gets the error (the agents retry).
    pub(crate) async fn write_agent_data(
        &self,
        writes: Vec<AgentWrite>,
    ) -> Vec<Result<AgentWritten>> {
        let count = writes.len();
        let mut answers: Vec<Option<Result<AgentWritten>>> = (0..count).map(|_| None).collect();
        for (index, write) in writes.iter().enumerate() {
            if let AgentWrite::Sensor { samples, .. } = write
                && let Some(bad) = samples.iter().find(|sample| !sample.value.is_finite())
            {
                answers[index] = Some(Err(OrchestratorError::BadRequest(format!(
                    "sensor sample {} ({}) is not a finite number",
                    bad.seq, bad.name
                ))));
            }
        }
        match self.write_agent_data_checked(writes, &mut answers).await {
            Ok(()) => {}
            Err(failure) => {
                for answer in answers
                    .iter_mut()
                    .filter(|answer| !matches!(answer, Some(Err(OrchestratorError::BadRequest(_)))))
                {
                    *answer = Some(Err(failure.again()));
                }
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(internal("a write got no answer"))))
            .collect()
    }

    async fn write_agent_data_checked(
        &self,
        writes: Vec<AgentWrite>,
        answers: &mut [Option<Result<AgentWritten>>],
    ) -> Result<(), GroupFailure> {
        let database = self.store().db();
        // the runs' next sequence numbers and committed log lengths
        let open = || {
            writes
                .iter()
                .enumerate()
                .filter(|(index, _)| answers[*index].is_none())
                .map(|(_, write)| write)
        };
        // the rows of the group's runs: their state and sequence numbers
        let batch_runs = id_list(open().map(AgentWrite::run_id).collect());
        let mut sequences: BTreeMap<String, Sequences> = BTreeMap::new();
        let mut runs: BTreeMap<String, Run> = BTreeMap::new();
        let mut lengths: BTreeMap<(String, String), u64> = BTreeMap::new();
        if !batch_runs.is_empty() {
            let rows = run::Entity::find()
                .filter(run::Column::Id.is_in(batch_runs))
                .all(database)
                .await
                .map_err(|error| GroupFailure::db("reading runs' sequence numbers", error))?;
            for row in rows {
                let run = Run::from_entity(row).map_err(GroupFailure::corrupt)?;
                sequences.insert(
                    run.id.clone(),
                    Sequences {
                        log_before: run.next_log_seq,
                        sensor_before: run.next_sensor_seq,
                        log_next: run.next_log_seq.max(0) as u64,
                        sensor_next: run.next_sensor_seq.max(0) as u64,
                    },
                );
                runs.insert(run.id.clone(), run);
            }
        }
        // the committed lengths of the log files the group appends to
        let log_runs = id_list(
            open()
                .filter_map(|write| match write {
                    AgentWrite::Log { run_id, lines } if !lines.is_empty() => Some(run_id.as_str()),
                    _ => None,
                })
                .collect(),
        );
        if !log_runs.is_empty() {
            let files = log_file::Entity::find()
                .filter(log_file::Column::RunId.is_in(log_runs))
                .all(database)
                .await
                .map_err(|error| GroupFailure::db("reading log file lengths", error))?;
            for row in files {
                lengths.insert((row.run_id, row.file), row.committed_len.max(0) as u64);
            }
        }

        // what each write adds
        let now = self.now_ms();
        let mut appends: BTreeMap<(String, String), (u64, String)> = BTreeMap::new();
        let mut measurements = Vec::new();
        let mut heartbeats = Vec::new();
        let mut artifacts = Vec::new();
        let mut announced = Vec::new();
        let mut pending: Vec<(usize, AgentWritten)> = Vec::new();
        for (index, write) in writes.into_iter().enumerate() {
            if answers[index].is_some() {
                continue;
            }
            if let Err(error) =
                self.check_writable(runs.get(write.run_id()), write.run_id(), write.endpoint())
            {
                answers[index] = Some(Err(error));
                continue;
            }
            match write {
                AgentWrite::Log { run_id, lines } => {
                    let Some(sequence) = sequences.get_mut(&run_id) else {
                        answers[index] = Some(Err(OrchestratorError::RunNotFound(run_id)));
                        continue;
                    };
                    let (fresh, next) = take_fresh(lines, sequence.log_next, |line| line.seq);
                    sequence.log_next = next;
                    for line in &fresh {
                        let file = runlogs::file_for(line);
                        let key = (run_id.clone(), file);
                        let committed = lengths.get(&key).copied().unwrap_or(0);
                        appends
                            .entry(key)
                            .or_insert_with(|| (committed, String::new()))
                            .1
                            .push_str(&runlogs::format_line(line));
                    }
                    let stored = fresh.len() as u64;
                    if stored > 0 {
                        announced.push(HubEvent::Log {
                            run_id: run_id.clone(),
                            lines: fresh
                                .iter()
                                .map(|line| runlogs::visible(&line.text))
                                .collect(),
                        });
                    }
                    pending.push((
                        index,
                        AgentWritten::Batch(BatchAck {
                            next_seq: next,
                            stored,
                        }),
                    ));
                }
                AgentWrite::Sensor { run_id, samples } => {
                    let Some(sequence) = sequences.get_mut(&run_id) else {
                        answers[index] = Some(Err(OrchestratorError::RunNotFound(run_id)));
                        continue;
                    };
                    let (fresh, next) =
                        take_fresh(samples, sequence.sensor_next, |sample| sample.seq);
                    sequence.sensor_next = next;
                    let stored = fresh.len() as u64;
                    for sample in fresh {
                        measurements.push(measurement::ActiveModel {
                            run_id: Set(run_id.clone()),
                            stage: Set(sample.stage.map(|s| s.stage.as_str().to_string())),
                            attempt: Set(sample.stage.map(|s| s.attempt as i32)),
                            seq: Set(Some(sample.seq as i64)),
                            name: Set(sample.name),
                            value: Set(sample.value),
                            unit: Set(sample.unit),
                            at_ms: Set(sample.at_ms),
                            ..Default::default()
                        });
                    }
                    if stored > 0 {
                        announced.push(HubEvent::Sensor {
                            run_id: run_id.clone(),
                            count: stored as usize,
                        });
                    }
                    pending.push((
                        index,
                        AgentWritten::Batch(BatchAck {
                            next_seq: next,
                            stored,
                        }),
                    ));
                }
                AgentWrite::Heartbeat { run_id, current } => {
                    let Some(run) = runs.get(&run_id) else {
                        answers[index] = Some(Err(OrchestratorError::RunNotFound(run_id)));
                        continue;
                    };
                    pending.push((
                        index,
                        AgentWritten::Heartbeat(HeartbeatResponse {
                            cmd: command_for(run, current),
                            position: position_of(run),
                            override_flags: run.override_flags.clone(),
                            acknowledged_findings: run.acknowledged_findings.clone(),
                        }),
                    ));
                    heartbeats.push(run_id);
                }
                AgentWrite::Artifact(file) => {
                    // still the current stage attempt as the group read
                    // the run, or the evidence is not taken
                    let placed = match runs.get(&file.run_id) {
                        Some(run) => check_current(run, file.stage).and_then(|()| {
                            std::fs::rename(&file.temporary, &file.path).map_err(|source| {
                                OrchestratorError::Io {
                                    doing: format!("storing artifact {}", file.upload.name),
                                    source,
                                }
                            })
                        }),
                        None => Err(OrchestratorError::RunNotFound(file.run_id.clone())),
                    };
                    if let Err(error) = placed {
                        let _ = std::fs::remove_file(&file.temporary);
                        answers[index] = Some(Err(error));
                        continue;
                    }
                    pending.push((index, AgentWritten::Artifact(file.stored())));
                    artifacts.push(file);
                }
            }
        }

        // the log files first: appended past the committed length and
        // synced; a failure before the commit below is undone by the next
        // append, which truncates back to the committed length
        let mut new_lengths = Vec::with_capacity(appends.len());
        if !appends.is_empty() {
            let data_dir = self.config().data_dir.clone();
            let jobs: Vec<runlogs::Append> = appends
                .iter()
                .map(|((run_id, file), (committed, text))| runlogs::Append {
                    path: runlogs::run_log_dir(&data_dir, run_id).join(file),
                    committed_len: *committed,
                    text: text.clone(),
                })
                .collect();
            let lengths_now = runlogs::append_all(jobs).await.map_err(GroupFailure::io)?;
            for (((run_id, file), _), new_len) in appends.into_iter().zip(lengths_now) {
                new_lengths.push((run_id, file, new_len));
            }
        }

        let txn = database
            .begin_with_options(crate::store::WRITE)
            .await
            .map_err(|error| GroupFailure::db("storing agent data", error))?;
        for (run_id, sequence) in &sequences {
            if sequence.log_next as i64 == sequence.log_before
                && sequence.sensor_next as i64 == sequence.sensor_before
            {
                continue;
            }
            let updated = run::Entity::update_many()
                .col_expr(
                    run::Column::NextLogSeq,
                    Expr::value(sequence.log_next as i64),
                )
                .col_expr(
                    run::Column::NextSensorSeq,
                    Expr::value(sequence.sensor_next as i64),
                )
                .filter(run::Column::Id.eq(run_id.as_str()))
                .filter(run::Column::NextLogSeq.eq(sequence.log_before))
                .filter(run::Column::NextSensorSeq.eq(sequence.sensor_before))
                .exec(&txn)
                .await
                .map_err(|error| GroupFailure::db("storing sequence numbers", error))?;
            if updated.rows_affected != 1 {
                return Err(GroupFailure::Conflict(run_id.clone()));
            }
        }
        for (run_id, file, new_len) in new_lengths {
            log_file::Entity::insert(log_file::ActiveModel {
                run_id: Set(run_id),
                file: Set(file),
                committed_len: Set(new_len as i64),
            })
            .on_conflict(
                OnConflict::columns([log_file::Column::RunId, log_file::Column::File])
                    .update_column(log_file::Column::CommittedLen)
                    .to_owned(),
            )
            .exec(&txn)
            .await
            .map_err(|error| GroupFailure::db("storing log file lengths", error))?;
        }
        // in chunks of 100, then 10, then 1 rows: three distinct statements
        // for the statement cache, whatever the count
        let mut rest = measurements.as_slice();
        while !rest.is_empty() {
            let size = [100, 10, 1]
                .into_iter()
                .find(|size| rest.len() >= *size)
                .unwrap_or(1);
            let (chunk, after) = rest.split_at(size);
            rest = after;
            measurement::Entity::insert_many(chunk.to_vec())
                .exec(&txn)
                .await
                .map_err(|error| GroupFailure::db("storing sensor samples", error))?;
        }
        for file in artifacts {
            artifact_row(&txn, file, now)
                .await
                .map_err(|error| GroupFailure::db("storing an artifact", error))?;
        }
        let silence_ms = self.config().deadlines.heartbeat_silence_secs as i64 * 1000;
        // every heartbeat of the group in two statements: liveness, and
        // the silence deadline of runs whose agent is expected to talk
        let beating = id_list(heartbeats);
        if !beating.is_empty() {
            run::Entity::update_many()
                .col_expr(run::Column::LastHeartbeatMs, Expr::value(now))
                .filter(run::Column::Id.is_in(beating.iter().map(String::as_str)))
                .exec(&txn)
                .await
                .map_err(|error| GroupFailure::db("recording heartbeats", error))?;
            let listening = RunState::ALL
                .into_iter()
                .filter(|state| state.agent_is_active() || *state == RunState::Booting)
                .map(RunState::as_str);
            run::Entity::update_many()
                .col_expr(
                    run::Column::HeartbeatDeadlineMs,
                    Expr::value(now + silence_ms),
                )
                .filter(run::Column::Id.is_in(beating.iter().map(String::as_str)))
                .filter(run::Column::State.is_in(listening))
                .exec(&txn)
                .await
                .map_err(|error| GroupFailure::db("recording heartbeats", error))?;
        }
        txn.commit()
            .await
            .map_err(|error| GroupFailure::db("storing agent data", error))?;
        for event in announced {
            self.hub().publish(event);
        }
        for (index, written) in pending {
            answers[index] = Some(Ok(written));
        }
        Ok(())
    }

    /// `artifact`, the file half: checks the upload and writes (and syncs)
    /// the body to a temporary file beside its final name; the writer
    /// moves it into place with its row ([`AgentWriter::artifact_row`]),
    /// after checking again that the stage attempt is still the current
    /// one. Uploads are taken only for the run's current stage and attempt
    /// (409 otherwise: a finished stage's evidence is never rewritten), at
    /// most [`evidence::artifact_cap`] per stage attempt.
    pub async fn write_artifact_file(
        &self,
        request: &AuthenticatedRun,
        upload: ArtifactQuery,
        body: &[u8],
    ) -> Result<ArtifactFile> {
        let run = request.row(Endpoint::Artifact)?;
        if !valid_artifact_name(&upload.name) {
            return Err(OrchestratorError::BadRequest(format!(
                "artifact name `{}` must be 1-128 letters, digits, '.', '_' or '-'",
                upload.name.chars().take(160).collect::<String>()
            )));
        }
        if let Some(tool) = &upload.tool
            && Tool::from_name(tool).is_none()
        {
            return Err(OrchestratorError::BadRequest(format!(
                "artifact tool `{}` is not a known tool",
                tool.chars().take(64).collect::<String>()
            )));
        }
        let (Some(stage), Some(attempt)) = (upload.stage, upload.attempt) else {
            return Err(OrchestratorError::BadRequest(
                "an artifact names the stage and attempt it belongs to".into(),
            ));
        };
        if attempt == 0 || attempt > i32::MAX as u32 {
            return Err(OrchestratorError::BadRequest(format!(
                "attempt {attempt} is out of range"
            )));
        }
        let reference = StageRef { stage, attempt };
        check_current(run, reference)?;
        let others = artifact::Entity::find()
            .filter(artifact::Column::RunId.eq(run.id.as_str()))
            .filter(artifact::Column::Stage.eq(stage.as_str()))
            .filter(artifact::Column::Attempt.eq(attempt as i32))
            .filter(artifact::Column::Name.ne(upload.name.as_str()))
            .count(self.store().db())
            .await
            .map_err(db("counting a stage's artifacts"))?;
        // the host's disks are read only when the base allowance is used up
        let cap = if (others as usize) < evidence::ARTIFACTS_PER_STAGE {
            evidence::ARTIFACTS_PER_STAGE
        } else {
            evidence::artifact_cap(self.allowlisted_disks(run).await?)
        };
        if others as usize >= cap {
            return Err(OrchestratorError::BadRequest(format!(
                "{stage} attempt {attempt} already has {others} artifacts; at most {cap} are taken"
            )));
        }
        let dir = self
            .artifacts_dir(&run.id)
            .join(format!("{}-{attempt}", stage.as_str()));
        let path = dir.join(&upload.name);
        let temporary = dir.join(format!(".{}.part", uuid::Uuid::new_v4().simple()));
        let sha256 = hex::encode(Sha256::digest(body));
        let size = body.len() as u64;
        let run_id = run.id.clone();
        {
            let temporary = temporary.clone();
            let body = body.to_vec();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(&temporary, &body)?;
                std::fs::File::open(&temporary)?.sync_all()
            })
            .await
            .map_err(internal)?
            .map_err(|source| OrchestratorError::Io {
                doing: format!("storing artifact {}", upload.name),
                source,
            })?;
        }
        Ok(ArtifactFile {
            run_id,
            upload,
            stage: reference,
            temporary,
            path,
            size,
            sha256,
        })
    }

    /// The checks and the re-judging of a result, without writing
    /// anything: a refused result (4xx) leaves every table and file as it
    /// was. Reads only; on SQLite this runs outside the writer, so the
    /// re-judging of large outputs never holds other runs' writes.
    async fn prepare_result(&self, run: &Run, result: StageResult) -> Result<Prepared> {
        let run = self.run(&run.id).await?;
        if result.attempt > i32::MAX as u32 {
            return Err(OrchestratorError::BadRequest(format!(
                "attempt {} is out of range",
                result.attempt
            )));
        }
        let reference = StageRef {
            stage: result.stage,
            attempt: result.attempt,
        };
        if let Err(not_current) = check_current(&run, reference) {
            // a repeat of a result already taken?
            if let Some(response) = self.taken_result(&run, reference).await? {
                return Ok(Prepared::Repeat(response));
            }
            return Err(not_current);
        }
        let hold_reason = match (result.outcome, result.hold_reason.as_deref()) {
            // only the wipe probe holds, and only Storage runs it
            (Outcome::Held, _) if result.stage != Stage::Storage => {
                return Err(OrchestratorError::BadRequest(format!(
                    "{} cannot hold the run: only Storage's wipe probe holds",
                    result.stage
                )));
            }
            (Outcome::Held, Some(text)) => match HoldReason::parse(text) {
                Some(reason) if reason.is_wipe_probe() => Some(reason),
                _ => {
                    return Err(OrchestratorError::BadRequest(format!(
                        "hold_reason `{text}` is not wipe_signatures or unexpected_data"
                    )));
                }
            },
            (Outcome::Held, None) => {
                return Err(OrchestratorError::BadRequest(
                    "a held result needs a hold_reason".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(OrchestratorError::BadRequest(
                    "only a held result carries a hold_reason".into(),
                ));
            }
            _ => None,
        };
        let wipe_findings = checked_wipe_findings(&result)?;
        if result.verdict.reasons.len() > MAX_VERDICT_REASONS {
            return Err(OrchestratorError::BadRequest(format!(
                "the verdict has {} reasons; at most {MAX_VERDICT_REASONS} are taken",
                result.verdict.reasons.len()
            )));
        }
        if result.measurements.len() > MAX_MEASUREMENTS {
            return Err(OrchestratorError::BadRequest(format!(
                "the result has {} measurements; at most {MAX_MEASUREMENTS} are taken",
                result.measurements.len()
            )));
        }
        if let Some(bad) = result
            .measurements
            .iter()
            .find(|m| m.name.is_empty() || m.name.len() > 200 || m.unit.len() > 32)
        {
            return Err(OrchestratorError::BadRequest(format!(
                "measurement `{}` needs a name of 1-200 bytes and a unit of at most 32",
                bad.name.chars().take(64).collect::<String>()
            )));
        }
        let inventory = match (&result.inventory, result.stage) {
            (Some(json), Stage::InventoryCheck) => {
                let parsed: vetting_probes::inventory::Inventory =
                    serde_json::from_value(json.clone()).map_err(|error| {
                        OrchestratorError::BadRequest(format!(
                            "the inventory does not parse: {error}"
                        ))
                    })?;
                Some(InventoryRows {
                    attempt: result.attempt,
                    json: json.to_string(),
                    components: components_of(&parsed),
                })
            }
            (Some(_), stage) => {
                return Err(OrchestratorError::BadRequest(format!(
                    "only InventoryCheck carries an inventory, not {stage}"
                )));
            }
            (None, _) => None,
        };

        // the evidence: only through this stage attempt's rows
        let rows = artifact::Entity::find()
            .filter(artifact::Column::RunId.eq(run.id.as_str()))
            .filter(artifact::Column::Stage.eq(result.stage.as_str()))
            .filter(artifact::Column::Attempt.eq(result.attempt as i32))
            .all(self.store().db())
            .await
            .map_err(db("reading a stage's artifacts"))?;
        let references = evidence::merge_references(&result.artifacts);
        let cap = if references.len() <= evidence::ARTIFACTS_PER_STAGE {
            evidence::ARTIFACTS_PER_STAGE
        } else {
            evidence::artifact_cap(self.allowlisted_disks(&run).await?)
        };
        evidence::check_references(&references, &rows, result.stage, result.attempt, cap)
            .map_err(|error| OrchestratorError::BadRequest(error.to_string()))?;
        let dir = self.artifacts_dir(&run.id).join(format!(
            "{}-{}",
            result.stage.as_str(),
            result.attempt
        ));
        let (files, unusable) = evidence::evidence_files(&dir, &rows);
        let thresholds = self.config().thresholds.clone();
        let stage = result.stage;
        let judged = {
            // a few at a time, on the blocking pool: parsing a large
            // output must not take the runtime's threads
            let _permit = REJUDGE_PERMITS
                .acquire()
                .await
                .map_err(|_| internal("re-judging has stopped"))?;
            tokio::task::spawn_blocking(move || {
                files
                    .iter()
                    .map(|file| evidence::judge_file(file, stage, &thresholds))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(internal)?
        };
        let rejudged = evidence::fold(stage, &judged, &unusable, result.inventory.is_some());

        // the orchestrator's verdict
        let mut verdict = result.verdict.clone();
        verdict.merge(rejudged);
        let outcome = match result.outcome {
            Outcome::Held => Outcome::Held,
            Outcome::Failed => Outcome::Failed,
            agent_outcome => match verdict.status {
                Status::Fail => Outcome::Failed,
                Status::Warn if agent_outcome == Outcome::Passed => Outcome::Warned,
                _ => agent_outcome,
            },
        };
        if outcome != result.outcome {
            tracing::warn!(
                run = %run.id,
                stage = %result.stage,
                agent = ?result.outcome,
                orchestrator = ?outcome,
                "the orchestrator's verdict differs from the agent's"
            );
            verdict.add(
                Status::Pass,
                format!(
                    "the agent reported {:?}; the orchestrator's re-judged verdict is {:?}",
                    result.outcome, outcome
                ),
            );
        }
        Ok(Prepared::New(Box::new(PreparedResult {
            run,
            reference,
            outcome,
            verdict,
            agent_verdict: result.verdict,
            hold_reason,
            wipe_findings,
            data: StageData {
                stage: reference,
                inventory,
                measurements: result
                    .measurements
                    .into_iter()
                    .filter(|m| m.value.is_finite())
                    .collect(),
            },
        })))
    }

    /// The stored answer to a result already taken for `reference`, if any.
    async fn taken_result(&self, run: &Run, reference: StageRef) -> Result<Option<ResultResponse>> {
        let Some(row) = crate::store::by_key(
            stage::Entity::find_by_id((
                run.id.clone(),
                reference.stage.as_str().to_string(),
                reference.attempt as i32,
            )),
            self.store().db(),
        )
        .await
        .map_err(db("reading a stage"))?
        .filter(|row| row.finished_at_ms.is_some()) else {
            return Ok(None);
        };
        if let Some(stored) = row
            .response
            .as_deref()
            .and_then(|text| serde_json::from_str::<ResultResponse>(text).ok())
        {
            return Ok(Some(stored));
        }
        let verdict: Verdict = row
            .verdict
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        Ok(Some(ResultResponse {
            position: position_of(run),
            verdict,
            cmd: command_for(run, run.current),
        }))
    }

    /// How many disks the host's spec allowlists (each may carry its own
    /// artifacts).
    async fn allowlisted_disks(&self, run: &Run) -> Result<usize> {
        let host = self.host(run.host_id).await?;
        Ok(
            match self.operator().host_spec(&host).await.map_err(internal)? {
                Some(spec) => crate::spec::expected_disks(&spec)
                    .iter()
                    .map(|disk| disk.count.unwrap_or(1).clamp(1, 64) as usize)
                    .sum(),
                None => 0,
            },
        )
    }

    /// Writes a checked result: its inventory, measurements and transition
    /// in one transaction (compare-and-set on the run's version as
    /// prepared), then SpecValidate inside this request as the design
    /// wants, then the stored answer.
    async fn commit_result(&self, prepared: PreparedResult) -> Result<ResultResponse> {
        let PreparedResult {
            run,
            reference,
            outcome,
            verdict,
            agent_verdict,
            hold_reason,
            wipe_findings,
            data,
        } = prepared;
        let event = match outcome {
            Outcome::Passed | Outcome::Warned => Event::StagePassed,
            Outcome::Skipped => Event::StageSkipped,
            Outcome::Failed => Event::StageFailed,
            Outcome::Held => Event::StageHeld,
        };
        let reason = summarize(&verdict, outcome);
        let outcome_name = match outcome {
            Outcome::Passed => "passed",
            Outcome::Warned => "warned",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Held => "held",
        };
        let verdict_json = serde_json::to_string(&verdict).map_err(internal)?;
        let agent_verdict_json = serde_json::to_string(&agent_verdict).map_err(internal)?;
        let applied = self
            .runs()
            .apply(
                &run.id,
                event,
                EventContext {
                    actor: Some(Actor::agent()),
                    expected_version: Some(run.version),
                    hold_reason,
                    reason,
                    outcome: Some(outcome_name.to_string()),
                    verdict_json: Some(verdict_json),
                    agent_verdict_json: Some(agent_verdict_json),
                    stage_data: Some(std::sync::Arc::new(data)),
                    wipe_findings,
                    ..Default::default()
                },
            )
            .await?;
        // SpecValidate resolves inside this request (the reports are
        // written off the request path, by the report worker the
        // transition's effect queued it for)
        if applied.effects.contains(&Effect::ValidateSpec) {
            self.resolve_spec_validate(&run.id).await?;
        }
        let run = self.run(&run.id).await?;
        let response = ResultResponse {
            position: position_of(&run),
            verdict,
            cmd: command_for(&run, run.current),
        };
        // kept for a repeat of this result (same answer)
        stage::Entity::update_many()
            .col_expr(
                stage::Column::Response,
                Expr::value(serde_json::to_string(&response).map_err(internal)?),
            )
            .filter(stage::Column::RunId.eq(run.id.as_str()))
            .filter(stage::Column::Stage.eq(reference.stage.as_str()))
            .filter(stage::Column::Attempt.eq(reference.attempt as i32))
            .exec(self.store().db())
            .await
            .map_err(db("storing a result's answer"))?;
        Ok(response)
    }

    /// Runs `SpecValidate` and `Reporting` when a run is in them (after
    /// the result that led there, and again after a restart).
    pub async fn resolve_owned_states(&self, run_id: &str) -> Result<()> {
        self.resolve_spec_validate(run_id).await?;
        self.resolve_reporting(run_id).await
    }

    /// Runs `SpecValidate` when the run is in it.
    async fn resolve_spec_validate(&self, run_id: &str) -> Result<()> {
        let run = self.run(run_id).await?;
        if run.state == RunState::SpecValidate {
            let outcome = self.validate_spec(run_id).await.map_err(internal)?;
            let event = if outcome.critical {
                Event::SpecFailed
            } else {
                Event::SpecPassed
            };
            match self
                .runs()
                .apply(
                    run_id,
                    event,
                    EventContext {
                        expected_state: Some(RunState::SpecValidate),
                        reason: Some(outcome.summary.clone()),
                        outcome: Some(if outcome.critical { "failed" } else { "passed" }.into()),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) | Err(OrchestratorError::InvalidTransition { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Writes the reports when the run is in `Reporting` (and completes
    /// it), or has ended.
    async fn resolve_reporting(&self, run_id: &str) -> Result<()> {
        let run = self.run(run_id).await?;
        if run.state == RunState::Reporting {
            crate::reports::write_reports(self, run_id)
                .await
                .map_err(internal)?;
            match self
                .runs()
                .apply(
                    run_id,
                    Event::ReportWritten,
                    EventContext {
                        expected_state: Some(RunState::Reporting),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) | Err(OrchestratorError::InvalidTransition { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        let state = self.run(run_id).await?.state;
        if state.is_terminal() || state == RunState::FailedHolding {
            // the report with the final state, and the reports of failed,
            // held and cancelled runs
            if let Err(error) = crate::reports::write_reports(self, run_id).await {
                tracing::warn!(run = %run_id, "cannot write the report: {error}");
            }
        }
        Ok(())
    }

    /// The sequence numbers of the sensor samples stored for a run, in
    /// order (what the exactly-once checks count).
    pub async fn sensor_sequence_numbers(&self, run_id: &str) -> Result<Vec<i64>> {
        let mut seqs: Vec<i64> = measurement::Entity::find()
            .filter(measurement::Column::RunId.eq(run_id))
            .filter(measurement::Column::Seq.is_not_null())
            .all(self.store().db())
            .await
            .map_err(db("reading sensor samples"))?
            .into_iter()
            .filter_map(|row| row.seq)
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }
}

/// Refuses (409, with the run's position) anything for a stage attempt
/// that is not the run's current one.
fn check_current(run: &Run, reference: StageRef) -> Result<()> {
    if run.current == Some(reference) && run.state == state_of(reference.stage) {
        return Ok(());
    }
    Err(OrchestratorError::NotCurrentStage {
        run_id: run.id.clone(),
        state: run.state,
        stage: reference.stage.as_str().to_string(),
        attempt: reference.attempt,
        position: position_of(run),
    })
}

/// The items of a batch not stored yet: sorted by sequence number, those
/// below `next` dropped (retries), and only the run without a gap from
/// `next` kept (the agent resends the rest). Returns them and the new next.
fn take_fresh<T>(mut items: Vec<T>, mut next: u64, seq_of: impl Fn(&T) -> u64) -> (Vec<T>, u64) {
    items.sort_by_key(|item| seq_of(item));
    let mut fresh = Vec::new();
    for item in items {
        let seq = seq_of(&item);
        if seq < next {
            continue;
        }
        if seq != next {
            break;
        }
        next += 1;
        fresh.push(item);
    }
    (fresh, next)
}

/// The reason recorded on the stage: the messages that decided it.
fn summarize(verdict: &Verdict, outcome: Outcome) -> Option<String> {
    let wanted = match outcome {
        Outcome::Failed => Status::Fail,
        Outcome::Held => Status::Fail,
        Outcome::Skipped => Status::Skip,
        Outcome::Warned => Status::Warn,
        Outcome::Passed => return None,
    };
    let mut messages: Vec<&str> = verdict.messages(wanted).collect();
    if messages.is_empty() && outcome == Outcome::Held {
        messages = verdict.messages(Status::Warn).collect();
    }
    if messages.is_empty() {
        messages = verdict
            .reasons
            .iter()
            .map(|reason| reason.message.as_str())
            .collect();
    }
    if messages.is_empty() {
        None
    } else {
        Some(messages.join("; "))
    }
}

/// The identities of an inventory's components, for history across runs.
fn components_of(
    inventory: &vetting_probes::inventory::Inventory,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let value = match serde_json::to_value(inventory) {
        Ok(value) => value,
        Err(_) => return out,
    };
    let pick = |item: &serde_json::Value, keys: &[&str]| -> Option<String> {
        keys.iter().find_map(|key| {
            item.get(*key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string())
        })
    };
    if let Some(system) = value.get("system")
        && let Some(identity) = pick(system, &["serial", "uuid"])
    {
        out.push(("system".into(), identity, system.to_string()));
    }
    for (kind, keys) in [
        ("disks", &["wwn", "serial", "name"][..]),
        ("nics", &["mac", "name"][..]),
        ("gpus", &["uuid", "serial", "pci_bus_id"][..]),
        ("pci_devices", &["slot"][..]),
    ] {
        if let Some(items) = value.get(kind).and_then(|v| v.as_array()) {
            for item in items {
                if let Some(identity) = pick(item, keys) {
                    out.push((
                        kind.trim_end_matches('s').to_string(),
                        identity,
                        item.to_string(),
                    ));
                }
            }
        }
    }
    if let Some(dimms) = value
        .get("memory")
        .and_then(|m| m.get("dimms"))
        .and_then(|v| v.as_array())
    {
        for dimm in dimms {
            if let Some(identity) = pick(dimm, &["serial", "slot"]) {
                out.push(("dimm".into(), identity, dimm.to_string()));
            }
        }
    }
    out
}

/// At most this many wipe-probe findings in one result.
pub const MAX_WIPE_FINDINGS: usize = 4096;

/// The wipe-probe findings of a result, checked (the agent is not
/// trusted): only Storage results carry them, a held one must (an override
/// names ids among them), and each has a unique printable id of at most
/// [`MAX_FINDING_ID_LEN`] characters and bounded texts. `Some` when there
/// are findings to record on the stage row. Called by
/// [`Orchestrator::agent_result`] before anything is stored; the findings
/// go into the `StageHeld` event's context.
pub(crate) fn checked_wipe_findings(result: &StageResult) -> Result<Option<Vec<WipeFinding>>> {
    let bad = |message: String| Err(OrchestratorError::BadRequest(message));
    let findings = &result.wipe_findings;
    if result.stage != Stage::Storage {
        if !findings.is_empty() {
            return bad(format!(
                "wipe_findings belong to Storage results, not {}",
                result.stage
            ));
        }
        return Ok(None);
    }
    if result.outcome == Outcome::Held && findings.is_empty() {
        return bad(
            "a held Storage result must list its wipe_findings (the ids an override acknowledges)"
                .into(),
        );
    }
    if findings.len() > MAX_WIPE_FINDINGS {
        return bad(format!(
            "{} wipe_findings: at most {MAX_WIPE_FINDINGS}",
            findings.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, finding) in findings.iter().enumerate() {
        let id = &finding.id;
        if id.is_empty()
            || id.chars().count() > MAX_FINDING_ID_LEN
            || !id.chars().all(|c| c.is_ascii_graphic())
        {
            return bad(format!(
                "wipe_findings[{index}].id must be 1 to {MAX_FINDING_ID_LEN} printable ASCII characters without spaces"
            ));
        }
        if !seen.insert(id.as_str()) {
            return bad(format!("wipe_findings[{index}].id `{id}` is repeated"));
        }
        for (field, text, limit) in [
            ("disk", &finding.disk, 256),
            ("kind", &finding.kind, 128),
            ("message", &finding.message, 4096),
        ] {
            if text.chars().count() > limit || text.chars().any(char::is_control) {
                return bad(format!(
                    "wipe_findings[{index}].{field} must be at most {limit} characters without control characters"
                ));
            }
        }
    }
    Ok((!findings.is_empty()).then(|| findings.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_findings_from_an_agent_are_checked() {
        let finding = |id: &str| WipeFinding {
            id: id.into(),
            disk: "sdb".into(),
            kind: "gpt".into(),
            offset: Some(0x200),
            message: "wipe probe: found gpt at offset 0x200 on /dev/sdb".into(),
        };
        let result = |stage: Stage, outcome: Outcome, findings: Vec<WipeFinding>| StageResult {
            stage,
            attempt: 1,
            outcome,
            verdict: Verdict::pass(),
            hold_reason: None,
            artifacts: Vec::new(),
            inventory: None,
            measurements: Vec::new(),
            wipe_findings: findings,
        };
        let good = vec![
            finding("serial:S1/gpt@0x200"),
            finding("serial:S1/PMBR@0x1fe"),
        ];
        assert_eq!(
            checked_wipe_findings(&result(Stage::Storage, Outcome::Held, good.clone())).unwrap(),
            Some(good.clone())
        );
        assert_eq!(
            checked_wipe_findings(&result(Stage::Smart, Outcome::Passed, Vec::new())).unwrap(),
            None
        );
        let refused = |result: StageResult, says: &str| {
            let error = checked_wipe_findings(&result).unwrap_err();
            assert!(
                matches!(&error, OrchestratorError::BadRequest(text) if text.contains(says)),
                "{says}: {error}"
            );
        };
        refused(
            result(Stage::Storage, Outcome::Held, Vec::new()),
            "must list its wipe_findings",
        );
        refused(
            result(Stage::Smart, Outcome::Passed, good.clone()),
            "belong to Storage results",
        );
        let repeated = vec![
            finding("serial:S1/gpt@0x200"),
            finding("serial:S1/gpt@0x200"),
        ];
        refused(result(Stage::Storage, Outcome::Held, repeated), "repeated");
        let long = "x".repeat(MAX_FINDING_ID_LEN + 1);
        for bad_id in ["", "serial:S 1/gpt@0x200", "serial:S1\n/gpt", long.as_str()] {
            refused(
                result(Stage::Storage, Outcome::Held, vec![finding(bad_id)]),
                "printable ASCII",
            );
        }
        let mut noisy = finding("serial:S1/gpt@0x200");
        noisy.message = "line\u{1b}[2J".into();
        refused(
            result(Stage::Storage, Outcome::Held, vec![noisy]),
            "message",
        );
        let many: Vec<WipeFinding> = (0..=MAX_WIPE_FINDINGS)
            .map(|index| finding(&format!("name:sdb/gpt@0x{index:x}")))
            .collect();
        refused(result(Stage::Storage, Outcome::Held, many), "at most");
    }

    #[test]
    fn artifact_names_are_plain_file_names() {
        assert!(valid_artifact_name("smartctl-sda.json"));
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            assert!(!valid_artifact_name(bad), "{bad}");
        }
    }
}
