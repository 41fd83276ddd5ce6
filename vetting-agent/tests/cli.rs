//! The `vetting-agent` binary, run for real: `parse TOOL FILE` prints the
//! tool report as JSON and exits 0 whatever the verdict, 2 when the file
//! cannot be parsed or the tool is unknown; `inventory` prints this
//! machine's inventory with its `missing` list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(FIXTURES).join(relative)
}

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vetting-agent"))
        .args(args)
        .output()
        .expect("running vetting-agent")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn parse_prints_the_tool_report_and_exits_0() {
    let path = fixture("stress-ng/virtualclient-StressNgCpuVmExample.yaml");
    let output = agent(&["parse", "stress-ng", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = stdout_json(&output);
    let keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(report["tool"], "stress-ng");
    assert_eq!(report["data"]["metrics"][1]["stressor"], "vm");
    assert_eq!(report["data"]["metrics"][1]["bogo_ops"], 1_067_912.0);
    assert_eq!(report["verdict"]["status"], "pass");
    assert_eq!(report["verdict"]["reasons"], Value::Array(Vec::new()));

    let path = fixture("dmidecode/netbox-agent-HP_DL380p_Gen8.txt");
    let output = agent(&["parse", "dmidecode", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = stdout_json(&output);
    assert_eq!(report["tool"], "dmidecode");
    assert_eq!(
        report["data"]["summary"]["total_memory_bytes"],
        68_719_476_736u64
    );
    assert_eq!(report["data"]["summary"]["cpus_active"], 2);
}

#[test]
fn parse_exits_0_for_a_failing_verdict() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("iperf3.json");
    std::fs::write(
        &path,
        r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#,
    )
    .unwrap();
    let output = agent(&["parse", "iperf3", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = stdout_json(&output);
    assert_eq!(report["verdict"]["status"], "fail");
    assert!(
        report["verdict"]["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Connection refused")
    );
}

#[test]
fn parse_of_garbage_exits_2_and_names_the_problem() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("garbage.txt");
    std::fs::write(&path, "this is not what dmidecode prints\n").unwrap();
    let output = agent(&["parse", "dmidecode", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let message = stderr(&output);
    assert!(message.contains("garbage.txt"), "{message}");
    assert!(message.contains("no DMI structures"), "{message}");

    std::fs::write(&path, [0xFF, 0xFE, 0x00, 0x80]).unwrap();
    let output = agent(&["parse", "iperf3", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("UTF-8"), "{}", stderr(&output));

    let output = agent(&[
        "parse",
        "lspci",
        directory.path().join("absent").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("reading"), "{}", stderr(&output));
}

#[test]
fn unknown_tool_exits_2_and_lists_the_valid_names() {
    let path = fixture("stress-ng/virtualclient-StressNgCpuExample.yaml");
    let output = agent(&["parse", "stress", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    for name in [
        "lshw",
        "dmidecode",
        "nvidia-smi",
        "stress-ng",
        "gpu-burn",
        "lsblk",
    ] {
        assert!(message.contains(name), "{name} not listed in: {message}");
    }
}

#[test]
fn inventory_prints_json_with_a_missing_list() {
    let output = agent(&["inventory"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let inventory = stdout_json(&output);
    assert_eq!(inventory["schema_version"], 1);
    assert!(inventory["cpus"]["threads"].as_u64().unwrap() >= 1);
    assert!(inventory["memory"]["total_bytes"].as_u64().unwrap() > 0);
    let missing = inventory["missing"].as_array().expect("a missing list");
    for entry in missing {
        assert!(
            entry["what"].as_str().is_some_and(|what| !what.is_empty()),
            "{entry}"
        );
        assert!(
            entry["why"].as_str().is_some_and(|why| !why.is_empty()),
            "{entry}"
        );
    }
    // This VM has no DMI tables and no hwmon: both are named.
    if !std::path::Path::new("/sys/firmware/dmi/tables").exists() {
        assert!(
            missing
                .iter()
                .any(|entry| entry["what"].as_str().unwrap().starts_with("dmi")),
            "{missing:?}"
        );
    }
    if !std::path::Path::new("/sys/class/hwmon").exists() {
        assert!(
            missing.iter().any(|entry| entry["what"] == "sensors"),
            "{missing:?}"
        );
    }

    let kernel_only = agent(&["inventory", "--no-tools"]);
    assert_eq!(
        kernel_only.status.code(),
        Some(0),
        "{}",
        stderr(&kernel_only)
    );
    let inventory = stdout_json(&kernel_only);
    assert!(
        inventory["missing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["what"] == "lshw")
    );
}
