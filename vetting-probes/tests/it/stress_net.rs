//! CPU/memory stress and network: the stress-ng and iperf3 fixtures get
//! their EXPECTED.md verdicts; the real stress-ng, memtester and iperf3 run
//! here and their outputs go through the same parsers and verdicts; the
//! runner's timeout, cancel, missing-tool and failure paths are exercised
//! with real processes.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use vetting_probes::parsers::{iperf3, memtester, stress_ng};
use vetting_probes::runner::{RunError, ToolCommand, run_tool, spawn_tool};
use vetting_probes::{Status, Thresholds, Tool, parse_and_judge};

use crate::common::{fixture, fixture_names};

/// Waits for `condition` to hold, checking every few milliseconds, for at
/// most `limit`.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- fixtures

#[test]
fn stress_ng_fixtures_pass_with_their_metrics() {
    assert_eq!(fixture_names("stress-ng").len(), 2);
    let cpu = fixture("stress-ng/virtualclient-StressNgCpuExample.yaml");
    let report = parse_and_judge(Tool::StressNg, &cpu, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Pass, "{:?}", report.verdict);
    let data = stress_ng::parse(&cpu).unwrap();
    assert_eq!(data.stress_ng_version.as_deref(), Some("0.09.25"));
    // `version: #80~18.04.1-Ubuntu…` is a YAML comment: no value.
    assert!(!data.system_info.contains_key("version"));
    // 2022:04:29 stays text, not a sexagesimal number.
    assert_eq!(
        data.system_info.get("date-yyyy-mm-dd").map(String::as_str),
        Some("2022:04:29")
    );
    assert_eq!(data.metrics.len(), 1);
    let metric = &data.metrics[0];
    assert_eq!(metric.stressor, "cpu");
    assert_eq!(metric.bogo_ops, 31532.0);
    assert_eq!(metric.bogo_ops_per_second_real_time, Some(3239.115687));
    assert_eq!(metric.bogo_ops_per_second_usr_sys_time, Some(196.448819));
    assert_eq!(metric.system_time, Some(0.0));

    let cpu_vm = fixture("stress-ng/virtualclient-StressNgCpuVmExample.yaml");
    let report = parse_and_judge(Tool::StressNg, &cpu_vm, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Pass);
    let data = stress_ng::parse(&cpu_vm).unwrap();
    let work: Vec<(&str, f64)> = data
        .metrics
        .iter()
        .map(|metric| (metric.stressor.as_str(), metric.bogo_ops))
        .collect();
    assert_eq!(work, [("cpu", 30539.0), ("vm", 1_067_912.0)]);
    insta::assert_json_snapshot!("stress-ng-cpu-vm", report);
}

#[test]
fn stress_ng_fixture_with_a_stressor_that_did_nothing_fails_naming_it() {
    let text =
        String::from_utf8(fixture("stress-ng/virtualclient-StressNgCpuVmExample.yaml")).unwrap();
    let broken = text.replace("bogo-ops: 1067912", "bogo-ops: 0");
    let report =
        parse_and_judge(Tool::StressNg, broken.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Fail);
    assert!(
        report
            .verdict
            .messages(Status::Fail)
            .all(|message| message.contains("vm"))
    );
    assert!(
        !report
            .verdict
            .messages(Status::Fail)
            .any(|message| message.contains("cpu"))
    );
}

#[test]
fn iperf3_fixtures_pass_with_their_throughput() {
    assert_eq!(fixture_names("iperf3").len(), 3);
    let cases = [
        (
            "iperf3-python-results-tcp.json",
            "TCP",
            934_268_000.0,
            Some(0),
        ),
        (
            "yardstick-iperf3_sample_output_tcp.json",
            "TCP",
            154_521_000.0,
            Some(81),
        ),
        (
            "yardstick-iperf3_sample_output_udp.json",
            "UDP",
            19_804_500.0,
            None,
        ),
    ];
    for (name, protocol, throughput, retransmits) in cases {
        let bytes = fixture(&format!("iperf3/{name}"));
        let report = parse_and_judge(Tool::Iperf3, &bytes, &Thresholds::default()).unwrap();
        assert_eq!(report.verdict.status, Status::Pass, "{name}");
        let data = iperf3::parse(&bytes).unwrap();
        assert_eq!(data.protocol.as_deref(), Some(protocol), "{name}");
        assert_eq!(data.throughput_bps, Some(throughput), "{name}");
        assert_eq!(data.retransmits, retransmits, "{name}");
        assert_eq!(data.error, None);
        insta::assert_json_snapshot!(format!("iperf3-{}", name.trim_end_matches(".json")), report);
    }
    let udp = iperf3::parse(&fixture("iperf3/yardstick-iperf3_sample_output_udp.json")).unwrap();
    assert_eq!(
        (udp.lost_packets, udp.packets, udp.lost_percent),
        (Some(0), Some(3022), Some(0.0))
    );
    assert_eq!(udp.jitter_ms, Some(0.0113579));
    assert_eq!(
        iperf3::parse(&fixture("iperf3/iperf3-python-results-tcp.json"))
            .unwrap()
            .intervals,
        13
    );
}

