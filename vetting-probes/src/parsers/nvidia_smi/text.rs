//! `nvidia-smi -q` text into a [`Snapshot`]: the same facts as the XML,
//! under the human labels (`Product Name`, `Clocks Event Reasons`,
//! `Remapped Rows : N/A` as a scalar in MIG mode, nested power limits on
//! Windows, ...).

use std::collections::BTreeMap;

use crate::ParseError;

use super::tree::{Node, leading_count, read_query_text, yes_no};
use super::xml::sum;
use super::{
    EccErrors, Gpu, MemoryRepair, MigDevice, PcieLink, RemappedRows, RetiredPageCounts, Snapshot,
    SourceFormat, TOOL, any_flag, canonical_reason,
};

pub(super) fn parse(text: &str) -> Result<Snapshot, ParseError> {
    let root = read_query_text(text);
    let driver_version = root
        .text_any(&[&["Driver Version"], &["KMD Version"]])
        .and_then(|value| value.split_whitespace().next())
        .map(str::to_string);
    let attached_gpus = root
        .count(&["Attached GPUs"])
        .and_then(|count| u32::try_from(count).ok());
    let gpu_nodes: Vec<&Node> = root
        .children
        .iter()
        .filter(|node| {
            node.value.is_none() && node.name.starts_with("GPU ") && !node.children.is_empty()
        })
        .collect();
    if gpu_nodes.is_empty() && attached_gpus.is_none() {
        return Err(ParseError::format(
            TOOL,
            "nvidia-smi -q text without `Attached GPUs` or GPU blocks",
        ));
    }
    let gpus = gpu_nodes
        .iter()
        .enumerate()
        .map(|(index, node)| Gpu {
            index: u32::try_from(index).ok(),
            ..gpu_from_text(node, driver_version.as_deref())
        })
        .collect();
    Ok(Snapshot {
        label: String::new(),
        source: SourceFormat::QueryText,
        phase: None,
        driver_version,
        attached_gpus,
        gpus,
        duplicate_rows: Vec::new(),
        later_samples: Vec::new(),
    })
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_string)
}

fn as_u32(value: Option<f64>) -> Option<u32> {
    value
        .filter(|value| *value >= 0.0 && *value <= f64::from(u32::MAX))
        .map(|value| value as u32)
}

fn gpu_from_text(gpu: &Node, driver_version: Option<&str>) -> Gpu {
    let bus_from_heading = gpu.name.strip_prefix("GPU ").map(str::trim);
    let link = gpu.path(&["PCI", "GPU Link Info"]);
    let link_number = |path: &[&str]| link.and_then(|link| link.number(path));
    let power = gpu
        .child("GPU Power Readings")
        .or_else(|| gpu.child("Power Readings"));
    let power_number = |name: &str| {
        power
            .and_then(|power| power.find(name))
            .and_then(|node| node.value.as_deref())
            .and_then(super::tree::meaningful)
            .and_then(super::tree::leading_number)
    };
    Gpu {
        index: None,
        name: owned(gpu.text(&["Product Name"])),
        serial: owned(gpu.text(&["Serial Number"])),
        uuid: owned(gpu.text(&["GPU UUID"])),
        pci_bus_id: owned(gpu.text(&["PCI", "Bus Id"]).or(bus_from_heading)),
        memory_total_mib: gpu.count(&["FB Memory Usage", "Total"]),
        driver_version: driver_version.map(str::to_string),
        driver_model: owned(gpu.text(&["Driver Model", "Current"])),
        performance_state: owned(gpu.text(&["Performance State"])),
        pcie: PcieLink {
            gen_current: as_u32(link_number(&["PCIe Generation", "Current"])),
            gen_max: as_u32(link_number(&["PCIe Generation", "Max"])),
            width_current: as_u32(link_number(&["Link Width", "Current"])),
            width_max: as_u32(link_number(&["Link Width", "Max"])),
        },
        temperature_c: gpu.number(&["Temperature", "GPU Current Temp"]),
        temperature_slowdown_c: gpu.number(&["Temperature", "GPU Slowdown Temp"]),
        temperature_tlimit_margin_c: gpu.number_any(&[
            &["Temperature", "GPU T.Limit Temp"],
            &["Temperature", "GPU Current T.Limit Temp"],
        ]),
        power_draw_w: power_number("Power Draw")
            .or_else(|| power_number("Instantaneous Power Draw"))
            .or_else(|| power_number("Average Power Draw")),
        power_limit_w: power_number("Enforced Power Limit")
            .or_else(|| power_number("Current Power Limit"))
            .or_else(|| power_number("Power Limit")),
        ecc_mode: owned(gpu.text(&["ECC Mode", "Current"])),
        ecc_errors: ecc_errors(gpu),
        retired_pages: RetiredPageCounts {
            single_bit: retired_count(gpu, "Single Bit ECC"),
            double_bit: retired_count(gpu, "Double Bit ECC"),
            pending: any_flag([
                gpu.text(&["Retired Pages", "Pending Page Blacklist"])
                    .and_then(yes_no),
                gpu.text(&["Retired Pages", "Pending Page Retirement"])
                    .and_then(yes_no),
                gpu.text(&["Retired Pages", "Pending"]).and_then(yes_no),
            ]),
        },
        remapped_rows: RemappedRows {
            correctable: gpu.count(&["Remapped Rows", "Correctable Error"]),
            uncorrectable: gpu.count(&["Remapped Rows", "Uncorrectable Error"]),
            pending: gpu.text(&["Remapped Rows", "Pending"]).and_then(yes_no),
            failure: gpu
                .text(&["Remapped Rows", "Remapping Failure Occurred"])
                .and_then(yes_no),
        },
        memory_repair: MemoryRepair {
            channel_repair_pending: gpu
                .text(&["ECC Errors", "Channel Repair Pending"])
                .and_then(yes_no),
            tpc_repair_pending: gpu
                .text(&["ECC Errors", "TPC Repair Pending"])
                .and_then(yes_no),
            unrepairable_memory: gpu
                .text(&["ECC Errors", "Unrepairable Memory"])
                .and_then(yes_no),
        },
        clock_reasons_active: active_clock_reasons(gpu),
        clock_reason_counters_us: clock_reason_counters(gpu),
        mig_mode: owned(gpu.text(&["MIG Mode", "Current"])),
        mig_devices: gpu.children_named("MIG Device").map(mig_device).collect(),
        recovery_action: owned(gpu.text(&["GPU Recovery Action"])),
        timestamp: None,
    }
}

