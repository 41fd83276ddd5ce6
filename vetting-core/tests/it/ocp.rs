//! The OCP Test & Validation export (`reports::ocp`): runs walked through
//! the orchestrator on SQLite and PostgreSQL (a completed run with an
//! inventory, sensor series, summary measurements and an artifact; a run
//! failed and held, then released; a cancelled run), every line validated
//! against the OCP TV JSON Schema read in place from
//! `../shared/ocp-tv-schema`; a line with a required field taken out is
//! refused by the same validator.

use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde_json::Value;
use vetting_core::clock::ManualClock;
use vetting_core::machine::{Event, RunState};
use vetting_core::model::NewHost;
use vetting_core::orchestrator::Orchestrator;
use vetting_core::reports::ocp::ocp_report;
use vetting_core::runs::EventContext;
use vetting_core::store::entities::{artifact, measurement};

use crate::spec_reports::{agent, dl380_inventory, register, store_inventory};
use crate::support::{T0, config_for, open, operator, test_dbs};

const SCHEMA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/ocp-tv-schema");

/// A validator of one output line (`root.json`), every schema file of the
/// folder registered under its `$id` so that their `$ref`s resolve offline.
fn line_validator() -> jsonschema::Validator {
    let mut resources = Vec::new();
    let mut root = None;
    for entry in std::fs::read_dir(SCHEMA_DIR).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let id = schema["$id"].as_str().unwrap().to_string();
        if path.file_name().unwrap() == "root.json" {
            root = Some(schema.clone());
        }
        resources.push((id, schema));
    }
    assert!(
        resources.len() >= 20,
        "{SCHEMA_DIR}: {} schemas",
        resources.len()
    );
    let registry = Box::leak(Box::new(
        jsonschema::Registry::new()
            .extend(resources)
            .unwrap()
            .prepare()
            .unwrap(),
    ));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_registry(registry)
        .build(&root.unwrap())
        .unwrap()
}

/// Every line parsed and validated; the errors of a line name it.
fn validated_lines(validator: &jsonschema::Validator, export: &str) -> Vec<Value> {
    assert!(export.ends_with('\n'));
    export
        .lines()
        .enumerate()
        .map(|(index, line)| {
            let value: Value = serde_json::from_str(line).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|error| format!("{error} at {}", error.instance_path()))
                .collect();
            assert!(errors.is_empty(), "line {index}: {line}\n{errors:#?}");
            value
        })
        .collect()
}

fn run_artifacts<'a>(lines: &'a [Value], key: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter_map(|line| line["testRunArtifact"].get(key))
        .collect()
}

fn step_artifacts<'a>(lines: &'a [Value], key: &str) -> Vec<(&'a str, &'a Value)> {
    lines
        .iter()
        .filter_map(|line| {
            let step = &line["testStepArtifact"];
            Some((step["testStepId"].as_str()?, step.get(key)?))
        })
        .collect()
}

