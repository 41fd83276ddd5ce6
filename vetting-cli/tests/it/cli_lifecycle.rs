//! The whole lifecycle scripted through the `vetting` binary only (and a
//! real `vetting-agent` process): add a profile, import hosts from CSV,
//! start a run, `runs watch` exits 0 when it completes, `runs report
//! --format json` returns the report. Once on the local database (the
//! commands before `vetting serve` starts run in-process, the ones after
//! go through the server it discovers) and once with `--server` and a
//! token made with `tokens create`; on SQLite and on PostgreSQL.

use serde_json::Value;

use crate::cli_support::{Outcome, Target, spawn_vetting, vetting, wait_for_discovery};
use crate::whole_run::{KillOnDrop, LoopDevice, MIB, SERIAL, env_with, wait_exit, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_on_the_local_database() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    lifecycle("", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_with_server_and_token() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    lifecycle("", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_on_the_local_database_on_postgresql() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    let Some(database) = crate::support::postgres_db().await else {
        return;
    };
    lifecycle(&format!("database_url: \"{}\"\n", database.url), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_with_server_and_token_on_postgresql() {
    if !vetting_testkit::prerequisite(vetting_testkit::loop_devices()) {
        return;
    }
    let Some(database) = crate::support::postgres_db().await else {
        return;
    };
    lifecycle(&format!("database_url: \"{}\"\n", database.url), true).await;
}

fn json_of(outcome: &Outcome) -> Value {
    serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}):\n{}", outcome.stdout))
}

/// The run's state as `runs show --json` says it.
fn state_of(dir: &std::path::Path, config: &std::path::Path, target: &Target, run: &str) -> String {
    let shown =
        vetting(dir, config, target, &["--json", "runs", "show", run]).expect_code(0, "runs show");
    json_of(&shown)["run"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn lifecycle(extra_config: &str, remote: bool) {
    let _serial = SERIAL.lock().await;
    let mut env = env_with(1, extra_config).await;
    let dir = env.dir.path().to_path_buf();
    let config = env.server.config_file.clone();
    let data = dir.join("data");
    let disk = LoopDevice::new(&dir.join("lifecycle.img"), 33 * MIB, |_| {});
    std::fs::write(
        dir.join("model-a.yaml"),
        format!(
            "# the test machine\nschema_version: 1\ndisks:\n  devices:\n    - size_bytes: {}\n      count: 1\n",
            33 * MIB
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("hosts.csv"),
        "name,macs,serial,profile,power\n\
         rack1-u01,02:00:00:00:11:01,,model-a,\n\
         rack1-u02,02:00:00:00:11:02;02:00:00:00:12:02,SN-2,model-a,\n",
    )
    .unwrap();

    let target = if remote {
        // an admin token, made through the server the CLI discovers
        let pid = env.server.child.as_ref().unwrap().id();
        wait_for_discovery(&data, pid);
        let created = vetting(
            &dir,
            &config,
            &Target::Local,
            &["tokens", "create", "automation", "--role", "admin"],
        )
        .expect_code(0, "tokens create");
        let token = created.stdout.trim().to_string();
        assert!(token.starts_with("vtk1."), "{created:?}");
        Target::Server {
            url: env.server.url(),
            token: Some(token),
        }
    } else {
        // no server: the first commands open the database themselves
        env.server.kill();
        Target::Local
    };

    vetting(
        &dir,
        &config,
        &target,
        &["profiles", "add", "model-a", "model-a.yaml"],
    )
    .expect_code(0, "profiles add");
    let imported = vetting(&dir, &config, &target, &["hosts", "import", "hosts.csv"])
        .expect_code(0, "hosts import");
    assert!(
        imported.stdout.contains("rack1-u01") && imported.stdout.contains("rack1-u02"),
        "{imported:?}"
    );
    let listed =
        vetting(&dir, &config, &target, &["--json", "hosts", "list"]).expect_code(0, "hosts list");
    let hosts = json_of(&listed);
    let names: Vec<&str> = hosts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|host| host["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rack1-u01", "rack1-u02"], "{listed:?}");
    assert_eq!(
        hosts["items"][1]["macs"],
        serde_json::json!(["02:00:00:00:11:02", "02:00:00:00:12:02"])
    );

    let started = vetting(&dir, &config, &target, &["runs", "start", "rack1-u01"])
        .expect_code(0, "runs start");
    let run_id = started.stdout.trim().to_string();
    assert_eq!(run_id.lines().count(), 1, "{started:?}");

    let target = if remote {
        target
    } else {
        // the server starts now: the commands after go through it
        env.server.start();
        let pid = env.server.child.as_ref().unwrap().id();
        wait_for_discovery(&data, pid);
        Target::Local
    };
    assert!(
        wait_until(60, || state_of(&dir, &config, &target, &run_id)
            == "Booting"),
        "run {run_id} never reached Booting"
    );
    // the agent a PXE boot would start, with the token its boot script has
    let _agent = KillOnDrop(env.agent(&run_id, &[&disk.device]).await);

    let watch_out = dir.join("watch.out");
    let mut watch = spawn_vetting(
        &dir,
        &config,
        &target,
        &["runs", "watch", &run_id],
        &watch_out,
    );
    let follow_out = dir.join("follow.out");
    let mut follow = spawn_vetting(
        &dir,
        &config,
        &target,
        &["runs", "logs", &run_id, "--follow"],
        &follow_out,
    );
    if remote {
        // the server restarts mid-run: the watch waits it out and carries
        // on (its events stream resumed after the last event it had)
        assert!(
            wait_until(120, || std::fs::read_to_string(&watch_out)
                .unwrap_or_default()
                .contains("Booting -> InventoryCheck")),
            "the watch showed no claim"
        );
        env.server.kill();
        env.server.start();
    }
    let status = wait_exit(&mut watch, 300);
    let printed = std::fs::read_to_string(&watch_out).unwrap();
    let errors = std::fs::read_to_string(watch_out.with_extension("stderr")).unwrap();
    assert_eq!(
        status.and_then(|status| status.code()),
        Some(0),
        "runs watch did not exit 0 (stages: {:#?})\nstdout:\n{printed}\nstderr:\n{errors}",
        env.stage_outcomes(&run_id).await
    );
    // one line per transition: every one the run went through
    for step in [
        "Booting -> InventoryCheck",
        "InventoryCheck -> SpecValidate",
        "Storage -> Network",
        "Reporting -> Completed",
    ] {
        assert!(
            printed.lines().any(|line| line.contains(&run_id)
                && line.contains("rack1-u01")
                && line.ends_with(step)),
            "no `{step}` line:\n{printed}"
        );
    }
    assert!(
        printed.contains(&format!("run {run_id} (rack1-u01): Completed")),
        "{printed}"
    );
    // `runs logs --follow` followed the run to its end
    let followed = wait_exit(&mut follow, 60).and_then(|status| status.code());
    let log = std::fs::read_to_string(&follow_out).unwrap();
    assert_eq!(followed, Some(0), "runs logs --follow:\n{log}");
    for stage in ["InventoryCheck", "Storage", "Network"] {
        assert!(
            log.contains(&format!("stage {stage} attempt 1 starting")),
            "runs logs --follow misses {stage}:\n{log}"
        );
    }
    // and each transition once
    let transitions: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains(" -> "))
        .collect();
    let unique: std::collections::BTreeSet<&str> = transitions.iter().copied().collect();
    assert_eq!(unique.len(), transitions.len(), "{printed}");

    let report = vetting(
        &dir,
        &config,
        &target,
        &["runs", "report", &run_id, "--format", "json"],
    )
    .expect_code(0, "runs report");
    let report = json_of(&report);
    assert!(report.to_string().contains(&run_id), "{report:#}");
    // the design's verb, to a file
    let html = dir.join("report.html");
    vetting(
        &dir,
        &config,
        &target,
        &[
            "report",
            &run_id,
            "--format",
            "html",
            "--output",
            html.to_str().unwrap(),
        ],
    )
    .expect_code(0, "report --output");
    assert!(std::fs::read_to_string(&html).unwrap().contains(&run_id));

    let runs = vetting(
        &dir,
        &config,
        &target,
        &["--json", "runs", "list", "--host", "rack1-u01"],
    )
    .expect_code(0, "runs list");
    let runs = json_of(&runs);
    assert_eq!(runs["items"][0]["id"], run_id.as_str(), "{runs:#}");
    assert_eq!(runs["items"][0]["state"], "Completed", "{runs:#}");
    assert_eq!(runs["items"][0]["host_name"], "rack1-u01", "{runs:#}");

    if !remote {
        // in-process again (no server): the same history, the same verdict
        env.server.kill();
        let again = vetting(&dir, &config, &Target::Local, &["runs", "watch", &run_id])
            .expect_code(0, "runs watch in-process");
        let lines = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|line| line.contains(" -> "))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(lines(&again.stdout), lines(&printed), "{again:?}");
        let logs = vetting(
            &dir,
            &config,
            &Target::Local,
            &["runs", "logs", &run_id, "--stage", "Storage"],
        )
        .expect_code(0, "runs logs");
        assert!(
            logs.stdout.contains("stage Storage attempt 1 starting"),
            "{logs:?}"
        );
    }
    drop(disk);
}
