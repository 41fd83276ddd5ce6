//! Reads the operator API needs beyond the contract: a run's log lines
//! from a cursor, by stage. Reads only; the file names come from the
//! run's folder and the stage's own name, never from a request.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use vetting_probes::protocol::Stage;

use crate::error::{OrchestratorError, Result, db};
use crate::model::TransitionRecord;
use crate::runlogs::{self, StoredLine, oplog::OrchestratorLine};
use crate::store::entities::transition;

use super::Operator;

/// A piece of a run's log: the agent's lines with `seq >= after` (at most
/// `limit`), and the orchestrator's own lines from index `orchestrator_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLogs {
    pub lines: Vec<StoredLine>,
    /// The `after` of the next read: one past the last line's sequence
    /// number (or the `after` asked, when no line was new).
    pub next: u64,
    /// The orchestrator's lines (power actions, boot scripts); none when
    /// a stage was asked.
    pub orchestrator: Vec<OrchestratorLine>,
    pub orchestrator_next: usize,
}

impl Operator {
    /// The log of `run_id` (which must exist) from the cursors `after`
    /// and `orchestrator_after`: every stage, or only `stage`'s attempts.
    pub async fn run_logs(
        &self,
        run_id: &str,
        stage: Option<Stage>,
        after: u64,
        orchestrator_after: usize,
        limit: usize,
    ) -> Result<RunLogs> {
        // the run's id as stored names the folder, not the caller's text
        let run = self.get_run(run_id).await?;
        let data_dir = self.core.config().data_dir.clone();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<RunLogs> {
            let mut lines = match stage {
                None => runlogs::read_run(&data_dir, &run.id)?,
                Some(stage) => read_stage(&data_dir, &run.id, stage)?,
            };
            lines.retain(|line| line.seq >= after);
            lines.truncate(limit);
            let next = lines.last().map_or(after, |line| line.seq + 1);
            let (orchestrator, orchestrator_next) = match stage {
                Some(_) => (Vec::new(), orchestrator_after),
                None => {
                    let all = runlogs::oplog::read(&data_dir, &run.id)?;
                    let total = all.len();
                    (
                        all.into_iter().skip(orchestrator_after).collect(),
                        total.max(orchestrator_after),
                    )
                }
            };
            Ok(RunLogs {
                lines,
                next,
                orchestrator,
                orchestrator_next,
            })
        });
        read.await
            .map_err(crate::error::internal)?
            .map_err(|source| OrchestratorError::Io {
                doing: format!("reading the log of run {run_id}"),
                source,
            })
    }
}

impl Operator {
    /// At most `limit` transitions with an id above `after`, of `runs`
    /// (every run when empty), in commit order (by id): what an events
    /// stream replays and catches up with, through the primary key.
    pub async fn transitions_after(
        &self,
        after: i64,
        runs: &[String],
        limit: u64,
    ) -> Result<Vec<TransitionRecord>> {
        let mut query = transition::Entity::find()
            .filter(transition::Column::Id.gt(after))
            .order_by_asc(transition::Column::Id)
            .limit(limit);
        if !runs.is_empty() {
            query = query.filter(transition::Column::RunId.is_in(runs.iter().cloned()));
        }
        Ok(query
            .all(self.core.conn())
            .await
            .map_err(db("reading transitions"))?
            .into_iter()
            .map(crate::store::transitions::record_of)
            .collect())
    }

    /// The id of the last transition recorded (0 when none).
    pub async fn last_transition_id(&self) -> Result<i64> {
        Ok(transition::Entity::find()
            .order_by_desc(transition::Column::Id)
            .one(self.core.conn())
            .await
            .map_err(db("reading transitions"))?
            .map_or(0, |model| model.id))
    }
}

/// The lines of every attempt of `stage` (files `{stage}-{attempt}.log`).
fn read_stage(
    data_dir: &std::path::Path,
    run_id: &str,
    stage: Stage,
) -> std::io::Result<Vec<StoredLine>> {
    let dir = runlogs::run_log_dir(data_dir, run_id);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let prefix = format!("{}-", stage.as_str());
    let mut lines = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_stage = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".log"))
            .is_some_and(|attempt| {
                !attempt.is_empty() && attempt.bytes().all(|b| b.is_ascii_digit())
            });
        if is_stage {
            lines.extend(runlogs::parse_lines(&std::fs::read_to_string(
                entry.path(),
            )?));
        }
    }
    lines.sort_by_key(|line| line.seq);
    Ok(lines)
}
