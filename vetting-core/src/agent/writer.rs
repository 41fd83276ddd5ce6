//! The writer: log lines, readings, heartbeats and artifact rows of many
//! requests share one transaction and one round of file syncs (the
//! exactly-once bookkeeping is `crate::runlogs`'s), in a bounded queue.

use sea_orm::TransactionTrait;
use std::collections::BTreeMap;
use vetting_probes::protocol::{
    BatchAck, Endpoint, HeartbeatRequest, HeartbeatResponse, LogBatch, LogLine, ResultResponse,
    SensorBatch, SensorSample, StageRef, StageResult, StoredArtifact,
};

use super::{artifacts::*, auth::*, results::*};
use crate::agent::Agent;
use crate::agent::{command_for, position_of};
use crate::error::{OrchestratorError, Result, internal};
use crate::events::HubEvent;
use crate::model::{CorruptRow, Run};
use crate::orchestrator::Orchestrator;
use crate::runlogs;

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
    pub(crate) fn run_id(&self) -> &str {
        match self {
            AgentWrite::Log { run_id, .. }
            | AgentWrite::Sensor { run_id, .. }
            | AgentWrite::Heartbeat { run_id, .. } => run_id,
            AgentWrite::Artifact(file) => &file.run_id,
        }
    }

    /// The endpoint whose rules the write follows.
    pub(crate) fn endpoint(&self) -> Endpoint {
        match self {
            AgentWrite::Log { .. } => Endpoint::Log,
            AgentWrite::Sensor { .. } => Endpoint::Sensor,
            AgentWrite::Heartbeat { .. } => Endpoint::Heartbeat,
            AgentWrite::Artifact(_) => Endpoint::Artifact,
        }
    }
}

