//! `nvidia-smi -q -x` XML into [`Snapshot`]s, across DTD versions: old
//! `clocks_throttle_reasons` and new `clocks_event_reasons`, the
//! `single_bit`/`double_bit` ECC layout and the SRAM/DRAM one, retired pages
//! and remapped rows, `power_readings` and `gpu_power_readings`, MIG devices,
//! with or without a DOCTYPE.

use std::collections::BTreeMap;

use crate::ParseError;

use super::tree::{Node, leading_count, read_xml, yes_no};
use super::{
    EccErrors, Gpu, MemoryRepair, MigDevice, PcieLink, RemappedRows, RetiredPageCounts, Snapshot,
    SourceFormat, TOOL,
};

pub(super) fn parse(text: &str) -> Result<Snapshot, ParseError> {
    let root = read_xml(text)?;
    let log = root
        .child("nvidia_smi_log")
        .ok_or_else(|| ParseError::format(TOOL, "XML root is not <nvidia_smi_log>"))?;
    let driver_version = log.text(&["driver_version"]).map(str::to_string);
    let gpus = log
        .children_named("gpu")
        .enumerate()
        .map(|(index, gpu)| Gpu {
            index: u32::try_from(index).ok(),
            ..gpu_from_xml(gpu, driver_version.as_deref())
        })
        .collect();
    Ok(Snapshot {
        label: String::new(),
        source: SourceFormat::Xml,
        phase: None,
        attached_gpus: log
            .count(&["attached_gpus"])
            .and_then(|count| u32::try_from(count).ok()),
        driver_version,
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

fn as_u64(value: Option<f64>) -> Option<u64> {
    value
        .filter(|value| *value >= 0.0)
        .map(|value| value as u64)
}

fn gpu_from_xml(gpu: &Node, driver_version: Option<&str>) -> Gpu {
    Gpu {
        index: None,
        name: owned(gpu.text(&["product_name"])),
        serial: owned(gpu.text(&["serial"])),
        uuid: owned(gpu.text(&["uuid"])),
        pci_bus_id: owned(gpu.text(&["pci", "pci_bus_id"])),
        memory_total_mib: gpu.count(&["fb_memory_usage", "total"]),
        driver_version: driver_version.map(str::to_string),
        driver_model: owned(gpu.text(&["driver_model", "current_dm"])),
        performance_state: owned(gpu.text(&["performance_state"])),
        pcie: PcieLink {
            gen_current: as_u32(gpu.number(&[
                "pci",
                "pci_gpu_link_info",
                "pcie_gen",
                "current_link_gen",
            ])),
            gen_max: as_u32(gpu.number(&["pci", "pci_gpu_link_info", "pcie_gen", "max_link_gen"])),
            width_current: as_u32(gpu.number(&[
                "pci",
                "pci_gpu_link_info",
                "link_widths",
                "current_link_width",
            ])),
            width_max: as_u32(gpu.number(&[
                "pci",
                "pci_gpu_link_info",
                "link_widths",
                "max_link_width",
            ])),
        },
        temperature_c: gpu.number(&["temperature", "gpu_temp"]),
        temperature_slowdown_c: gpu.number(&["temperature", "gpu_temp_slow_threshold"]),
        temperature_tlimit_margin_c: gpu.number(&["temperature", "gpu_temp_tlimit"]),
        power_draw_w: gpu.number_any(&[
            &["power_readings", "power_draw"],
            &["gpu_power_readings", "power_draw"],
            &["gpu_power_readings", "instant_power_draw"],
            &["gpu_power_readings", "average_power_draw"],
        ]),
        power_limit_w: gpu.number_any(&[
            &["power_readings", "enforced_power_limit"],
            &["power_readings", "power_limit"],
            &["gpu_power_readings", "current_power_limit"],
            &["gpu_power_readings", "enforced_power_limit"],
        ]),
        ecc_mode: owned(gpu.text(&["ecc_mode", "current_ecc"])),
        ecc_errors: ecc_errors(gpu),
        retired_pages: RetiredPageCounts {
            single_bit: gpu.count(&[
                "retired_pages",
                "multiple_single_bit_retirement",
                "retired_count",
            ]),
            double_bit: gpu.count(&["retired_pages", "double_bit_retirement", "retired_count"]),
            pending: super::any_flag([
                gpu.text(&["retired_pages", "pending_retirement"])
                    .and_then(yes_no),
                gpu.text(&["retired_pages", "pending_blacklist"])
                    .and_then(yes_no),
            ]),
        },
        remapped_rows: RemappedRows {
            correctable: gpu.count(&["remapped_rows", "remapped_row_corr"]),
            uncorrectable: gpu.count(&["remapped_rows", "remapped_row_unc"]),
            pending: gpu
                .text(&["remapped_rows", "remapped_row_pending"])
                .and_then(yes_no),
            failure: gpu
                .text(&["remapped_rows", "remapped_row_failure"])
                .and_then(yes_no),
        },
        memory_repair: MemoryRepair {
            channel_repair_pending: gpu
                .text(&["ecc_errors", "channel_repair_pending"])
                .and_then(yes_no),
            tpc_repair_pending: gpu
                .text(&["ecc_errors", "tpc_repair_pending"])
                .and_then(yes_no),
            unrepairable_memory: gpu
                .text(&["ecc_errors", "unrepairable_memory"])
                .and_then(yes_no),
        },
        clock_reasons_active: active_clock_reasons(gpu),
        clock_reason_counters_us: clock_reason_counters(gpu),
        mig_mode: owned(gpu.text(&["mig_mode", "current_mig"])),
        mig_devices: gpu
            .child("mig_devices")
            .map(|devices| {
                devices
                    .children_named("mig_device")
                    .map(mig_device)
                    .collect()
            })
            .unwrap_or_default(),
        recovery_action: owned(gpu.text(&["gpu_recovery_action"])),
        timestamp: None,
    }
}

/// Sums the uncorrected/corrected counts of either ECC layout.
fn ecc_errors(gpu: &Node) -> EccErrors {
    let counts = |scope: &str, corrected: bool| -> Option<u64> {
        let node = gpu.path(&["ecc_errors", scope])?;
        if node.child("single_bit").is_some() || node.child("double_bit").is_some() {
            let block = if corrected {
                "single_bit"
            } else {
                "double_bit"
            };
            return node.count(&[block, "total"]);
        }
        let names: &[&str] = if corrected {
            &["sram_correctable", "dram_correctable"]
        } else {
            &[
                "sram_uncorrectable",
                "sram_uncorrectable_parity",
                "sram_uncorrectable_secded",
                "dram_uncorrectable",
            ]
        };
        sum(names.iter().map(|name| node.count(&[name])))
    };
    EccErrors {
        corrected_volatile: counts("volatile", true),
        corrected_aggregate: counts("aggregate", true),
        uncorrected_volatile: counts("volatile", false),
        uncorrected_aggregate: counts("aggregate", false),
    }
}

/// The sum of the values present; `None` when none is.
pub(super) fn sum(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values
        .flatten()
        .fold(None, |total, value| Some(total.unwrap_or(0) + value))
}

fn active_clock_reasons(gpu: &Node) -> Vec<String> {
    let block = gpu
        .child("clocks_event_reasons")
        .or_else(|| gpu.child("clocks_throttle_reasons"));
    let Some(block) = block else {
        return Vec::new();
    };
    block
        .children
        .iter()
        .filter(|reason| {
            reason
                .value
                .as_deref()
                .is_some_and(|value| value.trim().eq_ignore_ascii_case("active"))
        })
        .map(|reason| normalize_reason(&reason.name))
        .collect()
}

/// `clocks_event_reason_hw_slowdown` / `clocks_throttle_reason_hw_slowdown`
/// → `hw_slowdown`.
fn normalize_reason(name: &str) -> String {
    let bare = name
        .trim_start_matches("clocks_event_reasons_counters_")
        .trim_start_matches("clocks_throttle_reasons_counters_")
        .trim_start_matches("clocks_event_reason_")
        .trim_start_matches("clocks_throttle_reason_");
    super::canonical_reason(bare)
}

fn clock_reason_counters(gpu: &Node) -> BTreeMap<String, u64> {
    let block = gpu
        .child("clocks_event_reasons_counters")
        .or_else(|| gpu.child("clocks_throttle_reasons_counters"));
    block
        .map(|block| {
            block
                .children
                .iter()
                .filter_map(|counter| {
                    let value = counter.value.as_deref().and_then(leading_count)?;
                    Some((normalize_reason(&counter.name), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn mig_device(device: &Node) -> MigDevice {
    MigDevice {
        index: as_u32(device.number(&["index"])),
        gpu_instance_id: as_u32(device.number(&["gpu_instance_id"])),
        compute_instance_id: as_u32(device.number(&["compute_instance_id"])),
        memory_total_mib: as_u64(device.number(&["fb_memory_usage", "total"])),
        sram_uncorrectable: device.count(&[
            "ecc_error_count",
            "volatile_count",
            "sram_uncorrectable",
        ]),
    }
}
