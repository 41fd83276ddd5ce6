//! PSU: `ipmitool sdr elist` through the local BMC, judged by
//! vetting-probes (a PSU failed, predictive failure, input lost,
//! redundancy lost). No BMC (no IPMI device node) or no ipmitool: skipped
//! "no BMC", unless the spec expects PSUs or the inventory saw a BMC (then
//! failed: the part is there and cannot be read). A BMC without PSU
//! sensors: skipped unless the spec expects PSUs.

use std::time::Duration;

use vetting_probes::parsers::ipmitool;
use vetting_probes::runner::{RunError, ToolCommand};
use vetting_probes::{Tool, Verdict};

use super::{
    Artifact, Cancelled, StageContext, StageReport, combined_output, judged_report,
    stop_if_cancelled,
};

/// The device nodes of the IPMI driver (ipmi_devintf).
const IPMI_NODES: &[&str] = &["ipmi0", "ipmi/0", "ipmidev/0"];

/// Runs the stage.
pub fn run(context: &StageContext) -> Result<StageReport, Cancelled> {
    let expected = context.params.expected.psus;
    let bmc_in_inventory = context
        .inventory
        .as_ref()
        .is_some_and(|inventory| inventory.system.bmc_present);
    let node = IPMI_NODES
        .iter()
        .map(|node| context.local.dev_root.join(node))
        .find(|path| path.exists());
    let unreadable = |detail: &str| {
        if expected > 0 {
            StageReport::failed(format!("{detail}, but the spec expects {expected} PSU(s)"))
        } else if bmc_in_inventory {
            StageReport::failed(format!(
                "{detail}, but the firmware lists a BMC (SMBIOS type 38): is the IPMI driver loaded?"
            ))
        } else {
            StageReport::skipped(format!("no BMC ({detail})"))
        }
    };
    let Some(node) = node else {
        return Ok(unreadable(&format!(
            "no IPMI device node in {}",
            context.local.dev_root.display()
        )));
    };
    context.log.agent(format!("BMC at {}", node.display()));
    let command = ToolCommand::new("ipmitool")
        .args(["sdr", "elist"])
        .timeout(Duration::from_secs(180));
    let output = match context.run_tool(&command) {
        Ok(output) => output,
        Err(error) => {
            stop_if_cancelled(context, &error)?;
            return Ok(match error {
                RunError::NotFound { .. } => unreadable("tool ipmitool is not installed"),
                other => unreadable(&other.to_string()),
            });
        }
    };
    let parsed = match ipmitool::parse(&output.stdout) {
        Ok(parsed) => parsed,
        Err(error) => {
            let mut report =
                unreadable(&format!("ipmitool sdr elist gave nothing usable: {error}"));
            report.artifacts.push(Artifact::new(
                "ipmitool-sdr.txt",
                None,
                None,
                combined_output(&output),
            ));
            return Ok(report);
        }
    };
    let artifacts = vec![Artifact::new(
        "ipmitool-sdr.txt",
        Some(Tool::Ipmitool),
        None,
        output.stdout.clone(),
    )];
    if !parsed.psu_sensors_found {
        let report = if expected > 0 {
            StageReport::failed(format!(
                "the BMC reports no PSU sensors, but the spec expects {expected} PSU(s)"
            ))
        } else {
            StageReport::skipped("the BMC reports no PSU sensors")
        };
        return Ok(report.with_artifacts(artifacts));
    }
    let verdict: Verdict = ipmitool::verdict(&parsed, &context.thresholds);
    Ok(judged_report(context, verdict, artifacts, Vec::new()))
}