/// An id list for an `IN (...)`: sorted, without repeats, and padded to a
/// power of two (repeating the last) so that few distinct statements reach
/// the statement cache.
pub(crate) fn id_list<T: Ord + Clone>(mut ids: Vec<T>) -> Vec<T> {
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
pub(crate) enum GroupFailure {
    Conflict(String),
    Failed(std::sync::Arc<AgentWriteFailure>),
}

impl GroupFailure {
    pub(crate) fn db(doing: &'static str, source: sea_orm::DbErr) -> Self {
        GroupFailure::Failed(std::sync::Arc::new(AgentWriteFailure::Db { doing, source }))
    }

    pub(crate) fn io(source: std::io::Error) -> Self {
        GroupFailure::Failed(std::sync::Arc::new(AgentWriteFailure::Io(source)))
    }

    pub(crate) fn corrupt(source: CorruptRow) -> Self {
        GroupFailure::Failed(std::sync::Arc::new(AgentWriteFailure::Corrupt(source)))
    }

    /// The error one write of the group is answered with.
    pub(crate) fn again(&self) -> OrchestratorError {
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

pub(crate) type ExclusiveTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pub(crate) enum Queued {
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
pub(crate) const AGENT_WRITE_GROUP: usize = 512;

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

    pub(crate) async fn write(&self, write: AgentWrite) -> Result<AgentWritten> {
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
    pub(crate) async fn exclusive<T, F>(&self, task: F) -> Result<T>
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
    /// [`Agent::write_artifact_file`], which checked its request):
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
        let prepared = match self
            .orchestrator
            .agent()
            .prepare_result(run, result)
            .await?
        {
            Prepared::Repeat(response) => return Ok(response),
            Prepared::New(prepared) => prepared,
        };
        let orchestrator = self.orchestrator.clone();
        self.exclusive(async move {
            let _guard = guard;
            orchestrator.agent().commit_result(*prepared).await
        })
        .await
    }

    /// `log`: stores each line exactly once (by sequence number), in its
    /// stage's flat file. Refused once the run has ended.
    pub async fn log(&self, request: &AuthenticatedRun, batch: LogBatch) -> Result<BatchAck> {
        request.serves(Endpoint::Log)?;
        self.batch(AgentWrite::Log {
            run_id: request.run_id.clone(),
            lines: batch.lines,
        })
        .await
    }

    /// `sensor`: stores each sample exactly once (by sequence number) as
    /// a measurement. Refused once the run has ended.
    pub async fn sensor(&self, request: &AuthenticatedRun, batch: SensorBatch) -> Result<BatchAck> {
        request.serves(Endpoint::Sensor)?;
        self.batch(AgentWrite::Sensor {
            run_id: request.run_id.clone(),
            samples: batch.samples,
        })
        .await
    }

    /// A log or sensor batch through the writer, and its answer.
    async fn batch(&self, write: AgentWrite) -> Result<BatchAck> {
        match self.write(write).await? {
            AgentWritten::Batch(ack) => Ok(ack),
            _ => Err(internal("a batch was answered as something else")),
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
pub(crate) async fn flush(
    orchestrator: &Orchestrator,
    writes: &mut Vec<AgentWrite>,
    answers: &mut Vec<tokio::sync::oneshot::Sender<Result<AgentWritten>>>,
) {
    if writes.is_empty() {
        return;
    }
    let results = orchestrator
        .agent()
        .write_agent_data(std::mem::take(writes))
        .await;
    for (answer, result) in answers.drain(..).zip(results) {
        let _ = answer.send(result);
    }
}

impl Agent {
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
    /// One group of agent writes: check each against its run as read,
    /// let the exactly-once bookkeeping take the new lines and samples
    /// ([`runlogs::group`]), append the log files, then store everything
    /// in one transaction and announce it after the commit.
    pub(crate) async fn write_agent_data_checked(
        &self,
        writes: Vec<AgentWrite>,
        answers: &mut [Option<Result<AgentWritten>>],
    ) -> Result<(), GroupFailure> {
        let database = self.core.store().db();
        let open = || {
            writes
                .iter()
                .enumerate()
                .filter(|(index, _)| answers[*index].is_none())
                .map(|(_, write)| write)
        };
        // the rows of the group's runs, and the lengths of their log files
        let batch_runs = id_list(open().map(AgentWrite::run_id).collect());
        let mut runs = BTreeMap::new();
        for row in crate::store::runs::rows_by_ids(database, batch_runs)
            .await
            .map_err(|error| GroupFailure::db("reading runs' sequence numbers", error))?
        {
            let run = Run::from_entity(row).map_err(GroupFailure::corrupt)?;
            runs.insert(run.id.clone(), run);
        }
        let log_runs = id_list(
            open()
                .filter_map(|write| match write {
                    AgentWrite::Log { run_id, lines } if !lines.is_empty() => Some(run_id.as_str()),
                    _ => None,
                })
                .collect(),
        );
        let mut group = runlogs::group::Group::load(database, &runs, log_runs)
            .await
            .map_err(|error| GroupFailure::db("reading log file lengths", error))?;

        // what each write adds
        let now = self.core.now_ms();
        let mut measurements = Vec::new();
        let mut heartbeats = Vec::new();
        let mut artifacts = Vec::new();
        let mut announced = Vec::new();
        let mut pending: Vec<(usize, AgentWritten)> = Vec::new();
        for (index, write) in writes.into_iter().enumerate() {
            if answers[index].is_some() {
                continue;
            }
            let run_id = write.run_id().to_string();
            if let Err(error) = self.check_writable(runs.get(&run_id), &run_id, write.endpoint()) {
                answers[index] = Some(Err(error));
                continue;
            }
            let unknown = || Some(Err(OrchestratorError::RunNotFound(run_id.clone())));
            match write {
                AgentWrite::Log { lines, .. } => {
                    let Some((fresh, ack)) = group.take_lines(&run_id, lines) else {
                        answers[index] = unknown();
                        continue;
                    };
                    if !fresh.is_empty() {
                        announced.push(HubEvent::Log {
                            run_id: run_id.clone(),
                            lines: fresh
                                .iter()
                                .map(|line| runlogs::visible(&line.text))
                                .collect(),
                        });
                    }
                    pending.push((index, AgentWritten::Batch(ack)));
                }
                AgentWrite::Sensor { samples, .. } => {
                    let Some((fresh, ack)) = group.take_samples(&run_id, samples) else {
                        answers[index] = unknown();
                        continue;
                    };
                    if !fresh.is_empty() {
                        announced.push(HubEvent::Sensor {
                            run_id: run_id.clone(),
                            count: fresh.len(),
                        });
                    }
                    measurements.extend(fresh.into_iter().map(|sample| (run_id.clone(), sample)));
                    pending.push((index, AgentWritten::Batch(ack)));
                }
                AgentWrite::Heartbeat { current, .. } => {
                    let Some(run) = runs.get(&run_id) else {
                        answers[index] = unknown();
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
                    if let Err(error) = file.place(runs.get(&run_id)) {
                        answers[index] = Some(Err(error));
                        continue;
                    }
                    pending.push((index, AgentWritten::Artifact(file.stored())));
                    artifacts.push(file);
                }
            }
        }

        // the log files first, then one transaction for the rest
        group
            .append(&self.core.config().data_dir)
            .await
            .map_err(GroupFailure::io)?;
        let txn = database
            .begin_with_options(crate::store::WRITE)
            .await
            .map_err(|error| GroupFailure::db("storing agent data", error))?;
        group.commit(&txn).await.map_err(|error| match error {
            runlogs::group::CommitError::Conflict(run_id) => GroupFailure::Conflict(run_id),
            runlogs::group::CommitError::Db { doing, source } => GroupFailure::db(doing, source),
        })?;
        crate::store::agent_data::insert_samples(&txn, measurements)
            .await
            .map_err(|error| GroupFailure::db("storing sensor samples", error))?;
        for file in artifacts {
            artifact_row(&txn, file, now)
                .await
                .map_err(|error| GroupFailure::db("storing an artifact", error))?;
        }
        let silence_ms =
            crate::clock::secs_to_ms(self.core.config().deadlines.heartbeat_silence_secs);
        crate::store::runs::record_heartbeats(&txn, id_list(heartbeats), now, silence_ms)
            .await
            .map_err(|error| GroupFailure::db("recording heartbeats", error))?;
        txn.commit()
            .await
            .map_err(|error| GroupFailure::db("storing agent data", error))?;
        for event in announced {
            self.core.hub().publish(event);
        }
        for (index, written) in pending {
            answers[index] = Some(Ok(written));
        }
        Ok(())
    }
}
