//! A run's log through the operator API: the agent's lines as stored by
//! the agent API, by stage and from a cursor, and live on the events
//! stream.

use super::*;

#[tokio::test]
async fn the_log_is_read_by_stage_from_a_cursor_and_followed_live() {
    let h = harness().await;
    let viewer = h.token("eyes", "viewer").await;
    let host = h.register(1).await;
    let run = h
        .orchestrator
        .operator()
        .start_run(host.id, &Actor::operator("test"))
        .await
        .unwrap();
    h.wait_for(&run.id, RunState::Booting).await;
    let token = h.orchestrator.agent().token_for(&run.id).await.unwrap();
    let agent = |endpoint: &'static str, body: Value| {
        let h = &h;
        let token = token.clone();
        let run = run.id.clone();
        async move {
            let response = h
                .client
                .post(format!("{}/api/v1/runs/{run}/{endpoint}", h.url))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{endpoint}");
        }
    };
    let hello = json!({"protocol_version": vetting_probes::protocol::PROTOCOL_VERSION, "agent_version": "test"});
    agent("hello", hello.clone()).await;
    agent("claim", hello).await;

    // the stream is open before the lines are stored
    let response = h
        .client
        .get(format!("{}/api/v1/events?run={}", h.url, run.id))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response;
    let stage = json!({"stage": "InventoryCheck", "attempt": 1});
    agent(
        "log",
        json!({"lines": [
            {"seq": 0, "at_ms": 10, "stage": null, "stream": "agent", "text": "booted"},
            {"seq": 1, "at_ms": 11, "stage": stage, "stream": "stdout", "text": "lshw ok"},
            {"seq": 2, "at_ms": 12, "stage": stage, "stream": "stderr", "text": "a\twarning"},
            {"seq": 3, "at_ms": 13, "stage": stage, "stream": "stdout", "text": "done"},
        ]}),
    )
    .await;

    let read = |query: &'static str| {
        let h = &h;
        let viewer = viewer.clone();
        let run = run.id.clone();
        async move {
            let answer = h
                .get(&format!("/api/v1/runs/{run}/logs{query}"), &viewer)
                .await;
            assert_eq!(answer.status, 200, "{query}: {answer:?}");
            let seqs: Vec<u64> = answer.body["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|line| line["seq"].as_u64().unwrap())
                .collect();
            (seqs, answer.body)
        }
    };
    let (all, body) = read("").await;
    assert_eq!(all, [0, 1, 2, 3]);
    assert_eq!(body["next"], 4);
    assert_eq!(body["lines"][2]["text"], "a\twarning");
    assert_eq!(body["lines"][2]["stream"], "stderr");
    let (rest, body) = read("?after=2").await;
    assert_eq!(rest, [2, 3]);
    assert_eq!(body["next"], 4);
    let (none, body) = read("?after=4").await;
    assert!(none.is_empty());
    assert_eq!(body["next"], 4, "an empty read keeps the cursor");
    let (stage_lines, body) = read("?stage=InventoryCheck").await;
    assert_eq!(stage_lines, [1, 2, 3]);
    assert_eq!(body["orchestrator"], json!([]));
    let (storage, _) = read("?stage=Storage").await;
    assert!(storage.is_empty());
    let (first_two, body) = read("?limit=2").await;
    assert_eq!(first_two, [0, 1]);
    assert_eq!(body["next"], 2);
    // the orchestrator's own lines and their cursor
    let (_, body) = read("").await;
    let orchestrator = body["orchestrator"].as_array().unwrap().len();
    assert!(orchestrator > 0, "{body}");
    assert_eq!(body["orchestrator_next"], orchestrator);
    let later = h
        .get(
            &format!(
                "/api/v1/runs/{}/logs?orchestrator_after={orchestrator}",
                run.id
            ),
            &viewer,
        )
        .await;
    assert_eq!(later.body["orchestrator"], json!([]));

    // the lines came live as a `log` event
    let mut buffer = String::new();
    let log = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(start) = buffer.find("event: log\n")
                && let Some(end) = buffer[start..].find("\n\n")
            {
                return buffer[start..start + end].to_string();
            }
            let chunk = stream.chunk().await.unwrap().unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("a log event");
    let data = log
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["run_id"], run.id.as_str());
    assert_eq!(data["lines"].as_array().unwrap().len(), 4, "{data}");
    drop(stream);
    h.shutdown().await;
}
