//! Every operator command's ordinary use, in-process on the local
//! database (no server): what it prints as a table and as JSON.

use serde_json::{Value, json};

use crate::cli_support::{Target, vetting};
use crate::whole_run::env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_print_what_they_did() {
    let mut env = env("").await;
    env.server.kill();
    let dir = env.dir.path().to_path_buf();
    let config = env.server.config_file.clone();
    let run = |args: &[&str]| {
        vetting(&dir, &config, &Target::Local, args).expect_code(0, &args.join(" "))
    };
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&run(&all).stdout).unwrap()
    };

    // profiles: stored as written, comments and all
    let spec = "# model A\nschema_version: 1\n";
    std::fs::write(dir.join("a.yaml"), spec).unwrap();
    run(&["profiles", "add", "model-a", "a.yaml"]);
    assert!(run(&["profiles", "list"]).stdout.contains("model-a"));
    assert_eq!(run(&["profiles", "show", "model-a"]).stdout, spec);
    assert_eq!(
        json(&["profiles", "check", "a.yaml"]),
        json!({"valid": true})
    );

    // hosts: power settings from the flags, pages, edits, removal
    run(&[
        "hosts",
        "add",
        "--name",
        "h-a",
        "--mac",
        "02:00:00:00:77:01",
        "--profile",
        "model-a",
        "--serial",
        "S1",
        "--power",
        "ipmi",
        "--power-opt",
        "host=10.0.0.5",
        "--power-opt",
        "port=623",
    ]);
    run(&[
        "hosts",
        "add",
        "--name",
        "h-b",
        "--mac",
        "02:00:00:00:77:02",
    ]);
    run(&[
        "hosts",
        "add",
        "--name",
        "h-c",
        "--mac",
        "02:00:00:00:77:03",
    ]);
    let shown = json(&["hosts", "show", "h-a"]);
    assert_eq!(
        shown["host"]["power"],
        json!({"driver": "ipmi", "host": "10.0.0.5", "port": 623})
    );
    assert_eq!(shown["host"]["serial"], "S1");
    // a BMC password from a file: stored only encrypted
    std::fs::write(dir.join("bmc.pass"), "bmc-pass-from-file\n").unwrap();
    run(&[
        "hosts",
        "edit",
        "h-a",
        "--power",
        "ipmi",
        "--power-opt",
        "host=10.0.0.5",
        "--power-opt",
        "username=admin",
        "--power-password-file",
        "bmc.pass",
    ]);
    let power = json(&["hosts", "show", "h-a"])["host"]["power"].clone();
    assert!(
        power["password"].as_str().unwrap().starts_with("v1:"),
        "{power}"
    );
    assert!(!power.to_string().contains("bmc-pass-from-file"), "{power}");
    assert!(power.get("password_plaintext").is_none(), "{power}");
    let table = run(&["hosts", "show", "h-a"]).stdout;
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("profile") && line.ends_with("model-a")),
        "{table}"
    );
    let first = vetting(
        &dir,
        &config,
        &Target::Local,
        &["hosts", "list", "--limit", "2"],
    )
    .expect_code(0, "page 1");
    assert_eq!(first.stdout.lines().count(), 3, "{first:?}");
    let cursor = first
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("more: --before "))
        .unwrap_or_else(|| panic!("no cursor: {first:?}"))
        .to_string();
    let second = run(&["hosts", "list", "--limit", "2", "--before", &cursor]).stdout;
    assert!(
        second.contains("h-c") && !second.contains("h-a"),
        "{second}"
    );
    let edited = run(&[
        "hosts",
        "edit",
        "h-b",
        "--rename",
        "h-b2",
        "--add-mac",
        "02:00:00:00:77:22",
        "--serial",
        "",
    ]);
    assert!(edited.stdout.contains("h-b2"), "{edited:?}");
    let shown = json(&["hosts", "show", "h-b2"]);
    assert_eq!(
        shown["host"]["macs"],
        json!(["02:00:00:00:77:02", "02:00:00:00:77:22"])
    );
    assert!(
        shown["host"]["serial"].is_null() || shown["host"]["serial"] == "",
        "{shown}"
    );
    run(&["hosts", "remove", "h-c"]);
    assert!(!run(&["hosts", "list"]).stdout.contains("h-c"));
    assert!(
        run(&["hosts", "list", "--include-removed"])
            .stdout
            .contains("h-c (removed)")
    );

    // tokens
    let secret = run(&["tokens", "create", "ci", "--role", "operator"]).stdout;
    assert!(secret.trim().starts_with("vtk1.ci."), "{secret}");
    let listed = run(&["tokens", "list"]).stdout;
    let row = listed
        .lines()
        .find(|line| line.starts_with("ci "))
        .unwrap()
        .to_string();
    assert!(
        row.contains("operator") && row.contains("local:tester") && row.ends_with('-'),
        "{listed}"
    );
    run(&["tokens", "revoke", "ci"]);
    let revoked = json(&["tokens", "list"]);
    assert!(revoked[0]["revoked_at_ms"].is_i64(), "{revoked}");

    // dispatch
    assert!(
        run(&["dispatch", "pause"])
            .stdout
            .contains("paused by local:tester")
    );
    assert!(json(&["dispatch", "status"])["paused"].as_bool().unwrap());
    assert!(run(&["dispatch", "resume"]).stdout.contains("running"));
    run(&["dispatch", "pause"]);

    // runs: every idle host, lists by state, show, cancel
    let ids: Vec<String> = run(&["runs", "start", "--all-idle"])
        .stdout
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let queued = json(&["runs", "list", "--state", "Queued"]);
    assert_eq!(queued["items"].as_array().unwrap().len(), 2, "{queued}");
    let shown = run(&["runs", "show", &ids[0]]).stdout;
    assert!(
        shown
            .lines()
            .any(|line| line.starts_with("state") && line.ends_with("Queued")),
        "{shown}"
    );
    assert!(
        shown.lines().any(|line| line.contains("Registered")
            && line.contains("Queued")
            && line.contains("local:tester")),
        "{shown}"
    );
    let cancelled = run(&["runs", "cancel", &ids[0]]).stdout;
    assert_eq!(
        cancelled.trim(),
        format!("run {}: cancel: Queued -> Cancelled", ids[0])
    );
    let listed = run(&["runs", "list", "--state", "Cancelled"]).stdout;
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains(&ids[0]));
    // a second start of the same host: refused, named, exit 4
    let again = vetting(
        &dir,
        &config,
        &Target::Local,
        &["runs", "start", "h-b2", "h-a"],
    );
    let again = again.expect_code(4, "a start of a busy host");
    assert!(again.stderr.contains("error: host "), "{again:?}");
    assert_eq!(
        again.stdout.lines().count(),
        1,
        "the idle host's run is printed: {again:?}"
    );
}
