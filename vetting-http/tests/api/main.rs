//! The agent API over a real socket on loopback: hostile requests get the
//! right 4xx with a JSON error and change nothing in the database; log and
//! sensor batches are stored exactly once across retries; a repeated result
//! gets the same answer; a result out of order gets 409 with the position.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use serde_json::{Value, json};
use vetting_core::clock::SystemClock;
use vetting_core::config::{Config, Secret};
use vetting_core::machine::{Event, RunState};
use vetting_core::model::{Actor, NewHost};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::runs::EventContext;
use vetting_probes::protocol::Endpoint;

mod body_before_auth;
mod errors;
mod fuzz;
mod limits;
mod rejudge;
mod results;
mod server;

/// Every agent endpoint this build serves, from the protocol's one list.
fn served_endpoints() -> Vec<Endpoint> {
    Endpoint::ALL
        .into_iter()
        .filter(|endpoint| endpoint.is_served())
        .collect()
}

struct Harness {
    url: String,
    orchestrator: Orchestrator,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

/// A server over a fresh data folder, through `vetting_http::serve` (the
/// production server of `vetting serve`), with `adjust` applied to its
/// config.
async fn harness_with(adjust: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        secret_key: Some(Secret("22".repeat(32))),
        ..Config::default()
    };
    config.iperf.enabled = false;
    adjust(&mut config);
    let orchestrator = Orchestrator::open(config, Arc::new(SystemClock))
        .await
        .unwrap()
        .with_bcrypt_cost(4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = vetting_http::AppState::new(orchestrator.clone());
    tokio::spawn(vetting_http::serve(listener, state, std::future::pending()));
    Harness {
        url,
        orchestrator,
        _dir: dir,
        client: reqwest::Client::new(),
    }
}

/// A run in Booting, and its token.
async fn booting_run(harness: &Harness, index: u32) -> (String, String) {
    let actor = Actor::operator("test");
    let host = harness
        .orchestrator
        .operator()
        .register_host(
            NewHost {
                name: format!("h{index}"),
                macs: vec![format!("52:54:00:aa:00:{index:02x}")],
                ..Default::default()
            },
            &actor,
        )
        .await
        .unwrap();
    let run = harness
        .orchestrator
        .operator()
        .start_run(host.id, &actor)
        .await
        .unwrap();
    harness.orchestrator.runs().dispatch().await.unwrap();
    harness
        .orchestrator
        .runs()
        .apply(&run.id, Event::PowerOnSent, EventContext::default())
        .await
        .unwrap();
    let token = harness
        .orchestrator
        .agent()
        .token_for(&run.id)
        .await
        .unwrap();
    (run.id, token)
}

impl Harness {
    async fn post(
        &self,
        run: &str,
        endpoint: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        self.post_raw(run, endpoint, token, body.to_string().into_bytes())
            .await
    }

    async fn post_raw(
        &self,
        run: &str,
        endpoint: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}/api/v1/runs/{run}/{endpoint}", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Every row of every table, and every file under the data folder
    /// (but the database's own files) with its SHA-256.
    async fn fingerprint(&self) -> String {
        let mut out =
            vetting_testkit::sqlite_rows(self.orchestrator.store().db(), |_, _| false).await;
        let mut files = Vec::new();
        walk(&self.orchestrator.config().data_dir, &mut files);
        files.sort();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("vetting.db") {
                continue;
            }
            let kind = std::fs::symlink_metadata(&file).unwrap().file_type();
            let what = if kind.is_file() {
                hex::encode(Sha256::digest(std::fs::read(&file).unwrap()))
            } else if kind.is_symlink() {
                format!("link to {}", std::fs::read_link(&file).unwrap().display())
            } else {
                format!("{kind:?}") // a FIFO is listed, never opened
            };
            out.push_str(&format!("{} {what}\n", file.display()));
        }
        out
    }

    /// A fingerprint of everything stored about runs.
    async fn snapshot(&self) -> String {
        let runs = self.orchestrator.operator().list_runs(None).await.unwrap();
        let transitions = self
            .orchestrator
            .operator()
            .transitions(None)
            .await
            .unwrap();
        let mut stages = Vec::new();
        for run in &runs {
            stages.push(self.orchestrator.operator().stages(&run.id).await.unwrap());
        }
        format!("{runs:?}{transitions:?}{stages:?}")
    }
}

fn hello() -> Value {
    json!({"protocol_version": 1, "agent_version": "test"})
}

#[tokio::test]
async fn hostile_requests_get_4xx_and_change_nothing() {
    let harness = harness().await;
    let (run_a, token_a) = booting_run(&harness, 1).await;
    let (run_b, token_b) = booting_run(&harness, 2).await;
    let before = harness.snapshot().await;

    // no token
    let (status, body) = harness.post(&run_a, "hello", None, hello()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    // another run's token
    let (status, _) = harness.post(&run_a, "hello", Some(&token_b), hello()).await;
    assert_eq!(status, 401);
    // a forged token
    let (status, _) = harness
        .post(
            &run_a,
            "claim",
            Some("vt1.x.AAAA"),
            json!({"protocol_version": 1, "agent_version": "t"}),
        )
        .await;
    assert_eq!(status, 401);
    // an unknown run
    let (status, _) = harness
        .post("no-such-run", "hello", Some(&token_a), hello())
        .await;
    assert_eq!(status, 401);
    // malformed JSON, and JSON of the wrong shape
    let (status, body) = harness
        .post_raw(&run_a, "hello", Some(&token_a), b"{not json".to_vec())
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );
    let (status, body) = harness
        .post(
            &run_a,
            "hello",
            Some(&token_a),
            json!({"protocol_version": "one"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("protocol_version"),
        "{body}"
    );
    // an oversized body
    let big = vec![b' '; vetting_http::agent::SMALL_LIMIT + 1];
    let (status, _) = harness
        .post_raw(&run_a, "heartbeat", Some(&token_a), big)
        .await;
    assert_eq!(status, 413);
    // a result out of order (the run is Booting)
    let result = json!({
        "stage": "Storage", "attempt": 1, "outcome": "passed",
        "verdict": {"status": "pass", "reasons": []}
    });
    let (status, body) = harness.post(&run_a, "result", Some(&token_a), result).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["position"]["state"], "Booting", "{body}");
    // a bad artifact name
    let response = harness
        .client
        .post(format!(
            "{}/api/v1/runs/{run_a}/artifact?name=../../etc/passwd",
            harness.url
        ))
        .bearer_auth(&token_a)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);

    assert_eq!(
        harness.snapshot().await,
        before,
        "a refused request changed the database"
    );
    let _ = run_b;
}

