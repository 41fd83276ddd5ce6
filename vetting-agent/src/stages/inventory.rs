//! InventoryCheck: `vetting_probes::inventory` collects the machine's
//! inventory (dmidecode or the SMBIOS tables, lshw, lspci, /proc, /sys,
//! ethtool, nvidia-smi, hwmon); the result carries it as JSON and every raw
//! tool output goes up as an artifact. With `--allow-loop-devices` the
//! attached loop devices (that pass `--disk-filter`) are listed as disks, so
//! a spec can expect them. The stage fails only when the probe yields
//! nothing usable (no CPU and no memory).

use std::collections::BTreeMap;
use std::time::Duration;

use vetting_probes::inventory::{CollectOptions, Inventory, collect_detailed};
use vetting_probes::{Status, Tool, Verdict, parse_and_judge};

use super::allowlist::loop_disks;
use super::{Artifact, Cancelled, StageContext, StageReport};

/// The limit for each inventory tool.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the stage.
pub fn run(context: &StageContext) -> Result<StageReport, Cancelled> {
    context.log.agent("collecting the inventory");
    let options = CollectOptions {
        sys_root: context.local.sys_root.clone(),
        dev_root: context.local.dev_root.clone(),
        tool_timeout: TOOL_TIMEOUT,
        ..CollectOptions::default()
    };
    let collection = collect_detailed(&options);
    context.check_cancelled()?;
    let mut inventory = collection.inventory;
    add_loop_devices(context, &mut inventory);

    let mut artifacts = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for raw in &collection.raw_outputs {
        context.log.agent(format!(
            "{}: {} ({} bytes of output)",
            raw.command_line,
            raw.status,
            raw.stdout.len()
        ));
        for line in String::from_utf8_lossy(&raw.stderr).lines() {
            if !line.trim().is_empty() {
                context
                    .log
                    .emit_blocking(vetting_probes::protocol::LogStream::Stderr, line);
            }
        }
        let base = super::artifact_name(&raw.tool);
        let index = names.entry(base.clone()).or_insert(0);
        *index += 1;
        let name = if *index == 1 {
            format!("inventory-{base}.out")
        } else {
            format!("inventory-{base}-{index}.out")
        };
        // Tagged with the tool only when its parser reads it, so the
        // orchestrator's re-judging has something to read.
        let tool = Tool::from_name(&raw.tool)
            .filter(|tool| parse_and_judge(*tool, &raw.stdout, &context.thresholds).is_ok());
        let body = if tool.is_some() {
            raw.stdout.clone()
        } else {
            super::join_streams(&raw.stdout, &raw.stderr)
        };
        artifacts.push(Artifact::new(&name, tool, None, body));
    }

    let verdict = judge(&inventory);
    for reason in &verdict.reasons {
        context
            .log
            .agent(format!("{}: {}", reason.status, reason.message));
    }
    let json = serde_json::to_value(&inventory).ok();
    if let Ok(pretty) = serde_json::to_vec_pretty(&inventory) {
        artifacts.push(Artifact::new("inventory.json", None, None, pretty));
    }
    let mut report = StageReport::from_verdict(verdict).with_artifacts(artifacts);
    report.inventory = json;
    Ok(report)
}

/// Lists the attached loop devices as disks when the agent may use them.
pub fn add_loop_devices(context: &StageContext, inventory: &mut Inventory) {
    if !context.local.disks.allow_loop_devices {
        return;
    }
    for disk in loop_disks(&context.local.sys_root, &context.local.disks) {
        if inventory.disks.iter().all(|known| known.name != disk.name) {
            context.log.agent(format!(
                "listing loop device {} ({} bytes) as a disk (--allow-loop-devices)",
                disk.name, disk.size_bytes
            ));
            inventory.disks.push(disk);
        }
    }
}

/// Passes when the inventory holds something usable; what could not be
/// read is listed as information (SpecValidate judges the parts).
pub fn judge(inventory: &Inventory) -> Verdict {
    let usable = inventory.cpus.threads > 0 || inventory.memory.total_bytes > 0;
    if !usable {
        let mut verdict = Verdict::fail("the inventory found neither CPUs nor memory");
        for missing in &inventory.missing {
            verdict.add(
                Status::Pass,
                format!("not read: {}: {}", missing.what, missing.why),
            );
        }
        return verdict;
    }
    let mut verdict = Verdict::pass();
    verdict.add(
        Status::Pass,
        format!(
            "{} CPU thread(s), {} bytes of memory, {} disk(s), {} NIC(s), {} GPU(s), {} PSU(s)",
            inventory.cpus.threads,
            inventory.memory.total_bytes,
            inventory.disks.len(),
            inventory.nics.len(),
            inventory.gpus.len(),
            inventory.psus.len()
        ),
    );
    for missing in &inventory.missing {
        verdict.add(
            Status::Pass,
            format!("not read: {}: {}", missing.what, missing.why),
        );
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inventory_without_cpus_or_memory_fails() {
        let empty = Inventory::empty(chrono::Utc::now());
        assert_eq!(judge(&empty).status, Status::Fail);
        let mut usable = Inventory::empty(chrono::Utc::now());
        usable.cpus.threads = 4;
        usable.add_missing("dmi", "no SMBIOS tables");
        let verdict = judge(&usable);
        assert_eq!(verdict.status, Status::Pass);
        assert!(
            verdict
                .messages(Status::Pass)
                .any(|m| m.contains("no SMBIOS"))
        );
    }
}
