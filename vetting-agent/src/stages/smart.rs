//! SMART: `smartctl --scan-open --json` finds the devices (with the `-d`
//! type to read them through, e.g. `megaraid,N` behind a RAID controller),
//! optionally starts a short self-test on each and waits for it (bounded
//! by `self_test_timeout_secs`), then `smartctl -a --json` per device,
//! judged by vetting-probes (health, self-test log, reallocated/pending/
//! uncorrectable counts, NVMe critical warning, media errors, wear).
//!
//! No devices, or none readable: skipped "no SMART-capable devices" (a VM's
//! virtio disks), unless the spec expects disks and devices exist that
//! cannot be read (then failed). smartctl missing: skipped unless the spec
//! expects disks.

use std::time::{Duration, Instant};

use vetting_probes::parsers::smartctl::{self, ScannedDevice, SmartctlOutput};
use vetting_probes::runner::{RunError, ToolCommand};
use vetting_probes::{Status, Tool, Verdict, parse_and_judge};

use super::{
    Artifact, Cancelled, StageContext, StageReport, judged_report, missing_tool_report,
    stop_if_cancelled,
};

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a running self-test is polled.
const POLL_INTERVAL: Duration = Duration::from_secs(10);

fn smartctl(args: &[&str]) -> ToolCommand {
    ToolCommand::new("smartctl")
        .args(args.iter().copied())
        .timeout(TOOL_TIMEOUT)
}

fn device_args(device: &ScannedDevice) -> Vec<String> {
    let mut args = Vec::new();
    if !device.device_type.is_empty() {
        args.push("-d".to_string());
        args.push(device.device_type.clone());
    }
    args.push(device.name.clone());
    args
}

/// `sda`, `bus_0-megaraid_1`.
fn subject(device: &ScannedDevice) -> String {
    let name = device.name.trim_start_matches("/dev/").replace('/', "_");
    if device.device_type.contains(',') {
        format!("{name}-{}", device.device_type.replace(',', "_"))
    } else {
        name
    }
}

/// Runs the stage.
pub fn run(context: &StageContext) -> Result<StageReport, Cancelled> {
    let expected_disks = context.params.expected.disks;
    let scan_output = match context.run_tool(&smartctl(&["--scan-open", "--json"])) {
        Ok(output) => output,
        Err(error) => {
            stop_if_cancelled(context, &error)?;
            return Ok(match error {
                RunError::NotFound { program } => missing_tool_report(
                    &program,
                    expected_disks > 0,
                    &format!("{expected_disks} disk(s)"),
                ),
                other => StageReport::failed(other.to_string()),
            });
        }
    };
    let mut artifacts = vec![Artifact::new(
        "smartctl-scan.json",
        Some(Tool::Smartctl),
        None,
        scan_output.stdout.clone(),
    )];
    let devices = match smartctl::parse(&scan_output.stdout) {
        Ok(SmartctlOutput::Scan(scan)) => scan.devices,
        Ok(SmartctlOutput::Device(_)) | Err(_) => {
            artifacts[0].tool = None;
            return Ok(StageReport::failed(format!(
                "smartctl --scan-open gave no device list ({})",
                scan_output.status
            ))
            .with_artifacts(artifacts));
        }
    };
    if devices.is_empty() {
        context.log.agent("smartctl found no devices");
        return Ok(StageReport::skipped("no SMART-capable devices").with_artifacts(artifacts));
    }
    let mut verdict = Verdict::pass();
    let mut readable = Vec::new();
    for device in devices {
        match &device.open_error {
            Some(error) => {
                let message = format!("{}: cannot be opened: {error}", device.name);
                context.log.agent(&message);
                verdict.add(Status::Skip, message);
            }
            None => readable.push(device),
        }
    }

    if context.params.smart.run_short_self_test && !readable.is_empty() {
        run_self_tests(context, &readable)?;
    }

    let mut judged = 0usize;
    for device in &readable {
        context.check_cancelled()?;
        let mut args = vec!["-a".to_string(), "--json".to_string()];
        args.extend(device_args(device));
        let command = ToolCommand::new("smartctl")
            .args(args)
            .timeout(TOOL_TIMEOUT);
        let output = match context.run_tool(&command) {
            Ok(output) => output,
            Err(error) => {
                stop_if_cancelled(context, &error)?;
                verdict.add(Status::Skip, format!("{}: {error}", device.name));
                continue;
            }
        };
        let subject = subject(device);
        let name = format!("smartctl-{subject}.json");
        match parse_and_judge(Tool::Smartctl, &output.stdout, &context.thresholds) {
            Ok(report) => {
                let mut device_verdict = report.verdict;
                if device_verdict.status != Status::Skip {
                    judged += 1;
                }
                for reason in &mut device_verdict.reasons {
                    reason.message = format!("{}: {}", device.name, reason.message);
                }
                if device_verdict.status == Status::Pass {
                    device_verdict.add(Status::Pass, format!("{}: SMART healthy", device.name));
                }
                verdict.merge(device_verdict);
                artifacts.push(Artifact::new(
                    &name,
                    Some(Tool::Smartctl),
                    Some(&device.name),
                    output.stdout,
                ));
            }
            Err(error) => {
                verdict.add(
                    Status::Skip,
                    format!("{}: smartctl output unreadable: {error}", device.name),
                );
                artifacts.push(Artifact::new(
                    &name,
                    None,
                    Some(&device.name),
                    super::combined_output(&output),
                ));
            }
        }
    }
    if judged == 0 {
        let mut report = if expected_disks > 0 {
            let mut failed = verdict.clone();
            failed.fail_with(format!(
                "the spec expects {expected_disks} disk(s) and smartctl found device(s), but none could be read"
            ));
            StageReport::from_verdict(failed)
        } else {
            let mut skipped = Verdict::skip("no SMART-capable devices");
            skipped.merge(verdict);
            StageReport::from_verdict(skipped)
        };
        report.artifacts = artifacts;
        return Ok(report);
    }
    Ok(judged_report(context, verdict, artifacts, Vec::new()))
}

