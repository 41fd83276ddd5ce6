//! The orchestrator's own lines in a run's log: power actions and their
//! outcome, boot scripts handed out or refused. They live beside the
//! agent's log files, in `{data}/runs/{run}/orchestrator.log`, one line
//! each: `{at_ms}\t{level}\t{text}` (newlines escaped), and are announced on
//! the events hub. They are kept apart from the agent's files, which hold
//! the agent's sequence numbers exactly once.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::events::{EventsHub, HubEvent};

/// The file of a run's orchestrator lines.
pub fn path(data_dir: &Path, run_id: &str) -> PathBuf {
    data_dir.join("runs").join(run_id).join("orchestrator.log")
}

/// A line read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestratorLine {
    pub at_ms: i64,
    pub level: String,
    pub text: String,
}

/// Appends one line (and announces it). A write error is logged, never
/// fatal: the transition records keep the outcome in the database too.
pub fn append(data_dir: &Path, hub: &EventsHub, run_id: &str, at_ms: i64, level: &str, text: &str) {
    let file = path(data_dir, run_id);
    let escaped = crate::runlogs::escape(text);
    let written = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
        })
        .and_then(|mut handle| {
            handle.write_all(format!("{at_ms}\t{level}\t{escaped}\n").as_bytes())
        });
    if let Err(error) = written {
        tracing::warn!(run = run_id, file = %file.display(), %error, "cannot write the run's orchestrator log");
    }
    hub.publish(HubEvent::OrchestratorLog {
        run_id: run_id.to_string(),
        level: level.to_string(),
        text: text.to_string(),
        at_ms,
    });
}

/// Every orchestrator line of a run, oldest first (none when the file does
/// not exist).
pub fn read(data_dir: &Path, run_id: &str) -> std::io::Result<Vec<OrchestratorLine>> {
    let text = match std::fs::read_to_string(path(data_dir, run_id)) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let at_ms = parts.next()?.parse().ok()?;
            let level = parts.next()?.to_string();
            let text = crate::runlogs::unescape(parts.next().unwrap_or(""));
            Some(OrchestratorLine { at_ms, level, text })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_with_newlines_and_are_announced() {
        let folder = tempfile::tempdir().unwrap();
        let hub = EventsHub::default();
        let mut events = hub.subscribe();
        append(
            folder.path(),
            &hub,
            "r1",
            5,
            "info",
            "power (ipmi): starting",
        );
        append(folder.path(), &hub, "r1", 6, "error", "BMC said:\nno");
        let lines = read(folder.path(), "r1").unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].text, "BMC said:\nno");
        assert_eq!(lines[1].level, "error");
        assert!(matches!(
            events.try_recv().unwrap(),
            HubEvent::OrchestratorLog { at_ms: 5, .. }
        ));
        assert!(read(folder.path(), "other").unwrap().is_empty());
    }
}
