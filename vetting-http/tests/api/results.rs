//! A stage result and its evidence, attacked by an agent holding a valid
//! token: references resolve only through the run's artifact rows, every
//! upload of the stage attempt is re-judged and unreadable output fails,
//! holds come only from Storage, a refused result leaves no trace, old
//! evidence cannot be rewritten, one agent cannot stall the others, and
//! large measurement sets are stored.

use std::path::PathBuf;
use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use vetting_core::machine::RunState;

use crate::{Harness, booting_run, harness_with, hello};

fn fixture(relative: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(relative);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn pass_verdict() -> Value {
    json!({"status": "pass", "reasons": []})
}

fn inventory() -> Value {
    serde_json::to_value(vetting_probes::inventory::Inventory::empty(
        chrono::Utc::now(),
    ))
    .unwrap()
}

impl Harness {
    /// A run whose agent said hello and claimed: in InventoryCheck.
    async fn claimed_run(&self, index: u32) -> (String, String) {
        let (run, token) = booting_run(self, index).await;
        let (status, body) = self.post(&run, "hello", Some(&token), hello()).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = self
            .post(
                &run,
                "claim",
                Some(&token),
                json!({"protocol_version": 1, "agent_version": "t"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        (run, token)
    }

    /// A run in SMART (its inventory taken).
    async fn smart_run(&self, index: u32) -> (String, String) {
        let (run, token) = self.claimed_run(index).await;
        let (status, body) = self
            .post(&run, "result", Some(&token), inventory_result())
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["position"]["state"], "SMART", "{body}");
        (run, token)
    }

    async fn upload(
        &self,
        run: &str,
        token: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/api/v1/runs/{run}/artifact?{query}", self.url))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// An upload that must be taken.
    async fn upload_ok(&self, run: &str, token: &str, query: &str, body: impl Into<reqwest::Body>) {
        let (status, answer) = self.upload(run, token, query, body).await;
        assert_eq!(status, 200, "{query}: {answer}");
    }

    fn data_dir(&self) -> PathBuf {
        self.orchestrator.config().data_dir.clone()
    }
}

/// A passing InventoryCheck result carrying an (empty) inventory.
fn inventory_result() -> Value {
    json!({
        "stage": "InventoryCheck", "attempt": 1, "outcome": "passed",
        "verdict": pass_verdict(), "inventory": inventory()
    })
}

fn smart_result(artifacts: Value) -> Value {
    json!({
        "stage": "SMART", "attempt": 1, "outcome": "passed",
        "verdict": pass_verdict(), "artifacts": artifacts
    })
}

#[tokio::test]
async fn result_references_open_nothing_outside_the_runs_artifacts() {
    let harness = harness_with(|_| {}).await;
    let (run, token) = harness.smart_run(1).await;
    let key_path = harness.data_dir().join("secret.key");
    let key = std::fs::read_to_string(&key_path).unwrap_or_else(|_| "22".repeat(32));
    // a key file to steal, whether or not config holds the key
    std::fs::write(&key_path, &key).unwrap();
    let stage_dir = harness
        .data_dir()
        .join(format!("runs/{run}/artifacts/SMART-1"));
    std::fs::create_dir_all(&stage_dir).unwrap();
    // files planted beside the real artifacts, never uploaded
    std::os::unix::fs::symlink(&key_path, stage_dir.join("link.txt")).unwrap();
    nix::unistd::mkfifo(&stage_dir.join("fifo.txt"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let before = harness.fingerprint().await;

    let absolute = key_path.display().to_string();
    for name in [
        absolute.as_str(),
        "../../../secret.key",
        "../../../../secret.key",
        "link.txt",
        "fifo.txt",
        "/dev/zero",
        "never-uploaded.txt",
    ] {
        let attempt = tokio::time::timeout(
            Duration::from_secs(20),
            harness.post(
                &run,
                "result",
                Some(&token),
                smart_result(json!([{"name": name, "tool": "lspci"}])),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("the result naming `{name}` hung"));
        let (status, body) = attempt;
        assert_eq!(status, 422, "{name}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("was not uploaded"), "{name}: {error}");
        assert!(!error.contains(key.trim()), "{name}: the key leaked");
    }
    assert_eq!(
        harness.fingerprint().await,
        before,
        "a refused result changed something"
    );
    let run_row = harness.orchestrator.operator().get_run(&run).await.unwrap();
    assert_eq!(run_row.state, RunState::Smart);
}

#[tokio::test]
async fn a_link_put_in_place_of_an_upload_is_not_followed() {
    let harness = harness_with(|_| {}).await;
    let (run, token) = harness.smart_run(2).await;
    harness
        .upload_ok(
            &run,
            &token,
            "name=lspci.txt&tool=lspci&stage=SMART&attempt=1",
            fixture("lspci/jc-ubuntu-20.10-lspci-nnmmv.out"),
        )
        .await;
    // someone replaces the stored file by a link to the key
    let key_path = harness.data_dir().join("secret.key");
    std::fs::write(&key_path, "00112233445566778899aabbccddeeff").unwrap();
    let stored = harness
        .data_dir()
        .join(format!("runs/{run}/artifacts/SMART-1/lspci.txt"));
    std::fs::remove_file(&stored).unwrap();
    std::os::unix::fs::symlink(&key_path, &stored).unwrap();
    let (status, body) = harness
        .post(
            &run,
            "result",
            Some(&token),
            smart_result(json!([{"name": "lspci.txt", "tool": "lspci"}])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"]["status"], "fail", "{body}");
    let text = body.to_string();
    assert!(text.contains("symbolic link"), "{text}");
    assert!(
        !text.contains("00112233445566778899"),
        "the key leaked: {text}"
    );
}

#[tokio::test]
async fn every_upload_of_the_stage_is_rejudged_and_unreadable_output_fails() {
    let harness = harness_with(|_| {}).await;
    // 1. an upload the result leaves out is judged all the same
    let (run, token) = harness.smart_run(3).await;
    harness
        .upload_ok(
            &run,
            &token,
            "name=smartctl-nvme0.json&tool=smartctl&stage=SMART&attempt=1",
            fixture("smartctl/scrutiny-smart-nvme-failed.json"),
        )
        .await;
    let (status, body) = harness
        .post(&run, "result", Some(&token), smart_result(json!([])))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"]["status"], "fail", "{body}");
    assert!(body.to_string().contains("media"), "{body}");
    let stages = harness.orchestrator.operator().stages(&run).await.unwrap();
    let smart = stages.iter().find(|s| s.stage == "SMART").unwrap();
    assert_eq!(smart.outcome, "failed", "{smart:?}");

    // 2. output of a verdict tool that cannot be parsed fails, named,
    // without its content
    let (run, token) = harness.smart_run(4).await;
    let garbage = b"\x00\x01 TOPSECRET-CONTENT \xff\xfe".to_vec();
    harness
        .upload_ok(
            &run,
            &token,
            "name=smartctl-sda.json&tool=smartctl&stage=SMART&attempt=1",
            garbage,
        )
        .await;
    let (status, body) = harness
        .post(
            &run,
            "result",
            Some(&token),
            smart_result(json!([{"name": "smartctl-sda.json", "tool": "smartctl"}])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"]["status"], "fail", "{body}");
    let text = body.to_string();
    assert!(
        text.contains("smartctl output `smartctl-sda.json` cannot be re-judged"),
        "{text}"
    );
    assert!(!text.contains("TOPSECRET"), "{text}");

    // 3. a reference claiming another tool than the upload's is refused
    let (run, token) = harness.smart_run(5).await;
    let (status, _) = harness
        .upload(
            &run,
            &token,
            "name=smartctl-sdb.json&tool=smartctl&stage=SMART&attempt=1",
            fixture("smartctl/scrutiny-smart-nvme-failed.json"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = harness
        .post(
            &run,
            "result",
            Some(&token),
            smart_result(json!([{"name": "smartctl-sdb.json", "tool": "lspci"}])),
        )
        .await;
    assert_eq!(status, 422, "{body}");

    // 4. at InventoryCheck an unreadable probe is listed, and the stage
    // fails only when nothing usable remains
    let (run, token) = harness.claimed_run(6).await;
    for (name, tool, body) in [
        ("lshw.json", "lshw", b"not json".to_vec()),
        (
            "lspci.txt",
            "lspci",
            fixture("lspci/jc-ubuntu-20.10-lspci-nnmmv.out"),
        ),
    ] {
        harness
            .upload_ok(
                &run,
                &token,
                &format!("name={name}&tool={tool}&stage=InventoryCheck&attempt=1"),
                body,
            )
            .await;
    }
    let (status, body) = harness
        .post(&run, "result", Some(&token), inventory_result())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"]["status"], "warn", "{body}");
    assert_eq!(body["position"]["state"], "SMART", "{body}");
    let (run, token) = harness.claimed_run(7).await;
    let (status, _) = harness
        .upload(
            &run,
            &token,
            "name=lshw.json&tool=lshw&stage=InventoryCheck&attempt=1",
            b"not json".to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = harness
        .post(&run, "result", Some(&token), inventory_result())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verdict"]["status"], "fail", "{body}");
}

#[tokio::test]
async fn a_wipe_hold_is_taken_from_storage_only() {
    let harness = harness_with(|_| {}).await;
    let (run, token) = harness.claimed_run(8).await;
    let before = harness.fingerprint().await;
    let (status, body) = harness
        .post(
            &run,
            "result",
            Some(&token),
            json!({
                "stage": "InventoryCheck", "attempt": 1, "outcome": "held",
                "hold_reason": "wipe_signatures",
                "verdict": pass_verdict(), "inventory": inventory()
            }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("only Storage"),
        "{body}"
    );
    assert_eq!(harness.fingerprint().await, before);
    assert_eq!(
        harness
            .orchestrator
            .operator()
            .get_run(&run)
            .await
            .unwrap()
            .state,
        RunState::InventoryCheck
    );
}

#[tokio::test]
async fn a_refused_result_leaves_every_table_and_file_as_it_was() {
    let harness = harness_with(|_| {}).await;
    let (run, token) = harness.claimed_run(9).await;
    let before = harness.fingerprint().await;
    // inventory and measurements, but a reference to nothing uploaded
    let (status, body) = harness
        .post(
            &run,
            "result",
            Some(&token),
            json!({
                "stage": "InventoryCheck", "attempt": 1, "outcome": "passed",
                "verdict": pass_verdict(), "inventory": inventory(),
                "measurements": [{"name": "x", "value": 1.0, "unit": "s"}],
                "artifacts": [{"name": "lshw.json", "tool": "lshw"}]
            }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    // and an inventory that does not parse
    let (status, body) = harness
        .post(
            &run,
            "result",
            Some(&token),
            json!({
                "stage": "InventoryCheck", "attempt": 1, "outcome": "passed",
                "verdict": pass_verdict(), "inventory": {"cpu": 7},
                "measurements": [{"name": "x", "value": 1.0, "unit": "s"}]
            }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(harness.fingerprint().await, before);
}

#[tokio::test]
async fn fifty_thousand_measurements_are_stored() {
    let harness = harness_with(|_| {}).await;
    let (run, token) = harness.smart_run(10).await;
    let measurements: Vec<Value> = (0..50_000)
        .map(|i| json!({"name": format!("m{i}"), "value": i as f64, "unit": "u"}))
        .collect();
    let mut result = smart_result(json!([]));
    result["measurements"] = Value::Array(measurements);
    let (status, body) = harness.post(&run, "result", Some(&token), result).await;
    assert_eq!(status, 200, "{body}");
    let db = harness.orchestrator.store().db();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT COUNT(*) FROM measurements WHERE run_id = '{run}' AND stage = 'SMART' \
                 AND seq IS NULL"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    let count: i64 = row.try_get_by_index(0).unwrap();
    assert_eq!(count, 50_000);
}

#[tokio::test]
async fn evidence_of_another_stage_cannot_be_written() {
    let harness = harness_with(|_| {}).await;
    let (run, token) = harness.claimed_run(11).await;
    harness
        .upload_ok(
            &run,
            &token,
            "name=lspci.txt&tool=lspci&stage=InventoryCheck&attempt=1",
            fixture("lspci/jc-ubuntu-20.10-lspci-nnmmv.out"),
        )
        .await;
    let (status, body) = harness
        .post(&run, "result", Some(&token), inventory_result())
        .await;
    assert_eq!(status, 200, "{body}");
    let before = harness.fingerprint().await;
    // the run is in SMART: InventoryCheck's evidence is closed
    for query in [
        "name=lspci.txt&tool=lspci&stage=InventoryCheck&attempt=1",
        "name=other.txt&stage=InventoryCheck&attempt=1",
        "name=smart.json&stage=SMART&attempt=2",
        "name=storage.json&stage=Storage&attempt=1",
    ] {
        let (status, body) = harness.upload(&run, &token, query, "rewritten").await;
        assert_eq!(status, 409, "{query}: {body}");
        assert_eq!(body["position"]["state"], "SMART", "{body}");
    }
    for query in [
        "name=smart.json&stage=SMART&attempt=4294967295",
        "name=smart.json&stage=SMART&attempt=0",
        "name=smart.json",
    ] {
        let (status, body) = harness.upload(&run, &token, query, "x").await;
        assert!(status == 400 || status == 422, "{query}: {status} {body}");
    }
    assert_eq!(harness.fingerprint().await, before);
    // a finished run takes no upload at all
    harness
        .orchestrator
        .operator()
        .cancel(&run, &vetting_core::model::Actor::operator("test"), None)
        .await
        .unwrap();
    let (status, _) = harness
        .upload(&run, &token, "name=smart.json&stage=SMART&attempt=1", "x")
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn one_agent_cannot_stall_the_other_runs() {
    let harness = harness_with(|config| {
        config.deadlines.heartbeat_silence_secs = 5;
        config.dispatcher.max_in_flight = 8;
    })
    .await;
    let (run, token) = harness.smart_run(12).await;
    let mut others = Vec::new();
    for index in 13..17 {
        others.push(harness.smart_run(index).await);
    }
    // a 32 MiB smartctl document (padded with a field the parser skips),
    // and a result naming it 300 times
    let mut document: Value =
        serde_json::from_slice(&fixture("smartctl/scrutiny-smart-nvme.json")).unwrap();
    document["padding"] = Value::String("x".repeat(32 << 20));
    let big = serde_json::to_vec(&document).unwrap();
    harness
        .upload_ok(
            &run,
            &token,
            "name=smartctl-nvme0.json&tool=smartctl&stage=SMART&attempt=1",
            big,
        )
        .await;
    // distinct names past the cap are refused outright
    let many: Vec<Value> = (0..300)
        .map(|i| json!({"name": format!("a{i}.json"), "tool": "smartctl"}))
        .collect();
    let (status, body) = harness
        .post(
            &run,
            "result",
            Some(&token),
            smart_result(Value::Array(many)),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at most"),
        "{body}"
    );

    let repeated: Vec<Value> = (0..300)
        .map(|_| json!({"name": "smartctl-nvme0.json", "tool": "smartctl"}))
        .collect();
    let poster = {
        let url = harness.url.clone();
        let client = harness.client.clone();
        let run = run.clone();
        let token = token.clone();
        tokio::spawn(async move {
            client
                .post(format!("{url}/api/v1/runs/{run}/result"))
                .bearer_auth(&token)
                .json(&smart_result(Value::Array(repeated)))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // the other agents heartbeat every second meanwhile
    let mut beats = 0;
    while !poster.is_finished() || beats < 2 {
        for (other, other_token) in &others {
            let (status, body) = tokio::time::timeout(
                Duration::from_secs(4),
                harness.post(other, "heartbeat", Some(other_token), json!({})),
            )
            .await
            .expect("a heartbeat waited behind another run's result");
            assert_eq!(status, 200, "{body}");
        }
        beats += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(poster.await.unwrap(), 200);
    harness.orchestrator.runs().fire_deadlines().await.unwrap();
    for (other, _) in &others {
        let state = harness
            .orchestrator
            .operator()
            .get_run(other)
            .await
            .unwrap()
            .state;
        assert_eq!(state, RunState::Smart, "{other} was failed");
    }
}

#[tokio::test]
async fn a_run_minted_before_the_hash_scheme_keeps_its_scheme() {
    let harness = harness_with(|_| {}).await;
    let db = harness.orchestrator.store().db();
    let backend = db.get_database_backend();
    // as migration 4 found it: bcrypt over the token itself, scheme NULL
    let (run, token) = booting_run(&harness, 20).await;
    let old_hash = bcrypt::hash(&token, 4).unwrap();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        "UPDATE runs SET token_hash = ?, token_hash_scheme = NULL WHERE id = ?",
        [old_hash.into(), run.clone().into()],
    ))
    .await
    .unwrap();
    let claim = json!({"protocol_version": 1, "agent_version": "t"});
    let (status, body) = harness.post(&run, "hello", Some(&token), hello()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = harness
        .post(&run, "claim", Some(&token), claim.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    // a scheme this build does not know is refused, never guessed
    let (other, other_token) = booting_run(&harness, 21).await;
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        "UPDATE runs SET token_hash_scheme = 'md5' WHERE id = ?",
        [other.clone().into()],
    ))
    .await
    .unwrap();
    let (status, body) = harness
        .post(&other, "hello", Some(&other_token), hello())
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = harness
        .post(&other, "claim", Some(&other_token), claim)
        .await;
    assert_eq!(status, 401, "{body}");
}