/// Starts a short self-test on every device and waits (bounded) until none
/// is running any more.
fn run_self_tests(context: &StageContext, devices: &[ScannedDevice]) -> Result<(), Cancelled> {
    let mut testing = Vec::new();
    for device in devices {
        let mut args = vec!["-t".to_string(), "short".to_string()];
        args.extend(device_args(device));
        let command = ToolCommand::new("smartctl")
            .args(args)
            .timeout(TOOL_TIMEOUT);
        match context.run_tool(&command) {
            // bits 0-2: the command line, the open or a command failed
            Ok(output) if output.status.code.is_some_and(|code| code & 0b111 == 0) => {
                testing.push(device.clone());
            }
            Ok(output) => context.log.agent(format!(
                "{}: no self-test started ({})",
                device.name, output.status
            )),
            Err(error) => stop_if_cancelled(context, &error)?,
        }
    }
    if testing.is_empty() {
        return Ok(());
    }
    let limit = Duration::from_secs(context.params.smart.self_test_timeout_secs);
    let started = Instant::now();
    loop {
        context.sleep(POLL_INTERVAL.min(limit).max(Duration::from_secs(1)))?;
        let mut still_running = Vec::new();
        for device in &testing {
            let mut args = vec!["-a".to_string(), "--json".to_string()];
            args.extend(device_args(device));
            let command = ToolCommand::new("smartctl")
                .args(args)
                .timeout(TOOL_TIMEOUT);
            match context.run_tool_quiet(&command) {
                Ok(output) => {
                    if let Ok(SmartctlOutput::Device(data)) = smartctl::parse(&output.stdout)
                        && let Some(progress) = &data.self_tests.in_progress
                    {
                        context.log.agent(format!(
                            "{}: self-test running ({}% left)",
                            device.name,
                            progress
                                .remaining_percent
                                .map_or("?".to_string(), |p| p.to_string())
                        ));
                        still_running.push(device.clone());
                    }
                }
                Err(error) => stop_if_cancelled(context, &error)?,
            }
        }
        if still_running.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= limit {
            context.log.agent(format!(
                "self-tests still running after {} s: reading the results as they are",
                limit.as_secs()
            ));
            return Ok(());
        }
        testing = still_running;
    }
}
