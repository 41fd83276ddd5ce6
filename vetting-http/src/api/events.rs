//! `GET /api/v1/events`: the server-sent events of run transitions and
//! log lines. Transitions come from the database in id order, so a
//! stream never skips or repeats one: the hub is subscribed to first,
//! then the database read from the resume point (`Last-Event-ID` or
//! `?after=`), and every hub transition (or a lag of the hub's buffer)
//! only triggers a read of the transitions after the last one sent. Log
//! lines are live only (the hub's `Log` and `OrchestratorLog`); the run's
//! log files are `GET /runs/{id}/logs`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use vetting_core::events::HubEvent;
use vetting_core::orchestrator::Orchestrator;

use super::auth::Viewer;
use super::views::{ErrorResponse, TransitionEvent};
use crate::AppState;
use crate::error::ApiError;

/// How many transitions one database read of the stream takes.
const CATCH_UP_BATCH: u64 = 500;
/// How often a comment keeps an idle stream open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events waiting for a slow client before the stream stops reading the
/// hub (it catches up from the database after).
const STREAM_BUFFER: usize = 256;
/// The most host names a stream keeps (an every-run stream meets many).
const NAMES_KEPT: usize = 10_000;
/// The most runs one stream may watch by id.
pub const MAX_WATCHED_RUNS: usize = 1000;

#[utoipa::path(get, path = "/api/v1/events", operation_id = "events", tag = "events",
    params(
        ("run" = Option<Vec<String>>, Query, description = "watch these runs (repeat the parameter); none: every run"),
        ("after" = Option<i64>, Query, description = "replay the transitions after this id first (as `Last-Event-ID`)"),
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this transition id"),
    ),
    responses((status = 200, description = "`event: transition` (`id:` the transition id, data a transition with `host_name`) and `event: log` (data the hub's log event)",
            content_type = "text/event-stream", body = TransitionEvent),
        (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("token" = [])))]