#[tokio::test]
async fn batches_are_stored_exactly_once_and_results_repeat() {
    let harness = harness().await;
    let (run, token) = booting_run(&harness, 3).await;
    let (status, _) = harness.post(&run, "hello", Some(&token), hello()).await;
    assert_eq!(status, 200);
    let (status, claim) = harness
        .post(
            &run,
            "claim",
            Some(&token),
            json!({"protocol_version": 1, "agent_version": "t"}),
        )
        .await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["position"]["state"], "InventoryCheck");
    assert_eq!(claim["next_log_seq"], 0);

    let line = |seq: u64| json!({"seq": seq, "at_ms": 1, "stage": {"stage": "InventoryCheck", "attempt": 1}, "stream": "agent", "text": format!("line {seq}")});
    let batch = json!({"lines": [line(0), line(1), line(2)]});
    let (_, ack) = harness.post(&run, "log", Some(&token), batch.clone()).await;
    assert_eq!(ack, json!({"next_seq": 3, "stored": 3}));
    // the same batch again (a retry after a lost answer), then an overlap
    let (_, ack) = harness.post(&run, "log", Some(&token), batch).await;
    assert_eq!(ack, json!({"next_seq": 3, "stored": 0}));
    let (_, ack) = harness
        .post(
            &run,
            "log",
            Some(&token),
            json!({"lines": [line(2), line(3)]}),
        )
        .await;
    assert_eq!(ack, json!({"next_seq": 4, "stored": 1}));
    // a gap is not stored: the agent resends from next_seq
    let (_, ack) = harness
        .post(&run, "log", Some(&token), json!({"lines": [line(6)]}))
        .await;
    assert_eq!(ack, json!({"next_seq": 4, "stored": 0}));
    let data_dir = harness.orchestrator.config().data_dir.clone();
    let stored = vetting_core::runlogs::read_run(&data_dir, &run).unwrap();
    let seqs: Vec<u64> = stored.iter().map(|line| line.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3]);

    let sample = |seq: u64| json!({"seq": seq, "at_ms": 1, "stage": null, "name": "coretemp/Package id 0", "value": 40.0 + seq as f64, "unit": "C"});
    let (_, ack) = harness
        .post(
            &run,
            "sensor",
            Some(&token),
            json!({"samples": [sample(0), sample(1)]}),
        )
        .await;
    assert_eq!(ack, json!({"next_seq": 2, "stored": 2}));
    let (_, ack) = harness
        .post(
            &run,
            "sensor",
            Some(&token),
            json!({"samples": [sample(0), sample(1), sample(2)]}),
        )
        .await;
    assert_eq!(ack, json!({"next_seq": 3, "stored": 1}));

    // the inventory result moves the run through SpecValidate to SMART
    let inventory = serde_json::to_value(vetting_probes::inventory::Inventory::empty(
        chrono::Utc::now(),
    ))
    .unwrap();
    let result = json!({
        "stage": "InventoryCheck", "attempt": 1, "outcome": "passed",
        "verdict": {"status": "pass", "reasons": []},
        "inventory": inventory
    });
    let (status, first) = harness
        .post(&run, "result", Some(&token), result.clone())
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["position"]["state"], "SMART");
    let (status, again) = harness.post(&run, "result", Some(&token), result).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "a repeated result must get the same answer");
    let state = harness
        .orchestrator
        .operator()
        .get_run(&run)
        .await
        .unwrap()
        .state;
    assert_eq!(state, RunState::Smart);
}

/// A heartbeat of an agent built before `status` left the protocol is
/// answered (the text is dropped); any other unknown field is refused.
#[tokio::test]
async fn a_heartbeat_that_still_sends_status_is_answered() {
    let harness = harness().await;
    let (run, token) = booting_run(&harness, 4).await;
    let (status, answer) = harness
        .post(
            &run,
            "heartbeat",
            Some(&token),
            json!({"current": null, "status": "running SMART"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cmd"], "continue", "{answer}");
    let (status, answer) = harness
        .post(&run, "heartbeat", Some(&token), json!({"curent": null}))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("curent"),
        "{answer}"
    );
}

/// The address `host:port` of the harness's server.
impl Harness {
    fn address(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }
}

/// Reads from `stream` until a whole response head or the end of the
/// stream, for at most `limit`: the head read (maybe partial), or `None`
/// when nothing came in time.
async fn read_head(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => {
                    head.extend_from_slice(&buffer[..count]);
                    if head.windows(4).any(|window| window == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&head).into_owned())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}