#[test]
fn iperf3_fixture_judged_against_its_link() {
    let thresholds = Thresholds::default();
    // ~934 Mbit/s: fine on 1 GbE, far too little on 10 GbE.
    let gigabit = iperf3::parse(&fixture("iperf3/iperf3-python-results-tcp.json")).unwrap();
    assert_eq!(
        iperf3::verdict_with_link(&gigabit, Some(1000), &thresholds).status,
        Status::Pass
    );
    let ten_gigabit = iperf3::verdict_with_link(&gigabit, Some(10_000), &thresholds);
    assert_eq!(ten_gigabit.status, Status::Fail);
    assert!(
        ten_gigabit.reasons[0].message.contains("934.3 Mbit/s"),
        "{:?}",
        ten_gigabit
    );
    assert!(ten_gigabit.reasons[0].message.contains("10000 Mbit/s"));
    // ~154.5 Mbit/s on the yardstick VM: fails a 1 GbE link at 70 %.
    let slow = iperf3::parse(&fixture("iperf3/yardstick-iperf3_sample_output_tcp.json")).unwrap();
    assert_eq!(
        iperf3::verdict_with_link(&slow, Some(1000), &thresholds).status,
        Status::Fail
    );
}

#[test]
fn iperf3_error_document_fails_with_its_text() {
    // What iperf3 3.12 prints with -J when the server is not there.
    let document = br#"{
	"start":	{"connected":	[], "version":	"iperf 3.12", "system_info":	"Linux vm 6.1.0 #1 SMP x86_64"},
	"intervals":	[],
	"end":	{},
	"error":	"unable to connect to server - server may have stopped running or use a different port, firewall issue, etc.: Connection refused"
}"#;
    let report = parse_and_judge(Tool::Iperf3, document, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Fail);
    assert!(
        report.verdict.reasons[0]
            .message
            .contains("Connection refused")
    );
}

// ---------------------------------------------------------------- real tools

#[test]
fn real_stress_ng_run_passes() {
    let directory = tempfile::tempdir().unwrap();
    let yaml = directory.path().join("stress.yaml");
    let command = ToolCommand::new("stress-ng")
        .args([
            "--cpu",
            "1",
            "--vm",
            "1",
            "--vm-bytes",
            "32M",
            "--verify",
            "--metrics",
            "--yaml",
        ])
        .arg(yaml.to_str().unwrap())
        .args(["-t", "3s"])
        .timeout(Duration::from_secs(60));
    let output = run_tool(&command).unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&yaml).unwrap();
    let report = parse_and_judge(Tool::StressNg, &bytes, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Pass, "{:?}", report.verdict);
    let data = stress_ng::parse(&bytes).unwrap();
    let stressors: Vec<&str> = data
        .metrics
        .iter()
        .map(|metric| metric.stressor.as_str())
        .collect();
    assert_eq!(stressors, ["cpu", "vm"]);
    assert!(data.metrics.iter().all(|metric| metric.bogo_ops > 0.0));
    assert!(data.stress_ng_version.is_some());
}

#[test]
fn real_memtester_run_passes() {
    let output = run_tool(
        &ToolCommand::new("memtester")
            .args(["4M", "1"])
            .timeout(Duration::from_secs(120)),
    )
    .unwrap();
    // Failures go to stderr: judge both streams together, as captured.
    let mut combined = output.stdout.clone();
    combined.extend_from_slice(&output.stderr);
    let report = parse_and_judge(Tool::Memtester, &combined, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Pass, "{:?}", report.verdict);
    let data = memtester::parse(&combined).unwrap();
    assert!(data.finished);
    assert_eq!(data.got_bytes, Some(4 * 1024 * 1024));
    assert!(data.tests.len() >= 15, "{:?}", data.tests);
    assert!(
        data.tests
            .iter()
            .all(|test| test.outcome == memtester::TestOutcome::Ok)
    );
    assert!(data.tests.iter().any(|test| test.name == "Stuck Address"));

    // The same real output, cut before `Done.` (a killed run), fails.
    let text = String::from_utf8_lossy(&combined).into_owned();
    let cut = &text[..text.find("Done.").unwrap()];
    let report = parse_and_judge(Tool::Memtester, cut.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Fail);
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something listens on 127.0.0.1:`port` (IPv4, from /proc/net/tcp).
fn listening_on(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
    })
}