/// `Single Bit ECC : 0` directly, or (older drivers) a block whose count is
/// under `Retired Pages`.
fn retired_count(gpu: &Node, name: &str) -> Option<u64> {
    let node = gpu.path(&["Retired Pages", name])?;
    node.value
        .as_deref()
        .and_then(super::tree::meaningful)
        .and_then(leading_count)
        .or_else(|| node.count(&["Retired Pages"]))
}

fn ecc_errors(gpu: &Node) -> EccErrors {
    let counts = |scope: &str, corrected: bool| -> Option<u64> {
        let node = gpu.path(&["ECC Errors", scope])?;
        if node.child("Single Bit").is_some() || node.child("Double Bit").is_some() {
            let block = if corrected {
                "Single Bit"
            } else {
                "Double Bit"
            };
            return node.count(&[block, "Total"]);
        }
        let names: &[&str] = if corrected {
            &["SRAM Correctable", "DRAM Correctable"]
        } else {
            &[
                "SRAM Uncorrectable",
                "SRAM Uncorrectable Parity",
                "SRAM Uncorrectable SEC-DED",
                "DRAM Uncorrectable",
            ]
        };
        sum(names.iter().map(|name| node.count(&[name])))
    };
    EccErrors {
        corrected_volatile: counts("Volatile", true),
        corrected_aggregate: counts("Aggregate", true),
        uncorrected_volatile: counts("Volatile", false),
        uncorrected_aggregate: counts("Aggregate", false),
    }
}

fn reason_block(gpu: &Node) -> Option<&Node> {
    gpu.child("Clocks Event Reasons")
        .or_else(|| gpu.child("Clocks Throttle Reasons"))
        .or_else(|| gpu.child("Clocks Reasons"))
}

/// Reasons nest (`HW Slowdown` holds `HW Thermal Slowdown`): walk them all.
fn active_clock_reasons(gpu: &Node) -> Vec<String> {
    fn walk(node: &Node, active: &mut Vec<String>) {
        for reason in &node.children {
            if reason
                .value
                .as_deref()
                .is_some_and(|value| value.trim().eq_ignore_ascii_case("active"))
            {
                active.push(canonical_reason(&reason.name));
            }
            walk(reason, active);
        }
    }
    let mut active = Vec::new();
    if let Some(block) = reason_block(gpu) {
        walk(block, &mut active);
    }
    active
}

fn clock_reason_counters(gpu: &Node) -> BTreeMap<String, u64> {
    let block = gpu
        .child("Clocks Event Reasons Counters")
        .or_else(|| gpu.child("Clocks Throttle Reasons Counters"));
    block
        .map(|block| {
            block
                .children
                .iter()
                .filter_map(|counter| {
                    let value = counter.value.as_deref().and_then(leading_count)?;
                    Some((canonical_reason(&counter.name), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn mig_device(device: &Node) -> MigDevice {
    MigDevice {
        index: as_u32(device.number(&["Index"])),
        gpu_instance_id: as_u32(device.number(&["GPU Instance ID"])),
        compute_instance_id: as_u32(device.number(&["Compute Instance ID"])),
        memory_total_mib: device
            .count(&["Shared FB Memory Usage", "Total"])
            .or_else(|| device.count(&["FB Memory Usage", "Total"])),
        sram_uncorrectable: device.count(&["ECC Errors", "Volatile", "SRAM Uncorrectable"]),
    }
}
