//! A held run through the `vetting` binary: `runs watch` exits 1 with the
//! hold as its verdict, `runs show` lists the wipe probe's findings, and
//! `runs override-wipe ID --acknowledge FINDING...` re-runs Storage so a
//! second watch exits 0; the audit names the local operator.

use serde_json::Value;

use crate::cli_support::{Target, vetting, wait_for_discovery};
use crate::whole_run::{KillOnDrop, LoopDevice, MIB, SERIAL, env_with, gpt, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wipe_hold_is_watched_shown_and_overridden_through_the_cli() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let env = env_with(1, "").await;
    let dir = env.dir.path().to_path_buf();
    let config = env.server.config_file.clone();
    wait_for_discovery(&dir.join("data"), env.server.child.as_ref().unwrap().id());
    let local = Target::Local;
    let run = |args: &[&str]| vetting(&dir, &config, &local, args);
    let disk = LoopDevice::new(&dir.join("gpt.img"), 37 * MIB, |_| {});
    gpt(&disk.device);
    std::fs::write(
        dir.join("spec.yaml"),
        format!(
            "schema_version: 1\ndisks:\n  devices:\n    - size_bytes: {}\n      count: 1\n",
            37 * MIB
        ),
    )
    .unwrap();
    run(&["profiles", "add", "held", "spec.yaml"]).expect_code(0, "profiles add");
    run(&[
        "hosts",
        "add",
        "--name",
        "held-1",
        "--mac",
        "02:00:00:00:55:01",
        "--profile",
        "held",
    ])
    .expect_code(0, "hosts add");
    let run_id = run(&["runs", "start", "held-1"])
        .expect_code(0, "runs start")
        .stdout
        .trim()
        .to_string();
    assert!(wait_until(60, || run(&["runs", "show", &run_id])
        .stdout
        .contains("Booting")));
    let _agent = KillOnDrop(env.agent(&run_id, &[&disk.device]).await);

    let held = run(&["runs", "watch", &run_id]).expect_code(1, "runs watch of a held run");
    assert!(
        held.stdout
            .contains(&format!("run {run_id} (held-1): FailedHolding")),
        "{held:?}"
    );
    assert!(held.stdout.contains("Storage -> FailedHolding"), "{held:?}");
    let detail: Value = serde_json::from_str(
        &run(&["--json", "runs", "show", &run_id])
            .expect_code(0, "show")
            .stdout,
    )
    .unwrap();
    assert_eq!(
        detail["run"]["hold_reason"], "wipe_signatures",
        "{detail:#}"
    );
    let ids: Vec<String> = detail["held_findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!ids.is_empty(), "{detail:#}");
    let table = run(&["runs", "show", &run_id])
        .expect_code(0, "show")
        .stdout;
    for id in &ids {
        assert!(
            table.contains(id.as_str()),
            "runs show does not list {id}:\n{table}"
        );
    }

    let mut args = vec!["runs", "override-wipe", run_id.as_str(), "--acknowledge"];
    args.extend(ids.iter().map(String::as_str));
    let applied = run(&args).expect_code(0, "override-wipe");
    assert!(
        applied
            .stdout
            .contains("override-wipe: FailedHolding -> Storage"),
        "{applied:?}"
    );
    let done = run(&["runs", "watch", &run_id]).expect_code(0, "runs watch after the override");
    assert!(
        done.stdout
            .contains(&format!("run {run_id} (held-1): Completed")),
        "{done:?}"
    );
    let detail: Value =
        serde_json::from_str(&run(&["--json", "runs", "show", &run_id]).stdout).unwrap();
    let storage: Vec<&Value> = detail["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|stage| stage["stage"] == "Storage")
        .collect();
    assert_eq!(storage.len(), 2, "{detail:#}");
    assert_eq!(storage[0]["outcome"], "held");
    assert_eq!(storage[1]["attempt"], 2);
    let audit = env
        .orchestrator
        .operator()
        .audit_log(Some(&run_id))
        .await
        .unwrap();
    let record = audit
        .iter()
        .find(|record| record.action == "override_wipe")
        .unwrap();
    // through the discovered server: its local admin token
    assert!(record.actor.starts_with("token:local-cli."), "{audit:#?}");
    drop(disk);
}