#[test]
fn real_iperf3_over_loopback_passes_tcp_and_udp() {
    let port = free_port();
    let server = spawn_tool(&ToolCommand::new("iperf3").args([
        "-s",
        "-B",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]))
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || listening_on(port)),
        "iperf3 server did not listen on {port}"
    );
    let client = |extra: &[&str]| {
        let command = ToolCommand::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "1", "-J"])
            .args(extra.iter().copied())
            .timeout(Duration::from_secs(60));
        run_tool(&command).unwrap()
    };

    let tcp = client(&[]);
    let report = parse_and_judge(Tool::Iperf3, &tcp.stdout, &Thresholds::default()).unwrap();
    assert_eq!(
        report.verdict.status,
        Status::Pass,
        "{:?}\n{}",
        report.verdict,
        tcp.stdout_lossy()
    );
    let data = iperf3::parse(&tcp.stdout).unwrap();
    assert_eq!(data.protocol.as_deref(), Some("TCP"));
    assert!(data.throughput_bps.is_some_and(|bps| bps > 1e6));
    assert!(data.retransmits.is_some());
    // The real result judged against a link it cannot reach fails.
    assert_eq!(
        iperf3::verdict_with_link(&data, Some(u64::MAX / 1_000_000), &Thresholds::default()).status,
        Status::Fail
    );

    let udp = client(&["-u", "-b", "10M"]);
    let report = parse_and_judge(Tool::Iperf3, &udp.stdout, &Thresholds::default()).unwrap();
    assert_eq!(
        report.verdict.status,
        Status::Pass,
        "{:?}\n{}",
        report.verdict,
        udp.stdout_lossy()
    );
    let data = iperf3::parse(&udp.stdout).unwrap();
    assert_eq!(data.protocol.as_deref(), Some("UDP"));
    assert!(data.throughput_bps.is_some_and(|bps| bps > 1e6));
    assert!(data.packets.is_some_and(|packets| packets > 0));

    // No server on the next port: iperf3's own error, as a failed verdict.
    let refused = run_tool(
        &ToolCommand::new("iperf3")
            .args([
                "-c",
                "127.0.0.1",
                "-p",
                &free_port().to_string(),
                "-t",
                "1",
                "-J",
            ])
            .timeout(Duration::from_secs(60)),
    )
    .unwrap();
    let report = parse_and_judge(Tool::Iperf3, &refused.stdout, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Fail);
    assert!(
        report.verdict.reasons[0].message.contains("iperf3 error"),
        "{:?}",
        report.verdict
    );

    // Stop the server through the cancel handle, as the agent does on abort.
    let cancel = server.cancel_handle();
    let stopper = std::thread::spawn(move || cancel.cancel());
    let result = server.wait_with_timeout(Some(Duration::from_secs(30)));
    stopper.join().unwrap();
    assert!(
        matches!(result, Err(RunError::Cancelled { .. })),
        "{result:?}"
    );
    assert!(wait_for(Duration::from_secs(10), || !listening_on(port)));
}

// ---------------------------------------------------------------- runner

/// Live (not zombie) processes whose process group is `group`.
fn live_members_of_group(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let (state, pgrp) = (fields.first()?, fields.get(2)?.parse::<u32>().ok()?);
            (pgrp == group && *state != "Z" && *state != "X").then_some(pid)
        })
        .collect()
}