async fn wait_for_state(orchestrator: &Orchestrator, run_id: &str, state: RunState) {
    for _ in 0..400 {
        if orchestrator.operator().get_run(run_id).await.unwrap().state == state {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("run {run_id} did not reach {state:?}");
}

/// A run of the DL380 host through InventoryCheck and SpecValidate, left
/// in SMART.
async fn run_to_smart(orchestrator: &Orchestrator, name: &str, index: u32) -> String {
    let host_id = register(orchestrator, name, index, NewHost::default()).await;
    let run_id = orchestrator
        .operator()
        .start_run(host_id, &operator())
        .await
        .unwrap()
        .id;
    assert_eq!(
        orchestrator.runs().dispatch().await.unwrap(),
        vec![run_id.clone()]
    );
    for event in [Event::PowerOnSent, Event::Hello, Event::Claim] {
        orchestrator
            .runs()
            .apply(&run_id, event, agent(None))
            .await
            .unwrap();
    }
    store_inventory(
        orchestrator,
        &run_id,
        1,
        serde_json::to_string(&dl380_inventory()).unwrap(),
    )
    .await;
    let verdict = serde_json::json!({"status": "pass", "reasons": [
        {"status": "pass", "message": "lshw and dmidecode read"}]});
    orchestrator
        .runs()
        .apply(&run_id, Event::StagePassed, agent(Some(verdict)))
        .await
        .unwrap();
    let outcome = orchestrator.runs().validate_spec(&run_id).await.unwrap();
    let to = orchestrator
        .runs()
        .apply(
            &run_id,
            Event::SpecPassed,
            EventContext {
                reason: Some(outcome.summary.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .to;
    assert_eq!(to, RunState::Smart);
    run_id
}

fn reading(
    run_id: &str,
    stage: &str,
    seq: Option<i64>,
    name: &str,
    value: f64,
    unit: &str,
    at_ms: i64,
) -> measurement::ActiveModel {
    measurement::ActiveModel {
        run_id: Set(run_id.to_string()),
        stage: Set(Some(stage.into())),
        attempt: Set(Some(1)),
        seq: Set(seq),
        name: Set(name.to_string()),
        value: Set(value),
        unit: Set(unit.into()),
        at_ms: Set(at_ms),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_completed_run_exports_valid_ocp_lines_with_its_parts_steps_and_measurements() {
    let validator = line_validator();
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let run_id = run_to_smart(&orchestrator, "rack-1-u4", 1).await;
        // CPU temperatures sampled during CPUStress, a bogo-ops rate, fio's
        // bandwidth on sda, iperf3's throughput
        let mut rows: Vec<measurement::ActiveModel> = (0..30)
            .map(|second| {
                reading(
                    &run_id,
                    "CPUStress",
                    Some(second),
                    "coretemp/Package id 0",
                    40.0 + second as f64,
                    "°C",
                    T0 + 60_000 + second * 1000,
                )
            })
            .collect();
        rows.push(reading(
            &run_id,
            "CPUStress",
            None,
            "stress.cpu.bogo_ops_per_sec",
            1234.5,
            "ops/s",
            T0 + 100_000,
        ));
        rows.push(reading(
            &run_id,
            "Storage",
            None,
            "storage.sda.write_bytes_per_sec",
            5.1e8,
            "B/s",
            T0 + 200_000,
        ));
        rows.push(reading(
            &run_id,
            "Network",
            None,
            "network.rx_bps",
            9.4e9,
            "bit/s",
            T0 + 300_000,
        ));
        measurement::Entity::insert_many(rows)
            .exec(orchestrator.store().db())
            .await
            .unwrap();
        artifact::ActiveModel {
            run_id: Set(run_id.clone()),
            stage: Set(Some("InventoryCheck".into())),
            attempt: Set(Some(1)),
            name: Set("dmidecode.txt".into()),
            tool: Set(Some("dmidecode".into())),
            path: Set("/var/lib/vetting/artifacts/run 1/dmidecode.txt".into()),
            size_bytes: Set(12_345),
            sha256: Set("ab".repeat(32)),
            created_at_ms: Set(T0),
            ..Default::default()
        }
        .insert(orchestrator.store().db())
        .await
        .unwrap();
        let mut state = RunState::Smart;
        while state != RunState::Reporting {
            clock.advance_secs(30);
            let event = if state == RunState::Gpu || state == RunState::Psu {
                Event::StageSkipped
            } else {
                Event::StagePassed
            };
            state = orchestrator
                .runs()
                .apply(&run_id, event, agent(None))
                .await
                .unwrap()
                .to;
        }
        wait_for_state(&orchestrator, &run_id, RunState::Completed).await;

        let export = ocp_report(&orchestrator, &run_id).await.unwrap();
        let lines = validated_lines(&validator, &export);
        let numbers: Vec<u64> = lines
            .iter()
            .map(|line| line["sequenceNumber"].as_u64().unwrap())
            .collect();
        assert_eq!(
            numbers,
            (0..lines.len() as u64).collect::<Vec<_>>(),
            "{}",
            db.name
        );
        assert_eq!(
            lines[0]["schemaVersion"],
            serde_json::json!({"major": 2, "minor": 0})
        );

        // the DUT: the DL380's system, 2 CPUs, 10 DIMMs, 2 disks, 2 NICs, 2 PSUs
        let start = run_artifacts(&lines, "testRunStart");
        assert_eq!(start.len(), 1);
        let start = start[0];
        assert_eq!(start["name"], "vetting");
        assert_eq!(start["parameters"]["run_id"], run_id.as_str());
        assert_eq!(start["dutInfo"]["name"], "rack-1-u4");
        let platforms = start["dutInfo"]["platformInfos"].to_string();
        assert!(platforms.contains("ProLiant DL380p Gen8"), "{platforms}");
        let hardware = start["dutInfo"]["hardwareInfos"].as_array().unwrap();
        let count = |part: &str| hardware.iter().filter(|h| h["partType"] == part).count();
        assert_eq!(
            [
                count("CPU"),
                count("DIMM"),
                count("DISK"),
                count("NIC"),
                count("PSU")
            ],
            [2, 10, 2, 2, 2],
            "{}",
            db.name
        );
        assert!(
            hardware
                .iter()
                .any(|h| h["hardwareInfoId"] == "disk:serial:S455NY0M123456"
                    && h["serialNumber"] == "S455NY0M123456")
        );

        // a step per stage attempt, in run order, each ended
        let starts: Vec<&str> = step_artifacts(&lines, "testStepStart")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            starts,
            [
                "InventoryCheck-1",
                "SpecValidate-1",
                "SMART-1",
                "CPUStress-1",
                "Storage-1",
                "Network-1",
                "GPU-1",
                "PSU-1"
            ]
        );
        let ends: Vec<(&str, &str)> = step_artifacts(&lines, "testStepEnd")
            .into_iter()
            .map(|(id, end)| (id, end["status"].as_str().unwrap()))
            .collect();
        assert_eq!(ends.len(), 8);
        assert!(ends.contains(&("GPU-1", "SKIP")) && ends.contains(&("SMART-1", "COMPLETE")));
        let diagnoses = step_artifacts(&lines, "diagnosis");
        assert!(
            diagnoses
                .iter()
                .any(|(id, d)| *id == "InventoryCheck-1" && d["type"] == "PASS")
        );
        assert!(
            diagnoses
                .iter()
                .any(|(id, d)| *id == "GPU-1" && d["type"] == "UNKNOWN")
        );
        assert!(
            step_artifacts(&lines, "log")
                .iter()
                .any(|(id, log)| *id == "InventoryCheck-1"
                    && log["message"] == "lshw and dmidecode read")
        );

        // the temperatures are a series judged by the stress threshold
        let series = step_artifacts(&lines, "measurementSeriesStart");
        let (step, temperature) = series
            .iter()
            .find(|(_, s)| s["name"] == "coretemp/Package id 0")
            .unwrap();
        assert_eq!(*step, "CPUStress-1");
        assert_eq!(
            temperature["validators"],
            serde_json::json!([{"name": "thresholds.stress.max_cpu_temp_c", "type": "LESS_THAN", "value": 95.0}])
        );
        let elements = step_artifacts(&lines, "measurementSeriesElement");
        assert_eq!(elements.len(), 30);
        assert_eq!(elements[29].1["value"], 69.0);
        assert_eq!(
            step_artifacts(&lines, "measurementSeriesEnd")[0].1["totalCount"],
            30
        );
        // values measured once are measurements, in their stage, tied to the part
        let measurements = step_artifacts(&lines, "measurement");
        let find = |name: &str| {
            *measurements
                .iter()
                .find(|(_, m)| m["name"] == name)
                .unwrap()
        };
        assert_eq!(find("stress.cpu.bogo_ops_per_sec").0, "CPUStress-1");
        let (step, fio) = find("storage.sda.write_bytes_per_sec");
        assert_eq!(step, "Storage-1");
        assert_eq!(fio["hardwareInfoId"], "disk:serial:S455NY0M123456");
        assert_eq!(find("network.rx_bps").1["value"], 9.4e9);

        // the artifact as a file, the path percent-encoded
        let files = step_artifacts(&lines, "file");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "InventoryCheck-1");
        assert_eq!(
            files[0].1["uri"],
            "file:///var/lib/vetting/artifacts/run%201/dmidecode.txt"
        );
        assert_eq!(files[0].1["metadata"]["sha256"], "ab".repeat(32));

        let end = run_artifacts(&lines, "testRunEnd");
        assert_eq!(
            end,
            [&serde_json::json!({"status": "COMPLETE", "result": "PASS"})]
        );
        assert!(
            lines.last().unwrap()["testRunArtifact"]
                .get("testRunEnd")
                .is_some()
        );

        // the validator refuses what the schema requires and is missing
        let mut broken: Vec<Value> = lines.clone();
        let index = broken
            .iter()
            .position(|line| line["testRunArtifact"].get("testRunStart").is_some())
            .unwrap();
        broken[index]["testRunArtifact"]["testRunStart"]
            .as_object_mut()
            .unwrap()
            .remove("dutInfo");
        assert!(
            !validator.is_valid(&broken[index]),
            "a testRunStart without dutInfo"
        );
        let mut no_sequence = lines[0].clone();
        no_sequence
            .as_object_mut()
            .unwrap()
            .remove("sequenceNumber");
        assert!(
            !validator.is_valid(&no_sequence),
            "a line without sequenceNumber"
        );
        let mut bad_status = lines.last().unwrap().clone();
        bad_status["testRunArtifact"]["testRunEnd"]["status"] = "DONE".into();
        assert!(
            !validator.is_valid(&bad_status),
            "a status outside the enum"
        );
        let mut bad_time = lines[0].clone();
        bad_time["timestamp"] = "yesterday".into();
        assert!(
            !validator.is_valid(&bad_time),
            "a timestamp that is no date-time"
        );
    }
}

#[tokio::test]
async fn failed_held_released_and_cancelled_runs_map_to_fail_and_skip() {
    let validator = line_validator();
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let run_id = run_to_smart(&orchestrator, "rack-2-u7", 2).await;
        let verdict = serde_json::json!({"status": "fail", "reasons": [
            {"status": "fail", "message": "sda: 12 pending sectors"},
            {"status": "warn", "message": "sdb: 3 CRC errors"}]});
        orchestrator
            .runs()
            .apply(
                &run_id,
                Event::StageFailed,
                EventContext {
                    reason: Some("SMART: sda has 12 pending sectors".into()),
                    ..agent(Some(verdict))
                },
            )
            .await
            .unwrap();
        // hold_on_failure: Failed and, in the same transaction, FailedHolding
        wait_for_state(&orchestrator, &run_id, RunState::FailedHolding).await;

        // held: the failure is in, the run has not ended
        let held = validated_lines(
            &validator,
            &ocp_report(&orchestrator, &run_id).await.unwrap(),
        );
        assert!(run_artifacts(&held, "testRunEnd").is_empty(), "{}", db.name);
        let errors = step_artifacts(&held, "error");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "SMART-1");
        assert_eq!(errors[0].1["symptom"], "stage-failed");
        assert_eq!(errors[0].1["message"], "SMART: sda has 12 pending sectors");
        let diagnosis = step_artifacts(&held, "diagnosis")
            .into_iter()
            .find(|(id, _)| *id == "SMART-1")
            .unwrap()
            .1;
        assert_eq!(diagnosis["type"], "FAIL");
        assert_eq!(diagnosis["verdict"], "smart-failed");
        let logs = step_artifacts(&held, "log");
        assert!(logs.iter().any(|(id, log)| *id == "SMART-1"
            && log["severity"] == "ERROR"
            && log["message"] == "sda: 12 pending sectors"));
        assert!(
            logs.iter()
                .any(|(_, log)| log["severity"] == "WARNING"
                    && log["message"] == "sdb: 3 CRC errors")
        );
        assert!(
            run_artifacts(&held, "log")
                .iter()
                .any(|log| log["message"].as_str().unwrap().contains("held (failure)"))
        );

        orchestrator
            .operator()
            .release(&run_id, &operator(), None)
            .await
            .unwrap();
        wait_for_state(&orchestrator, &run_id, RunState::Released).await;
        let released = validated_lines(
            &validator,
            &ocp_report(&orchestrator, &run_id).await.unwrap(),
        );
        assert_eq!(
            run_artifacts(&released, "testRunEnd"),
            [&serde_json::json!({"status": "COMPLETE", "result": "FAIL"})],
            "{}",
            db.name
        );

        // cancelled before anything ran: skipped, no verdict
        let host_id = register(&orchestrator, "rack-3-u1", 3, NewHost::default()).await;
        let cancelled = orchestrator
            .operator()
            .start_run(host_id, &operator())
            .await
            .unwrap()
            .id;
        orchestrator
            .operator()
            .cancel(&cancelled, &operator(), None)
            .await
            .unwrap();
        let lines = validated_lines(
            &validator,
            &ocp_report(&orchestrator, &cancelled).await.unwrap(),
        );
        assert_eq!(
            run_artifacts(&lines, "testRunEnd"),
            [&serde_json::json!({"status": "SKIP", "result": "NOT_APPLICABLE"})]
        );
        // no inventory: the DUT is the registered host
        let start = run_artifacts(&lines, "testRunStart")[0];
        assert_eq!(start["dutInfo"]["hardwareInfos"], serde_json::json!([]));
        assert!(
            start["dutInfo"]["dutInfoId"]
                .as_str()
                .unwrap()
                .starts_with("host-")
        );

        assert!(ocp_report(&orchestrator, "no-such-run").await.is_err());
    }
}
