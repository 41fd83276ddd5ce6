//! `/metrics`: Prometheus text that parses, with the documented names;
//! an agent request moves its endpoint's counter.

use std::collections::HashMap;

use super::*;

/// Every sample: `name{labels}` → value (each line checked to parse).
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_an_agent_request_moves_its_counter() {
    let h = harness().await;
    let host = h.register(1).await;
    let run = h
        .orchestrator
        .operator()
        .start_run(host.id, &Actor::operator("test"))
        .await
        .unwrap();
    h.wait_for(&run.id, RunState::Booting).await;
    let read = || async {
        let answer = h.call("GET", "/metrics", None, Body::None).await;
        assert_eq!(answer.status, 200);
        assert!(answer.content_type.starts_with("text/plain; version=0.0.4"));
        parse(&answer.text)
    };
    let before = read().await;
    for name in [
        "vetting_runs{state=\"Booting\"}",
        "vetting_runs{state=\"Completed\"}",
        "vetting_queue_length",
        "vetting_dispatcher_slots",
        "vetting_dispatcher_slots_in_use",
        "vetting_data_dir_free_bytes",
        "vetting_agent_requests_total{endpoint=\"heartbeat\",class=\"2xx\"}",
        "vetting_agent_request_duration_seconds_bucket{endpoint=\"hello\",class=\"2xx\",le=\"+Inf\"}",
    ] {
        assert!(before.contains_key(name), "{name} missing: {before:?}");
    }
    assert_eq!(before["vetting_runs{state=\"Booting\"}"], 1.0);
    assert_eq!(before["vetting_dispatcher_slots"], 3.0);
    assert_eq!(before["vetting_dispatcher_slots_in_use"], 1.0);
    assert!(before["vetting_data_dir_free_bytes"] > 0.0);

    // a heartbeat without a token: counted as the heartbeat's 4xx
    let heartbeat = h
        .client
        .post(format!("{}/api/v1/runs/{}/heartbeat", h.url, run.id))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(heartbeat.status(), 401);
    // a hello with the run's token: the hello's 2xx
    let token = h.orchestrator.agent().token_for(&run.id).await.unwrap();
    let hello = h
        .client
        .post(format!("{}/api/v1/runs/{}/hello", h.url, run.id))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json!({"protocol_version": vetting_probes::protocol::PROTOCOL_VERSION, "agent_version": "test"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(hello.status(), 200);
    let after = read().await;
    let key = "vetting_agent_requests_total{endpoint=\"heartbeat\",class=\"4xx\"}";
    assert_eq!(after[key], before.get(key).copied().unwrap_or(0.0) + 1.0);
    let hello_count = "vetting_agent_requests_total{endpoint=\"hello\",class=\"2xx\"}";
    assert_eq!(after[hello_count], before[hello_count] + 1.0);
    let histogram =
        "vetting_agent_request_duration_seconds_count{endpoint=\"hello\",class=\"2xx\"}";
    assert_eq!(after[histogram], before[histogram] + 1.0);
    // the operator API's own requests are not agent requests
    let total: f64 = after
        .iter()
        .filter(|(name, _)| name.starts_with("vetting_agent_requests_total"))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(total, 2.0);
    h.shutdown().await;
}