#[test]
fn timeout_kills_the_whole_process_group_including_grandchildren() {
    let command = ToolCommand::new("sh").args(["-c", "sleep 100 & sleep 100"]);
    let running = spawn_tool(&command).unwrap();
    let group = running.pid();
    // The shell, and both sleeps, in the tool's own group.
    assert!(wait_for(Duration::from_secs(10), || live_members_of_group(
        group
    )
    .len()
        >= 2));
    assert_ne!(group, std::process::id());
    let started = Instant::now();
    let result = running.wait_with_timeout(Some(Duration::from_millis(300)));
    match result {
        Err(RunError::TimedOut {
            command_line,
            timeout,
            ..
        }) => {
            assert_eq!(command_line, "sh -c 'sleep 100 & sleep 100'");
            assert_eq!(timeout, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        wait_for(Duration::from_secs(10), || live_members_of_group(group)
            .is_empty()),
        "still alive in group {group}: {:?}",
        live_members_of_group(group)
    );
}

#[test]
fn processes_left_behind_by_a_finished_tool_are_killed() {
    let command = ToolCommand::new("sh").args(["-c", "sleep 100 & echo started"]);
    let running = spawn_tool(&command).unwrap();
    let group = running.pid();
    let output = running.wait_with_timeout(None).unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout, b"started\n");
    assert!(wait_for(Duration::from_secs(10), || live_members_of_group(
        group
    )
    .is_empty()));
}

#[test]
fn cancel_kills_a_running_tool() {
    let running = spawn_tool(&ToolCommand::new("sleep").arg("100")).unwrap();
    let group = running.pid();
    running.kill_group();
    let result = running.wait_with_timeout(Some(Duration::from_secs(30)));
    assert!(
        matches!(result, Err(RunError::Cancelled { ref command_line, .. }) if command_line == "sleep 100"),
        "{result:?}"
    );
    assert!(wait_for(Duration::from_secs(10), || live_members_of_group(
        group
    )
    .is_empty()));
}

#[test]
fn a_dropped_tool_is_killed_with_its_group() {
    let running =
        spawn_tool(&ToolCommand::new("sh").args(["-c", "sleep 100 & sleep 100"])).unwrap();
    let group = running.pid();
    assert!(wait_for(Duration::from_secs(10), || live_members_of_group(
        group
    )
    .len()
        >= 2));
    drop(running);
    assert!(wait_for(Duration::from_secs(10), || live_members_of_group(
        group
    )
    .is_empty()));
}

#[test]
fn a_missing_tool_is_not_found_and_skips() {
    let error = run_tool(&ToolCommand::new("vetting-no-such-tool").arg("--version")).unwrap_err();
    assert!(matches!(&error, RunError::NotFound { program } if program == "vetting-no-such-tool"));
    let verdict = error.skip_verdict().unwrap();
    assert_eq!(verdict.status, Status::Skip);
    assert_eq!(
        verdict.reasons[0].message,
        "tool vetting-no-such-tool is not installed"
    );
    assert_eq!(error.verdict(), verdict);
    assert!(!vetting_probes::runner::tool_available(
        "vetting-no-such-tool"
    ));
    assert!(vetting_probes::runner::tool_available("sh"));
}

#[test]
fn a_failing_command_carries_its_command_line_status_and_stderr() {
    let command =
        ToolCommand::new("sh").args(["-c", "echo partial; echo 'disk on fire' >&2; exit 3"]);
    let output = run_tool(&command).unwrap();
    assert_eq!(output.status.code, Some(3));
    assert_eq!(output.stdout, b"partial\n");
    let error = output.into_success().unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("sh -c 'echo partial; echo '\\''disk on fire'\\'' >&2; exit 3'"),
        "{message}"
    );
    assert!(message.contains("exit status 3"), "{message}");
    assert!(message.contains("disk on fire"), "{message}");
    assert_eq!(error.skip_verdict(), None);
    assert_eq!(error.verdict().status, Status::Fail);
    // Killed by a signal is reported as such.
    let killed = run_tool(&ToolCommand::new("sh").args(["-c", "kill -TERM $$"])).unwrap();
    assert_eq!(killed.status.signal, Some(15));
    assert!(
        killed
            .into_success()
            .unwrap_err()
            .to_string()
            .contains("killed by signal 15")
    );
}

#[test]
fn large_stdout_and_stderr_are_captured_in_full() {
    let command = ToolCommand::new("sh")
        .args([
            "-c",
            "head -c 3000000 /dev/zero; head -c 2000000 /dev/zero >&2; echo \"$VETTING_MARK\"",
        ])
        .env("VETTING_MARK", "marked");
    let output = run_tool(&command.timeout(Duration::from_secs(60))).unwrap();
    assert_eq!(output.stdout.len(), 3_000_000 + "marked\n".len());
    assert!(output.stdout.ends_with(b"marked\n"));
    assert_eq!(output.stderr.len(), 2_000_000);
}
