//! The in-process events hub: transitions are announced here only after
//! they are committed, so a listener (SSE, notifiers) never sees a state the
//! database does not hold.

use serde::Serialize;
use tokio::sync::broadcast;

use crate::machine::{Event, RunState};

/// Something that happened, after it was committed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HubEvent {
    /// A run moved.
    Transition {
        run_id: String,
        host_id: i64,
        from: RunState,
        to: RunState,
        event: Event,
        at_ms: i64,
    },
    /// New log lines were stored for a run.
    Log { run_id: String, lines: Vec<String> },
    /// New sensor samples were stored for a run.
    Sensor { run_id: String, count: usize },
    /// A host was registered or removed: the DHCP allowlist follows.
    HostsChanged,
    /// The orchestrator wrote a line of its own to a run's log (a power
    /// action, a boot script handed out).
    OrchestratorLog {
        run_id: String,
        level: String,
        text: String,
        at_ms: i64,
    },
}

/// Fan-out to every subscriber; slow subscribers lose the oldest events
/// (they re-read the database on reconnect: the UI is a projection).
#[derive(Debug, Clone)]
pub struct EventsHub {
    sender: broadcast::Sender<HubEvent>,
}

impl Default for EventsHub {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl EventsHub {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        EventsHub { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.sender.subscribe()
    }

    /// Announces an event; having no subscriber is fine.
    pub fn publish(&self, event: HubEvent) {
        let _ = self.sender.send(event);
    }
}
