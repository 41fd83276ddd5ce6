//! The events stream: transitions in id order with `id:`, resumed with
//! `Last-Event-ID` (or `?after=`) from the database without gap or
//! duplicate; a run filter; log events of watched runs.

use vetting_core::events::HubEvent;

use super::*;

/// One server-sent event.
#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// A reader of an event stream over reqwest.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(h: &Harness, token: &str, query: &str, last_event_id: Option<i64>) -> Stream {
        let mut request = h
            .client
            .get(format!("{}/api/v1/events{query}", h.url))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Stream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), or `None` after 10 s
    /// of silence.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event.event = value.trim().to_string();
                        any = true;
                    } else if let Some(value) = line.strip_prefix("id:") {
                        event.id = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        event.data.push_str(value.trim_start());
                        any = true;
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Transitions until `count` have come; their ids and data.
    async fn transitions(&mut self, count: usize) -> Vec<(i64, Value)> {
        let mut got = Vec::new();
        while got.len() < count {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("only {} of {count} transitions came", got.len()));
            if event.event == "transition" {
                let data: Value = serde_json::from_str(&event.data).unwrap();
                let id: i64 = event.id.unwrap().parse().unwrap();
                assert_eq!(data["id"], id);
                got.push((id, data));
            }
        }
        got
    }
}

async fn all_transition_ids(h: &Harness) -> Vec<i64> {
    h.orchestrator
        .operator()
        .transitions(None)
        .await
        .unwrap()
        .into_iter()
        .map(|transition| transition.id)
        .collect()
}

#[tokio::test]
async fn a_resumed_stream_has_no_gap_and_no_duplicate() {
    let h = harness().await;
    let viewer = h.token("eyes", "viewer").await;
    let operator = h.token("ops", "operator").await;
    for index in 0..3 {
        h.register(index).await;
    }
    let mut first = Stream::open(&h, &viewer, "", None).await;
    let started = h
        .post(
            "/api/v1/runs",
            &operator,
            json!({"hosts": ["h0", "h1", "h2"]}),
        )
        .await;
    let runs: Vec<String> = started.body["started"]
        .as_array()
        .unwrap()
        .iter()
        .map(|started| started["run"]["id"].as_str().unwrap().to_string())
        .collect();
    for run in &runs {
        h.wait_for(run, RunState::Booting).await;
    }
    // each run: Queued, WaitingWoL, Booting
    let before_drop = first.transitions(4).await;
    let names: Vec<&str> = before_drop
        .iter()
        .map(|(_, data)| data["host_name"].as_str().unwrap())
        .collect();
    assert!(names.iter().all(|name| name.starts_with('h')), "{names:?}");
    let last = before_drop.last().unwrap().0;
    drop(first);

    for run in &runs {
        assert_eq!(
            h.post(&format!("/api/v1/runs/{run}/cancel"), &operator, json!({}))
                .await
                .status,
            200
        );
    }
    let all = all_transition_ids(&h).await;
    assert_eq!(all.len(), 12);
    let remaining = all.iter().filter(|id| **id > last).count();
    let mut resumed = Stream::open(&h, &viewer, "", Some(last)).await;
    let after = resumed.transitions(remaining).await;
    let mut ids: Vec<i64> = before_drop.iter().map(|(id, _)| *id).collect();
    ids.extend(after.iter().map(|(id, _)| *id));
    assert_eq!(ids, all, "every transition once, in order");

    // the stream goes on live after its replay
    let h3 = h.register(3).await;
    let live = h
        .orchestrator
        .operator()
        .start_run(h3.id, &Actor::operator("test"))
        .await
        .unwrap();
    let (_, queued) = resumed.transitions(1).await.remove(0);
    assert_eq!(queued["run_id"], live.id.as_str());
    assert_eq!(queued["to"], "Queued");
    assert_eq!(queued["host_name"], "h3");

    // `?after=` and a run filter: exactly that run's transitions
    let mut one = Stream::open(&h, &viewer, &format!("?run={}&after=0", runs[1]), None).await;
    let only = one.transitions(4).await;
    assert!(
        only.iter()
            .all(|(_, data)| data["run_id"] == runs[1].as_str())
    );
    let expected: Vec<i64> = h
        .orchestrator
        .operator()
        .transitions(Some(&runs[1]))
        .await
        .unwrap()
        .into_iter()
        .map(|transition| transition.id)
        .collect();
    assert_eq!(only.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);

    // log lines of a watched run come as `log` events; others' do not
    h.orchestrator.hub().publish(HubEvent::Log {
        run_id: runs[0].clone(),
        lines: vec!["not watched".into()],
    });
    h.orchestrator.hub().publish(HubEvent::Log {
        run_id: runs[1].clone(),
        lines: vec!["watched".into()],
    });
    let log = loop {
        let event = one.next().await.expect("a log event");
        if event.event == "log" {
            break event;
        }
    };
    let data: Value = serde_json::from_str(&log.data).unwrap();
    assert_eq!(data["run_id"], runs[1].as_str());
    assert_eq!(data["lines"], json!(["watched"]));

    // refused
    for (query, status) in [
        ("?run=no-such-run", 404),
        ("?after=yesterday", 400),
        ("?colour=red", 400),
    ] {
        let answer = h.get(&format!("/api/v1/events{query}"), &viewer).await;
        assert_eq!(answer.status, status, "{query}: {answer:?}");
    }
    let no_token = h.call("GET", "/api/v1/events", None, Body::None).await;
    assert_eq!(no_token.status, 401);
    drop((resumed, one));
    h.shutdown().await;
}
