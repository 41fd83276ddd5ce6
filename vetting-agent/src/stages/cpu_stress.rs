//! CPUStress: `stress-ng --cpu 0 --vm 1 --vm-bytes X --verify --metrics
//! --yaml FILE -t Ns` on every CPU and `memory_share` of the available
//! memory, with the thermal sidecar reading hwmon every second, and the
//! EDAC memory-error counters and the CPUs' thermal-throttle counters read
//! before and after. Fails when stress-ng reports a failure (its YAML
//! metrics, judged by vetting-probes, or a failing exit), a CPU temperature
//! reaches the stress limit, the CPUs throttled, or new corrected or
//! uncorrected memory errors appear (`vetting_probes::verdicts::cpu`; the
//! sidecar's peaks and both counter readings are uploaded as
//! `thermal-sidecar`, `edac` and `cpu-throttle` evidence, which the
//! orchestrator re-judges).

use std::path::Path;
use std::time::Duration;

use vetting_probes::runner::RunError;
use vetting_probes::runner::ToolCommand;
use vetting_probes::verdicts::BeforeAfter;
use vetting_probes::verdicts::cpu::{
    EDAC_MC, SYSTEM_CPU, judge_edac, judge_throttle, read_edac, read_throttle,
};
use vetting_probes::{Status, Tool, Verdict, parse_and_judge};

use super::{
    Artifact, Cancelled, StageContext, StageReport, combined_output, evidence_document,
    judged_report, measurement, missing_tool_report, stop_if_cancelled,
};
use crate::sidecar::Sidecar;

/// Extra time stress-ng gets beyond its own `-t` before it is killed.
const GRACE: Duration = Duration::from_secs(120);

/// Runs the stage.
pub fn run(context: &StageContext) -> Result<StageReport, Cancelled> {
    let params = &context.params.cpu_stress;
    let duration = params.duration_secs.max(1);
    let available = read_mem_available(Path::new("/proc/meminfo")).unwrap_or(0);
    let wanted = vm_bytes(available, params.memory_share);
    let vm_bytes = wanted.min(vm_bytes_for(duration));
    let yaml = context.scratch_file("stress-ng.yaml");
    let _ = std::fs::remove_file(&yaml);
    let edac_root = context.local.sys_root.join(EDAC_MC);
    let cpu_root = context.local.sys_root.join(SYSTEM_CPU);
    let edac_before = read_edac(&edac_root);
    let throttle_before = read_throttle(&cpu_root);

    let command = ToolCommand::new("stress-ng")
        .args(["--cpu", "0", "--vm", "1", "--vm-bytes"])
        .arg(format!("{}k", vm_bytes / 1024))
        .args(["--verify", "--metrics", "--yaml"])
        .arg(yaml.display().to_string())
        .arg("-t")
        .arg(format!("{duration}s"))
        .timeout(Duration::from_secs(duration) + GRACE);
    context.log.agent(format!(
        "stressing every CPU and {} MiB of memory ({}% of {} MiB available) for {duration} s",
        vm_bytes >> 20,
        (params.memory_share * 100.0).round(),
        available >> 20
    ));
    if vm_bytes < wanted {
        context.log.agent(format!(
            "memory held to {} MiB of the {} MiB share: a {duration} s stress cannot fault in \
             and verify more, and a vm stressor that never finishes a pass reports no work",
            vm_bytes >> 20,
            wanted >> 20
        ));
    }
    let sidecar = Sidecar::start(
        context.local.sys_root.join("class/hwmon"),
        Duration::from_secs(1),
        context.sensors.clone(),
    );
    let result = context.run_tool(&command);
    let summary = sidecar.stop();
    context.log.agent(format!(
        "thermal sidecar: {} round(s), {} sample(s), {} sensor(s)",
        summary.rounds,
        summary.samples,
        summary.peaks.len()
    ));
    let output = match result {
        Ok(output) => output,
        Err(error) => {
            stop_if_cancelled(context, &error)?;
            return Ok(match error {
                RunError::NotFound { program } => {
                    missing_tool_report(&program, false, "a CPU to stress")
                }
                other => StageReport::failed(other.to_string()),
            });
        }
    };

    let mut verdict = Verdict::pass();
    let mut artifacts = Vec::new();
    let mut measurements = Vec::new();
    match std::fs::read(&yaml) {
        Ok(report) => match parse_and_judge(Tool::StressNg, &report, &context.thresholds) {
            Ok(judged) => {
                if let Some(metrics) = judged.data.get("metrics").and_then(|m| m.as_array()) {
                    for metric in metrics {
                        if let (Some(name), Some(rate)) = (
                            metric.get("stressor").and_then(|v| v.as_str()),
                            metric
                                .get("bogo_ops_per_second_real_time")
                                .and_then(serde_json::Value::as_f64),
                        ) {
                            measurements.push(measurement(
                                &format!("stress.{name}.bogo_ops_per_sec"),
                                rate,
                                "ops/s",
                            ));
                        }
                    }
                }
                verdict.merge(judged.verdict);
                artifacts.push(Artifact::new(
                    "stress-ng.yaml",
                    Some(Tool::StressNg),
                    None,
                    report,
                ));
            }
            Err(error) => {
                verdict.fail_with(format!("the stress-ng report cannot be read: {error}"));
                artifacts.push(Artifact::new("stress-ng.yaml", None, None, report));
            }
        },
        Err(error) => verdict.fail_with(format!(
            "stress-ng wrote no report ({}): {error}",
            output.status
        )),
    }
    if !output.status.success() {
        let failures: Vec<String> = String::from_utf8_lossy(&combined_output(&output))
            .lines()
            .filter(|line| {
                let lower = line.to_ascii_lowercase();
                lower.contains("fail") || lower.contains("error")
            })
            .take(5)
            .map(|line| line.trim().to_string())
            .collect();
        verdict.fail_with(format!(
            "stress-ng ended with {}{}",
            output.status,
            if failures.is_empty() {
                String::new()
            } else {
                format!(": {}", failures.join(" | "))
            }
        ));
    }
    artifacts.push(Artifact::new(
        "stress-ng-output.txt",
        None,
        None,
        combined_output(&output),
    ));

    // temperatures
    artifacts.extend(evidence_document(
        "thermal-sidecar.json",
        Tool::ThermalSidecar,
        summary.to_json(),
        &mut verdict,
    ));
    let thermal = summary.verdict(&context.thresholds);
    if thermal.status == Status::Skip {
        context
            .log
            .agent("no hwmon sensors: temperatures were not judged");
        verdict.add(
            Status::Pass,
            "no hwmon sensors: temperatures were not judged",
        );
    } else {
        verdict.merge(thermal);
    }
    measurements.extend(super::peak_measurements("stress", &summary));

    // memory errors
    let edac_after = read_edac(&edac_root);
    judge_edac(&mut verdict, &edac_before, &edac_after);
    let edac = BeforeAfter::new(None, edac_before, edac_after);
    artifacts.extend(evidence_document(
        "edac.json",
        Tool::Edac,
        edac.to_json(),
        &mut verdict,
    ));
    // throttling
    let throttle_after = read_throttle(&cpu_root);
    judge_throttle(&mut verdict, &throttle_before, &throttle_after);
    let throttle = BeforeAfter::new(None, throttle_before, throttle_after);
    artifacts.extend(evidence_document(
        "cpu-throttle.json",
        Tool::CpuThrottle,
        throttle.to_json(),
        &mut verdict,
    ));

    Ok(judged_report(context, verdict, artifacts, measurements))
}

