//! Exactly once, counted from what the orchestrator holds: the log lines
//! in the run log files and the sensor readings in the database, against
//! what each agent produced and had acknowledged.

use anyhow::Context;
use vetting_core::orchestrator::Orchestrator;

use super::agents::AgentReport;

/// Lost and duplicated items of one kind (log lines or readings).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Produced by the agents.
    pub sent: u64,
    /// Distinct sequence numbers held by the orchestrator.
    pub stored: u64,
    /// Acknowledged to an agent but not held.
    pub lost: u64,
    /// Held more than once (each extra copy counts).
    pub duplicated: u64,
    /// Held but never produced (would be a corruption).
    pub unexpected: u64,
    /// Produced but never acknowledged when the agents stopped.
    pub unacknowledged: u64,
}

impl Counts {
    fn add(&mut self, start: u64, next: u64, acked: u64, mut held: Vec<u64>) {
        held.sort_unstable();
        self.sent += next.saturating_sub(start);
        self.unacknowledged += next.saturating_sub(acked);
        let mut previous = None;
        let mut distinct = Vec::with_capacity(held.len());
        for seq in held {
            if previous == Some(seq) {
                self.duplicated += 1;
                continue;
            }
            previous = Some(seq);
            if seq >= next {
                self.unexpected += 1;
            }
            distinct.push(seq);
        }
        self.stored += distinct.len() as u64;
        let held_below_acked = distinct
            .iter()
            .filter(|&&seq| seq >= start && seq < acked)
            .count() as u64;
        self.lost +=
            acked.saturating_sub(start) - held_below_acked.min(acked.saturating_sub(start));
    }

    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unexpected == 0
    }
}

/// Log lines and readings, over every agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Integrity {
    pub log_lines: Counts,
    pub readings: Counts,
}

/// Counts what `orchestrator` (opened on the harness's store after its
/// server stopped) holds against the agents' reports.
pub async fn check(
    orchestrator: &Orchestrator,
    reports: &[AgentReport],
) -> anyhow::Result<Integrity> {
    let mut integrity = Integrity::default();
    let data_dir = orchestrator.config().data_dir.clone();
    for report in reports.iter().filter(|r| r.claimed) {
        let lines = vetting_core::runlogs::read_run(&data_dir, &report.run_id)
            .with_context(|| format!("reading the logs of run {}", report.run_id))?;
        integrity.log_lines.add(
            report.log_start,
            report.log_next,
            report.log_acked,
            lines.into_iter().map(|line| line.seq).collect(),
        );
        let readings = orchestrator
            .operator()
            .sensor_sequence_numbers(&report.run_id)
            .await
            .with_context(|| format!("reading the readings of run {}", report.run_id))?;
        integrity.readings.add(
            report.sensor_start,
            report.sensor_next,
            report.sensor_acked,
            readings.into_iter().map(|seq| seq.max(0) as u64).collect(),
        );
    }
    Ok(integrity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_duplicated_and_unexpected_are_told_apart() {
        let mut counts = Counts::default();
        // produced 0..10, acknowledged below 8; held: 0..8 without 3, 5 twice, and 12
        counts.add(0, 10, 8, vec![0, 1, 2, 4, 5, 5, 6, 7, 12]);
        assert_eq!(counts.sent, 10);
        assert_eq!(counts.lost, 1);
        assert_eq!(counts.duplicated, 1);
        assert_eq!(counts.unexpected, 1);
        assert_eq!(counts.unacknowledged, 2);
        assert!(!counts.clean());
    }
}
