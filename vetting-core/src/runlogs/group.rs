//! The exactly-once bookkeeping of one writer group: which log lines and
//! sensor samples of its batches are new (by sequence number, per run),
//! what each log file gets appended past its committed length, and the
//! sequence numbers and lengths committed with the group's transaction.
//! The writer (`crate::agent`) decides nothing of this; it hands batches
//! over and commits what this module gives it.

use std::collections::BTreeMap;

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use vetting_probes::protocol::{BatchAck, LogLine, SensorSample};

use crate::model::Run;
use crate::store::entities::{log_file, run};

/// A run's next sequence numbers as read, and as they become.
#[derive(Debug, Clone, Copy)]
struct Sequences {
    log_before: i64,
    sensor_before: i64,
    log_next: u64,
    sensor_next: u64,
}

/// Which sequence of a run a batch belongs to.
#[derive(Debug, Clone, Copy)]
enum Sequence {
    Log,
    Sensor,
}

/// Why the group's bookkeeping could not be committed.
#[derive(Debug)]
pub(crate) enum CommitError {
    Db {
        doing: &'static str,
        source: sea_orm::DbErr,
    },
    /// Another writer moved this run's sequence numbers since the group
    /// read them.
    Conflict(String),
}

/// The bookkeeping of one group.
#[derive(Debug, Default)]
pub(crate) struct Group {
    sequences: BTreeMap<String, Sequences>,
    /// The committed lengths of the log files the group appends to.
    lengths: BTreeMap<(String, String), u64>,
    /// What each file gets: its committed length and the text appended.
    appends: BTreeMap<(String, String), (u64, String)>,
    /// The files' lengths after the append, committed with the group.
    appended: Vec<(String, String, u64)>,
}

impl Group {
    /// The group of `runs` (their rows as the writer read them), with the
    /// committed lengths of the log files of `log_runs`.
    pub(crate) async fn load(
        conn: &impl ConnectionTrait,
        runs: &BTreeMap<String, Run>,
        log_runs: Vec<&str>,
    ) -> Result<Group, sea_orm::DbErr> {
        let mut group = Group::default();
        for run in runs.values() {
            group.sequences.insert(
                run.id.clone(),
                Sequences {
                    log_before: run.next_log_seq,
                    sensor_before: run.next_sensor_seq,
                    log_next: run.next_log_seq.max(0) as u64,
                    sensor_next: run.next_sensor_seq.max(0) as u64,
                },
            );
        }
        if !log_runs.is_empty() {
            let files = log_file::Entity::find()
                .filter(log_file::Column::RunId.is_in(log_runs))
                .all(conn)
                .await?;
            for row in files {
                group
                    .lengths
                    .insert((row.run_id, row.file), row.committed_len.max(0) as u64);
            }
        }
        Ok(group)
    }

    /// The new lines of a log batch, queued for their files, and the
    /// batch's answer; `None` for a run the group does not know.
    pub(crate) fn take_lines(
        &mut self,
        run_id: &str,
        lines: Vec<LogLine>,
    ) -> Option<(Vec<LogLine>, BatchAck)> {
        let (fresh, ack) = self.take(run_id, Sequence::Log, lines, |line| line.seq)?;
        for line in &fresh {
            let key = (run_id.to_string(), super::file_for(line));
            let committed = self.lengths.get(&key).copied().unwrap_or(0);
            self.appends
                .entry(key)
                .or_insert_with(|| (committed, String::new()))
                .1
                .push_str(&super::format_line(line));
        }
        Some((fresh, ack))
    }

    /// The new samples of a sensor batch and the batch's answer; `None`
    /// for a run the group does not know.
    pub(crate) fn take_samples(
        &mut self,
        run_id: &str,
        samples: Vec<SensorSample>,
    ) -> Option<(Vec<SensorSample>, BatchAck)> {
        self.take(run_id, Sequence::Sensor, samples, |sample| sample.seq)
    }

    fn take<T>(
        &mut self,
        run_id: &str,
        sequence: Sequence,
        items: Vec<T>,
        seq_of: impl Fn(&T) -> u64,
    ) -> Option<(Vec<T>, BatchAck)> {
        let sequences = self.sequences.get_mut(run_id)?;
        let next = match sequence {
            Sequence::Log => &mut sequences.log_next,
            Sequence::Sensor => &mut sequences.sensor_next,
        };
        let (fresh, after) = take_fresh(items, *next, seq_of);
        *next = after;
        let stored = fresh.len() as u64;
        Some((
            fresh,
            BatchAck {
                next_seq: after,
                stored,
            },
        ))
    }

    /// Appends the queued text to each file past its committed length and
    /// syncs it; a failure before the commit is undone by the next append,
    /// which truncates back to the committed length.
    pub(crate) async fn append(&mut self, data_dir: &std::path::Path) -> std::io::Result<()> {
        if self.appends.is_empty() {
            return Ok(());
        }
        let appends = std::mem::take(&mut self.appends);
        let jobs: Vec<super::Append> = appends
            .iter()
            .map(|((run_id, file), (committed, text))| super::Append {
                path: super::run_log_dir(data_dir, run_id).join(file),
                committed_len: *committed,
                text: text.clone(),
            })
            .collect();
        let lengths = super::append_all(jobs).await?;
        for (((run_id, file), _), new_len) in appends.into_iter().zip(lengths) {
            self.appended.push((run_id, file, new_len));
        }
        Ok(())
    }

    /// Commits the new sequence numbers (compare-and-set against what the
    /// group read) and the appended files' lengths, inside the group's
    /// transaction.
    pub(crate) async fn commit(&self, txn: &impl ConnectionTrait) -> Result<(), CommitError> {
        let db = |doing: &'static str| move |source| CommitError::Db { doing, source };
        for (run_id, sequence) in &self.sequences {
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
                .exec(txn)
                .await
                .map_err(db("storing sequence numbers"))?;
            if updated.rows_affected != 1 {
                return Err(CommitError::Conflict(run_id.clone()));
            }
        }
        for (run_id, file, new_len) in &self.appended {
            log_file::Entity::insert(log_file::ActiveModel {
                run_id: Set(run_id.clone()),
                file: Set(file.clone()),
                committed_len: Set(*new_len as i64),
            })
            .on_conflict(
                OnConflict::columns([log_file::Column::RunId, log_file::Column::File])
                    .update_column(log_file::Column::CommittedLen)
                    .to_owned(),
            )
            .exec(txn)
            .await
            .map_err(db("storing log file lengths"))?;
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_run_without_a_gap_from_next_is_taken() {
        let (fresh, next) = take_fresh(vec![7, 5, 4, 3, 9, 6], 4, |n| *n);
        assert_eq!(fresh, vec![4, 5, 6, 7]);
        assert_eq!(next, 8);
        let (fresh, next) = take_fresh(vec![1, 2], 4, |n| *n);
        assert!(fresh.is_empty(), "retries are dropped");
        assert_eq!(next, 4);
        let (fresh, next) = take_fresh(vec![6, 7], 4, |n| *n);
        assert!(fresh.is_empty(), "a gap keeps everything after it");
        assert_eq!(next, 4);
    }
}