/// `memory_share` of `available` bytes, at least 16 MiB.
pub fn vm_bytes(available: u64, share: f64) -> u64 {
    let share = if share.is_finite() {
        share.clamp(0.0, 0.95)
    } else {
        0.0
    };
    ((available as f64 * share) as u64).max(16 * 1024 * 1024)
}

/// Memory the vm stressor may take per second of stress.
pub const VM_BYTES_PER_SECOND: u64 = 32 * 1024 * 1024;

/// The most memory a stress of `duration_secs` can use: the vm stressor
/// faults its whole buffer in before its first verified pass, and a pass
/// that does not finish in time leaves it with 0 bogo-ops, which is judged
/// a failure. Measured on a 2-core VM under load: 1157 MiB for 3 s gave 0
/// bogo-ops, 96 MiB gave 121,924. An hour of stress may use 112.5 GiB.
pub fn vm_bytes_for(duration_secs: u64) -> u64 {
    duration_secs.max(1).saturating_mul(VM_BYTES_PER_SECOND)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn read_mem_available(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kilobytes.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_share_is_bounded() {
        assert_eq!(vm_bytes(1 << 30, 0.5), 1 << 29);
        assert_eq!(vm_bytes(1 << 30, 0.0), 16 << 20);
        assert!(vm_bytes(1 << 30, 2.0) < 1 << 30);
    }

    #[test]
    fn short_stresses_take_less_memory() {
        assert_eq!(vm_bytes_for(3), 96 << 20);
        assert_eq!(vm_bytes_for(0), 32 << 20);
        assert_eq!(vm_bytes_for(3600), 115_200 << 20);
        assert_eq!(vm_bytes_for(u64::MAX), u64::MAX);
    }
}