pub async fn events(
    State(state): State<AppState>,
    _caller: Viewer,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(pairs) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let mut runs: Vec<String> = Vec::new();
    let mut after: Option<i64> = None;
    for (key, value) in pairs {
        match key.as_str() {
            "run" => {
                if !runs.contains(&value) {
                    runs.push(value);
                }
            }
            "after" => {
                after = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(format!("`after` must be a transition id, not `{value}`"))
                })?);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}` (run, after)"
                )));
            }
        }
    }
    if runs.len() > MAX_WATCHED_RUNS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_WATCHED_RUNS} runs per stream"
        )));
    }
    if let Some(value) = headers.get("last-event-id") {
        let text = value.to_str().unwrap_or_default().trim();
        after = Some(
            text.parse()
                .map_err(|_| ApiError::bad_request("`Last-Event-ID` must be a transition id"))?,
        );
    }
    let operator = state.orchestrator.operator();
    let mut names = HashMap::new();
    for run_id in &runs {
        let run = operator.get_run(run_id).await?;
        let host = operator.get_host(run.host_id).await?;
        names.insert(run.id, host.name);
    }
    // subscribed before the database is read: nothing committed after the
    // read can be missed
    let hub = state.orchestrator.hub().subscribe();
    let last = match after {
        Some(after) => after,
        None => operator.last_transition_id().await?,
    };
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    let stream = Follow {
        orchestrator: state.orchestrator.clone(),
        runs,
        names,
        last,
        sender,
    };
    tokio::spawn(stream.run(hub));
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One stream's follower: sends until the client goes away.
struct Follow {
    orchestrator: Orchestrator,
    /// Empty: every run.
    runs: Vec<String>,
    names: HashMap<String, String>,
    /// The id of the last transition sent (or the resume point).
    last: i64,
    sender: mpsc::Sender<Event>,
}

impl Follow {
    async fn run(mut self, mut hub: tokio::sync::broadcast::Receiver<HubEvent>) {
        if self.catch_up().await.is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                next = hub.recv() => next,
                () = self.sender.closed() => return,
            };
            let sent = match next {
                Ok(HubEvent::Transition { run_id, .. }) if self.watches(&run_id) => {
                    self.catch_up().await
                }
                Ok(event @ (HubEvent::Log { .. } | HubEvent::OrchestratorLog { .. })) => {
                    self.log(&event).await
                }
                Ok(_) => Ok(()),
                // the hub dropped events for this slow stream: the
                // transitions are re-read from the database
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "an events stream lagged the hub; catching up");
                    self.catch_up().await
                }
                Err(RecvError::Closed) => return,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    fn watches(&self, run_id: &str) -> bool {
        self.runs.is_empty() || self.runs.iter().any(|run| run == run_id)
    }

    /// Sends every transition after `last`, in id order. `Err` when the
    /// client has gone.
    async fn catch_up(&mut self) -> Result<(), ()> {
        let operator = self.orchestrator.operator();
        loop {
            let batch = match operator
                .transitions_after(self.last, &self.runs, CATCH_UP_BATCH)
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(
                        "events stream: reading transitions: {:#}",
                        vetting_core::error::chain(&error)
                    );
                    return Err(());
                }
            };
            let full = batch.len() as u64 == CATCH_UP_BATCH;
            for transition in batch {
                let host_name = self.host_name(&transition.run_id).await;
                let id = transition.id;
                let data = TransitionEvent {
                    transition,
                    host_name,
                };
                let event = Event::default()
                    .event("transition")
                    .id(id.to_string())
                    .json_data(&data)
                    .map_err(|_| ())?;
                self.sender.send(event).await.map_err(|_| ())?;
                self.last = id;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn log(&mut self, event: &HubEvent) -> Result<(), ()> {
        let run_id = match event {
            HubEvent::Log { run_id, .. } | HubEvent::OrchestratorLog { run_id, .. } => run_id,
            _ => return Ok(()),
        };
        if !self.watches(run_id) {
            return Ok(());
        }
        let event = Event::default()
            .event("log")
            .json_data(event)
            .map_err(|_| ())?;
        self.sender.send(event).await.map_err(|_| ())
    }

    async fn host_name(&mut self, run_id: &str) -> String {
        if let Some(name) = self.names.get(run_id) {
            return name.clone();
        }
        let operator = self.orchestrator.operator();
        let name = match operator.get_run(run_id).await {
            Ok(run) => operator
                .get_host(run.host_id)
                .await
                .map(|host| host.name)
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        if self.names.len() >= NAMES_KEPT {
            self.names.clear();
        }
        self.names.insert(run_id.to_string(), name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;

    use vetting_core::config::Config;
    use vetting_core::events::EventsHub;
    use vetting_core::model::{Actor, NewHost};

    use super::*;

    /// A stream whose hub subscription lagged (the hub dropped the
    /// transitions' announcements) still sends every transition: the lag
    /// makes it read them from the database.
    #[tokio::test]
    async fn a_stream_that_lags_the_hub_reads_the_missed_transitions_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.iperf.enabled = false;
        let orchestrator = Orchestrator::open(config, Arc::new(vetting_core::clock::SystemClock))
            .await
            .unwrap()
            .with_bcrypt_cost(4);
        let operator = orchestrator.operator();
        let actor = Actor::operator("test");
        let mut hosts = Vec::new();
        for index in 0..4 {
            hosts.push(
                operator
                    .register_host(
                        NewHost {
                            name: format!("h{index}"),
                            macs: vec![format!("52:54:00:cc:00:{index:02x}")],
                            ..Default::default()
                        },
                        &actor,
                    )
                    .await
                    .unwrap(),
            );
        }
        let first = operator.start_run(hosts[0].id, &actor).await.unwrap();
        // a hub of one slot, which this test alone publishes on
        let hub = EventsHub::new(1);
        let (sender, mut receiver) = mpsc::channel(STREAM_BUFFER);
        let follow = Follow {
            orchestrator: orchestrator.clone(),
            runs: Vec::new(),
            names: HashMap::new(),
            last: 0,
            sender,
        };
        let task = tokio::spawn(follow.run(hub.subscribe()));
        // the first run's transition, replayed from the database
        assert!(receiver.recv().await.is_some());
        // the follower has replayed the database; these transitions are
        // announced on the orchestrator's hub, never on this one
        let mut started = vec![first.id.clone()];
        for host in &hosts[1..] {
            started.push(operator.start_run(host.id, &actor).await.unwrap().id);
        }
        for _ in 0..3 {
            hub.publish(HubEvent::HostsChanged);
        }
        let expected = operator.transitions(None).await.unwrap();
        assert_eq!(expected.len(), 4, "one Enqueue per run");
        let mut got = 1;
        while got < expected.len() {
            let event = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
                .await
                .expect("the missed transitions come after the lag");
            assert!(event.is_some());
            got += 1;
        }
        drop(receiver);
        task.abort();
    }
}
