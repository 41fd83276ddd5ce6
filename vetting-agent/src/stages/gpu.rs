//! GPU: `nvidia-smi -q -x` judged by vetting-probes (XID and ECC errors,
//! retired pages and row remapping, active throttling, PCIe link), then
//! `dcgmi diag -r 1 -j` and `gpu_burn` where they are installed.
//!
//! No nvidia-smi, or nvidia-smi finding no GPU: skipped "no NVIDIA GPU or
//! driver", but failed when the spec expects GPUs or the PCI bus shows an
//! NVIDIA display controller (vendor 10de, class 03xx): a GPU whose driver
//! is missing is a failed GPU stage, not a skipped one.

use std::path::Path;
use std::time::Duration;

use vetting_probes::parsers::nvidia_smi;
use vetting_probes::runner::{RunError, ToolCommand, tool_available};
use vetting_probes::{Status, Tool, parse_and_judge};

use super::{
    Artifact, Cancelled, StageContext, StageReport, combined_output, judged_report,
    stop_if_cancelled,
};

const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(120);

/// The PCI slots of NVIDIA display controllers (vendor 0x10de, class
/// 0x03xxxx) under `sys_root/bus/pci/devices`.
pub fn nvidia_pci_devices(sys_root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sys_root.join("bus/pci/devices")) else {
        return Vec::new();
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let mut slots: Vec<String> = entries
        .flatten()
        .filter(|entry| {
            read(&entry.path().join("vendor")) == "0x10de"
                && read(&entry.path().join("class")).starts_with("0x03")
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    slots.sort();
    slots
}

/// Runs the stage.
pub fn run(context: &StageContext) -> Result<StageReport, Cancelled> {
    let expected = context.params.expected.gpus;
    let on_bus = nvidia_pci_devices(&context.local.sys_root);
    let must_exist = expected > 0 || !on_bus.is_empty();
    let why_expected = || {
        let mut why = Vec::new();
        if expected > 0 {
            why.push(format!("the spec expects {expected} GPU(s)"));
        }
        if !on_bus.is_empty() {
            why.push(format!(
                "the PCI bus shows NVIDIA device(s) at {}",
                on_bus.join(", ")
            ));
        }
        why.join(" and ")
    };
    let absent = |detail: String| {
        if must_exist {
            StageReport::failed(format!("{detail}, but {}", why_expected()))
        } else {
            StageReport::skipped(format!("no NVIDIA GPU or driver ({detail})"))
        }
    };

    let query = ToolCommand::new("nvidia-smi")
        .args(["-q", "-x"])
        .timeout(NVIDIA_SMI_TIMEOUT);
    let output = match context.run_tool(&query) {
        Ok(output) => output,
        Err(error) => {
            stop_if_cancelled(context, &error)?;
            return Ok(match error {
                RunError::NotFound { .. } => absent("nvidia-smi is not installed".to_string()),
                other => absent(other.to_string()),
            });
        }
    };
    let mut artifacts = Vec::new();
    let parsed = match nvidia_smi::parse(&output.stdout) {
        Ok(parsed) => parsed,
        Err(error) => {
            let detail = String::from_utf8_lossy(&combined_output(&output))
                .lines()
                .find(|line| !line.trim().is_empty())
                .map(|line| line.trim().to_string())
                .unwrap_or_else(|| error.to_string());
            let mut report = absent(format!("nvidia-smi found no GPU: {detail}"));
            report.artifacts.push(Artifact::new(
                "nvidia-smi-q.txt",
                None,
                None,
                combined_output(&output),
            ));
            return Ok(report);
        }
    };
    let gpu_count = parsed
        .snapshots
        .iter()
        .map(|snapshot| snapshot.gpus.len())
        .max()
        .unwrap_or(0);
    if gpu_count == 0 {
        return Ok(absent("nvidia-smi lists no GPU".to_string()));
    }
    let mut verdict = nvidia_smi::verdict(&parsed, &context.thresholds);
    if expected > 0 && (gpu_count as u32) < expected {
        verdict.fail_with(format!(
            "nvidia-smi lists {gpu_count} GPU(s), the spec expects {expected}"
        ));
    }
    artifacts.push(Artifact::new(
        "nvidia-smi-q.xml",
        Some(Tool::NvidiaSmi),
        None,
        output.stdout,
    ));

    if tool_available("dcgmi") {
        let diag = ToolCommand::new("dcgmi")
            .args(["diag", "-r", "1", "-j"])
            .timeout(Duration::from_secs(900));
        match context.run_tool(&diag) {
            Ok(output) => match parse_and_judge(Tool::Dcgmi, &output.stdout, &context.thresholds) {
                Ok(judged) => {
                    verdict.merge(judged.verdict);
                    artifacts.push(Artifact::new(
                        "dcgmi-diag.json",
                        Some(Tool::Dcgmi),
                        None,
                        output.stdout,
                    ));
                }
                Err(error) => {
                    verdict.warn(format!("dcgmi diag gave no readable report: {error}"));
                    artifacts.push(Artifact::new(
                        "dcgmi-diag.txt",
                        None,
                        None,
                        combined_output(&output),
                    ));
                }
            },
            Err(error) => {
                stop_if_cancelled(context, &error)?;
                verdict.warn(format!("dcgmi diag: {error}"));
            }
        }
    } else {
        verdict.add(
            Status::Pass,
            "dcgmi is not installed: DCGM diagnostics not run",
        );
    }

    let burn_program = ["gpu_burn", "gpu-burn"]
        .into_iter()
        .find(|program| tool_available(program));
    match burn_program {
        Some(program) => {
            let seconds = context.params.gpu.burn_secs.max(1);
            let burn = ToolCommand::new(program)
                .arg(seconds.to_string())
                .timeout(Duration::from_secs(seconds + 300));
            match context.run_tool(&burn) {
                Ok(output) => {
                    let body = combined_output(&output);
                    match parse_and_judge(Tool::GpuBurn, &body, &context.thresholds) {
                        Ok(judged) => {
                            verdict.merge(judged.verdict);
                            artifacts.push(Artifact::new(
                                "gpu-burn.txt",
                                Some(Tool::GpuBurn),
                                None,
                                body,
                            ));
                        }
                        Err(error) => {
                            verdict.fail_with(format!("gpu_burn did not finish: {error}"));
                            artifacts.push(Artifact::new("gpu-burn.txt", None, None, body));
                        }
                    }
                }
                Err(error) => {
                    stop_if_cancelled(context, &error)?;
                    verdict.fail_with(format!("gpu_burn: {error}"));
                }
            }
        }
        None => verdict.add(Status::Pass, "gpu_burn is not installed: no burn-in run"),
    }
    Ok(judged_report(context, verdict, artifacts, Vec::new()))
}
