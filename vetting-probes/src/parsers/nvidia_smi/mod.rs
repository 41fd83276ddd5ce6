//! Parser and verdict rules for `nvidia-smi` output: `-q -x` XML (driver
//! generations with old and new element names), `-q` text,
//! `--query-gpu=... --format=csv` (with or without units), and captures that
//! hold several of these under `####` banners.
//!
//! Rules (design.md "Stages" and "Verdict notes"): fail on pending retired
//! pages, pending or failed row remapping, uncorrectable ECC errors, XID
//! errors, a pending GPU recovery action, or an *active* HW slowdown /
//! HW thermal / HW power brake / SW thermal clock reason (the counters are
//! cumulative since boot and are not judged). A PCIe link narrower than its
//! maximum warns, and fails where an expected width is configured and not
//! met. A lower PCIe generation is judged only under load (idle GPUs
//! downshift). `T.Limit` temperatures are headroom margins, not limits.

mod csv;
mod text;
mod tree;
mod xml;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::text as utf8_text;
use crate::sections::{self, Section};
use crate::thresholds::GpuThresholds;
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

pub(crate) const TOOL: &str = "nvidia-smi";

/// Which kind of `nvidia-smi` output a part was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// `nvidia-smi -q -x`.
    Xml,
    /// `nvidia-smi -q`.
    QueryText,
    /// `nvidia-smi --query-gpu=... --format=csv`.
    QueryCsv,
    /// `nvidia-smi --query-retired-pages=... --format=csv`.
    RetiredPagesCsv,
    /// Several outputs under `####` banners.
    Capture,
}

/// Everything read from one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NvidiaSmiOutput {
    pub format: SourceFormat,
    /// One per GPU-describing output (one for a plain file, several for a
    /// capture: idle and load, `-q` and `--query-gpu`).
    pub snapshots: Vec<Snapshot>,
    /// Real rows of `--query-retired-pages` (placeholder rows with no
    /// address, printed by GPUs that retire nothing, are left out).
    pub retired_pages: Vec<RetiredPage>,
    /// How many placeholder `--query-retired-pages` rows were left out.
    pub retired_page_placeholder_rows: usize,
    /// `NVRM: Xid` kernel messages found in the input.
    pub xid_errors: Vec<XidError>,
    /// Capture sections not used for the verdict (help texts, tables, ...).
    pub unjudged_sections: Vec<String>,
}

/// The GPUs as one output described them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Empty for a plain file; the capture heading otherwise
    /// (e.g. `load :: query (-q)`).
    pub label: String,
    pub source: SourceFormat,
    /// `idle` or `load` when the capture heading says so.
    pub phase: Option<String>,
    pub driver_version: Option<String>,
    /// `attached_gpus` as reported (may exceed the GPU blocks present).
    pub attached_gpus: Option<u32>,
    pub gpus: Vec<Gpu>,
    /// CSV rows that repeat another row exactly under a different index
    /// (same PCI bus id): counted once in `gpus`.
    pub duplicate_rows: Vec<DuplicateRow>,
    /// Further CSV rows for a GPU already in `gpus` (a time series), judged
    /// like the first.
    pub later_samples: Vec<Gpu>,
}

/// A CSV row that duplicates an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateRow {
    pub index: Option<u32>,
    pub duplicate_of_index: Option<u32>,
    pub pci_bus_id: Option<String>,
}

/// One GPU, normalized across output formats and driver generations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: Option<u32>,
    pub name: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub pci_bus_id: Option<String>,
    pub memory_total_mib: Option<u64>,
    pub driver_version: Option<String>,
    /// `WDDM`/`TCC` on Windows.
    pub driver_model: Option<String>,
    pub performance_state: Option<String>,
    pub pcie: PcieLink,
    pub temperature_c: Option<f64>,
    /// Absolute slowdown temperature, where the output gives one.
    pub temperature_slowdown_c: Option<f64>,
    /// `T.Limit` headroom: degrees left before the limit (a margin).
    pub temperature_tlimit_margin_c: Option<f64>,
    pub power_draw_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    pub ecc_mode: Option<String>,
    pub ecc_errors: EccErrors,
    pub retired_pages: RetiredPageCounts,
    pub remapped_rows: RemappedRows,
    /// Hopper and later: memory repairs waiting for a reset.
    pub memory_repair: MemoryRepair,
    /// Clock event (throttle) reasons that are active now, normalized
    /// (`gpu_idle`, `sw_power_cap`, `hw_slowdown`, `hw_thermal_slowdown`, ...).
    pub clock_reasons_active: Vec<String>,
    /// Cumulative time each reason held clocks down since boot (µs).
    pub clock_reason_counters_us: BTreeMap<String, u64>,
    pub mig_mode: Option<String>,
    pub mig_devices: Vec<MigDevice>,
    /// `GPU Recovery Action` (`None` when nothing is needed).
    pub recovery_action: Option<String>,
    pub timestamp: Option<String>,
}

/// PCIe link generation and width, current and maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcieLink {
    pub gen_current: Option<u32>,
    pub gen_max: Option<u32>,
    pub width_current: Option<u32>,
    pub width_max: Option<u32>,
}

/// ECC error totals (single-bit/double-bit or SRAM/DRAM layouts summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EccErrors {
    pub corrected_volatile: Option<u64>,
    pub corrected_aggregate: Option<u64>,
    pub uncorrected_volatile: Option<u64>,
    pub uncorrected_aggregate: Option<u64>,
}

/// Retired pages (pre-Ampere GPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredPageCounts {
    pub single_bit: Option<u64>,
    pub double_bit: Option<u64>,
    pub pending: Option<bool>,
}

/// Row remapping (Ampere and later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemappedRows {
    pub correctable: Option<u64>,
    pub uncorrectable: Option<u64>,
    pub pending: Option<bool>,
    pub failure: Option<bool>,
}

/// Memory repair state (`channel_repair_pending`, `tpc_repair_pending`,
/// `unrepairable_memory`, newer drivers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRepair {
    pub channel_repair_pending: Option<bool>,
    pub tpc_repair_pending: Option<bool>,
    pub unrepairable_memory: Option<bool>,
}

/// One MIG instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigDevice {
    pub index: Option<u32>,
    pub gpu_instance_id: Option<u32>,
    pub compute_instance_id: Option<u32>,
    pub memory_total_mib: Option<u64>,
    pub sram_uncorrectable: Option<u64>,
}

/// A real row of `--query-retired-pages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredPage {
    pub pci_bus_id: Option<String>,
    pub address: String,
    pub cause: Option<String>,
}

/// An `NVRM: Xid` kernel message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XidError {
    pub pci: String,
    pub code: u32,
    pub message: String,
}

impl Gpu {
    /// A short name for reasons: `GPU 0 (00000000:01:00.0)`.
    pub fn label(&self) -> String {
        match (self.index, &self.pci_bus_id, &self.uuid) {
            (Some(index), Some(bus), _) => format!("GPU {index} ({bus})"),
            (None, Some(bus), _) => format!("GPU {bus}"),
            (Some(index), None, _) => format!("GPU {index}"),
            (None, None, Some(uuid)) => format!("GPU {uuid}"),
            (None, None, None) => "GPU".to_string(),
        }
    }
}

/// Clock reasons that mean the hardware is being held back by heat or a
/// hardware signal; active ones fail.
const FAILING_CLOCK_REASONS: [&str; 4] = [
    "hw_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
    "sw_thermal_slowdown",
];

/// `Some(true)` when any flag is set, `Some(false)` when at least one is
/// known and none is set, `None` when none is known.
pub(crate) fn any_flag<const N: usize>(flags: [Option<bool>; N]) -> Option<bool> {
    if flags.contains(&Some(true)) {
        Some(true)
    } else if flags.contains(&Some(false)) {
        Some(false)
    } else {
        None
    }
}

/// One name per clock event reason, whatever the output called it
/// (`Idle`, `clocks_throttle_reason_gpu_idle`, `SW Power Capping`, ...).
pub(crate) fn canonical_reason(name: &str) -> String {
    let snake: String = name
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character
            } else {
                '_'
            }
        })
        .collect();
    let canonical = match snake.as_str() {
        "idle" | "gpu_idle" => "gpu_idle",
        "sw_power_cap" | "sw_power_capping" => "sw_power_cap",
        "hw_therm_slowdown" | "hw_thermal_slowdown" => "hw_thermal_slowdown",
        "sw_therm_slowdown" | "sw_thermal_slowdown" => "sw_thermal_slowdown",
        "hw_power_brake" | "hw_power_braking" | "hw_power_brake_slowdown" => {
            "hw_power_brake_slowdown"
        }
        "display_clocks_setting" | "display_clock_setting" => "display_clock_setting",
        other => return other.to_string(),
    };
    canonical.to_string()
}

/// Parses any supported `nvidia-smi` output, detecting its format.
pub fn parse(input: &[u8]) -> Result<NvidiaSmiOutput, ParseError> {
    let text = utf8_text(TOOL, input)?;
    let parts = sections::split(text);
    if parts.len() > 1 || parts.iter().any(|part| !part.title.is_empty()) {
        return parse_capture(&parts);
    }
    let mut output = NvidiaSmiOutput {
        format: SourceFormat::Xml,
        snapshots: Vec::new(),
        retired_pages: Vec::new(),
        retired_page_placeholder_rows: 0,
        xid_errors: find_xid_errors(text),
        unjudged_sections: Vec::new(),
    };
    let format = sniff(text, None).ok_or_else(|| {
        ParseError::format(
            TOOL,
            "not nvidia-smi output (expected -q -x XML, -q text or --format=csv)",
        )
    })?;
    output.format = format;
    add_part(&mut output, format, text, String::new(), None)?;
    Ok(output)
}

/// Detects the format of one part, from its command when known, else from
/// its content.
fn sniff(body: &str, command: Option<&str>) -> Option<SourceFormat> {
    let trimmed = body.trim_start();
    if let Some(command) = command {
        if command.contains("--query-retired-pages") {
            return Some(SourceFormat::RetiredPagesCsv);
        }
        if command.contains("--query-gpu") {
            return Some(SourceFormat::QueryCsv);
        }
        let words: Vec<&str> = command.split_whitespace().collect();
        let is_query = words.contains(&"-q") || words.contains(&"--query");
        if is_query && (words.contains(&"-x") || words.contains(&"--xml-format")) {
            return Some(SourceFormat::Xml);
        }
        if is_query {
            return Some(SourceFormat::QueryText);
        }
        return None;
    }
    if trimmed.starts_with('<') {
        return Some(SourceFormat::Xml);
    }
    if trimmed.contains("NVSMI LOG") {
        return Some(SourceFormat::QueryText);
    }
    let header = trimmed.lines().next()?;
    if header.contains("retired_pages.address") {
        return Some(SourceFormat::RetiredPagesCsv);
    }
    csv::looks_like_query_header(header).then_some(SourceFormat::QueryCsv)
}

fn add_part(
    output: &mut NvidiaSmiOutput,
    format: SourceFormat,
    body: &str,
    label: String,
    phase: Option<String>,
) -> Result<(), ParseError> {
    match format {
        SourceFormat::Xml => {
            let mut snapshot = xml::parse(body)?;
            snapshot.label = label;
            snapshot.phase = phase;
            output.snapshots.push(snapshot);
        }
        SourceFormat::QueryText => {
            let mut snapshot = text::parse(body)?;
            snapshot.label = label;
            snapshot.phase = phase;
            output.snapshots.push(snapshot);
        }
        SourceFormat::QueryCsv => {
            let mut snapshot = csv::parse_query_gpu(body)?;
            snapshot.label = label;
            snapshot.phase = phase;
            output.snapshots.push(snapshot);
        }
        SourceFormat::RetiredPagesCsv => {
            let (pages, placeholders) = csv::parse_retired_pages(body)?;
            output.retired_pages.extend(pages);
            output.retired_page_placeholder_rows += placeholders;
        }
        SourceFormat::Capture => {
            return Err(ParseError::format(TOOL, "nested capture"));
        }
    }
    Ok(())
}

fn parse_capture(parts: &[Section]) -> Result<NvidiaSmiOutput, ParseError> {
    let mut output = NvidiaSmiOutput {
        format: SourceFormat::Capture,
        snapshots: Vec::new(),
        retired_pages: Vec::new(),
        retired_page_placeholder_rows: 0,
        xid_errors: Vec::new(),
        unjudged_sections: Vec::new(),
    };
    for part in parts {
        output.xid_errors.extend(find_xid_errors(&part.body));
        let heading = part.heading().to_string();
        let format = match part.command() {
            Some(command) if command.starts_with("nvidia-smi") => sniff(&part.body, Some(command)),
            Some(_) => None,
            None if heading.contains("query-gpu field list") || heading.contains("capture") => None,
            None => sniff(&part.body, None),
        };
        let Some(format) = format else {
            output.unjudged_sections.push(heading);
            continue;
        };
        if part.body.trim().is_empty() {
            output.unjudged_sections.push(heading);
            continue;
        }
        let phase = heading
            .split_once("::")
            .map(|(phase, _)| phase.trim().to_string())
            .filter(|phase| phase == "idle" || phase == "load");
        add_part(&mut output, format, &part.body, heading, phase)?;
    }
    if output.snapshots.is_empty() {
        return Err(ParseError::format(
            TOOL,
            "capture holds no nvidia-smi -q, -q -x or --query-gpu output",
        ));
    }
    Ok(output)
}

/// Finds `NVRM: Xid (PCI:0000:01:00): 79, pid=..., ...` kernel messages.
fn find_xid_errors(text: &str) -> Vec<XidError> {
    let mut errors = Vec::new();
    for line in text.lines() {
        let Some(position) = line.find("NVRM: Xid (") else {
            continue;
        };
        let rest = &line[position + "NVRM: Xid (".len()..];
        let Some((pci, after)) = rest.split_once("):") else {
            continue;
        };
        let after = after.trim_start();
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        let Ok(code) = digits.parse::<u32>() else {
            continue;
        };
        errors.push(XidError {
            pci: pci.trim_start_matches("PCI:").to_string(),
            code,
            message: after[digits.len()..]
                .trim_start_matches(',')
                .trim()
                .to_string(),
        });
    }
    errors
}

/// Judges every GPU of every snapshot.
pub fn verdict(output: &NvidiaSmiOutput, thresholds: &Thresholds) -> Verdict {
    let limits = &thresholds.gpu;
    let mut verdict = Verdict::pass();
    for snapshot in &output.snapshots {
        let prefix = if snapshot.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", snapshot.label)
        };
        if let Some(attached) = snapshot.attached_gpus
            && usize::try_from(attached).is_ok_and(|attached| attached != snapshot.gpus.len())
        {
            verdict.add(
                Status::Pass,
                format!(
                    "{prefix}attached_gpus {attached} but {} GPU block(s) in the output; judged what is present",
                    snapshot.gpus.len()
                ),
            );
        }
        for duplicate in &snapshot.duplicate_rows {
            verdict.add(
                Status::Pass,
                format!(
                    "{prefix}row index {} repeats index {} (pci.bus_id {}); counted once",
                    show(duplicate.index),
                    show(duplicate.duplicate_of_index),
                    duplicate.pci_bus_id.as_deref().unwrap_or("?")
                ),
            );
        }
        // A capture section says whether it was taken at idle or under load;
        // elsewhere the caller's `under_load` decides.
        let snapshot_limits = GpuThresholds {
            under_load: match snapshot.phase.as_deref() {
                Some("load") => true,
                Some("idle") => false,
                _ => limits.under_load,
            },
            ..limits.clone()
        };
        for gpu in snapshot.gpus.iter().chain(&snapshot.later_samples) {
            judge_gpu(&mut verdict, &prefix, gpu, &snapshot_limits);
        }
    }
    for page in &output.retired_pages {
        verdict.add(
            Status::Pass,
            format!(
                "retired page {} on {} (cause {}): recorded, not judged",
                page.address,
                page.pci_bus_id.as_deref().unwrap_or("?"),
                page.cause.as_deref().unwrap_or("?")
            ),
        );
    }
    for xid in &output.xid_errors {
        verdict.fail_with(format!(
            "XID {} on PCI {}: {} (threshold: no XID errors)",
            xid.code, xid.pci, xid.message
        ));
    }
    verdict
}

fn show(value: Option<u32>) -> String {
    value.map_or_else(|| "?".to_string(), |value| value.to_string())
}

fn judge_gpu(verdict: &mut Verdict, prefix: &str, gpu: &Gpu, limits: &GpuThresholds) {
    let who = format!("{prefix}{}", gpu.label());
    if gpu.retired_pages.pending == Some(true) {
        verdict.fail_with(format!(
            "{who}: retired pages pending = Yes (threshold: no pending page retirement)"
        ));
    }
    if gpu.remapped_rows.pending == Some(true) {
        verdict.fail_with(format!(
            "{who}: remapped rows pending = Yes (threshold: no pending row remapping)"
        ));
    }
    if gpu.remapped_rows.failure == Some(true) {
        verdict.fail_with(format!(
            "{who}: row remapping failure = Yes (threshold: no remapping failure)"
        ));
    }
    for (what, flag) in [
        (
            "ECC channel repair pending",
            gpu.memory_repair.channel_repair_pending,
        ),
        ("TPC repair pending", gpu.memory_repair.tpc_repair_pending),
        ("unrepairable memory", gpu.memory_repair.unrepairable_memory),
    ] {
        if flag == Some(true) {
            verdict.fail_with(format!("{who}: {what} = Yes (threshold: No)"));
        }
    }
    for (which, count) in [
        ("volatile", gpu.ecc_errors.uncorrected_volatile),
        ("aggregate", gpu.ecc_errors.uncorrected_aggregate),
    ] {
        if let Some(count) = count
            && count > limits.ecc_uncorrectable_fail_above
        {
            verdict.fail_with(format!(
                "{who}: ECC uncorrected errors ({which}) {count} > {}",
                limits.ecc_uncorrectable_fail_above
            ));
        }
    }
    for mig in &gpu.mig_devices {
        if let Some(count) = mig.sram_uncorrectable
            && count > limits.ecc_uncorrectable_fail_above
        {
            verdict.fail_with(format!(
                "{who}: MIG device {} SRAM uncorrectable errors {count} > {}",
                show(mig.index),
                limits.ecc_uncorrectable_fail_above
            ));
        }
    }
    for reason in &gpu.clock_reasons_active {
        if FAILING_CLOCK_REASONS.contains(&reason.as_str()) {
            verdict.fail_with(format!(
                "{who}: clock event reason {reason} is Active (threshold: HW slowdown and thermal reasons must not be active)"
            ));
        }
    }
    if let Some(action) = &gpu.recovery_action {
        verdict.fail_with(format!(
            "{who}: GPU recovery action {action} (threshold: None)"
        ));
    }
    judge_pcie(verdict, &who, gpu.pcie, limits);
    if let Some(temperature) = gpu.temperature_c
        && temperature >= limits.temperature_warn_c
    {
        verdict.warn(format!(
            "{who}: temperature {temperature} °C >= {} °C",
            limits.temperature_warn_c
        ));
    }
    let retired =
        gpu.retired_pages.single_bit.unwrap_or(0) + gpu.retired_pages.double_bit.unwrap_or(0);
    if retired > 0 {
        verdict.add(
            Status::Pass,
            format!(
                "{who}: {retired} retired page(s) ({} single-bit, {} double-bit), none pending: recorded, not judged",
                gpu.retired_pages.single_bit.unwrap_or(0),
                gpu.retired_pages.double_bit.unwrap_or(0)
            ),
        );
    }
    if let Some(rows) = gpu.remapped_rows.uncorrectable
        && rows > 0
    {
        verdict.add(
            Status::Pass,
            format!("{who}: {rows} row(s) remapped for uncorrectable errors, none pending: recorded, not judged"),
        );
    }
}

fn judge_pcie(verdict: &mut Verdict, who: &str, link: PcieLink, limits: &GpuThresholds) {
    match (
        link.width_current,
        limits.expected_pcie_width,
        link.width_max,
    ) {
        (Some(current), Some(expected), _) if current < expected => {
            verdict.fail_with(format!(
                "{who}: PCIe link width x{current} below expected x{expected} (max x{})",
                show(link.width_max)
            ));
        }
        (Some(current), Some(expected), Some(max)) if current < max => {
            verdict.add(
                Status::Pass,
                format!(
                    "{who}: PCIe link width x{current} of max x{max} meets expected x{expected}"
                ),
            );
        }
        (Some(current), None, Some(max)) if current < max => {
            verdict.warn(format!(
                "{who}: PCIe link width x{current} below max x{max} (width {current} of {max})"
            ));
        }
        _ => {}
    }
    if let (Some(current), Some(max)) = (link.gen_current, link.gen_max)
        && current < max
    {
        if limits.under_load {
            verdict.fail_with(format!(
                "{who}: PCIe generation {current} below max {max} under load"
            ));
        } else {
            verdict.add(
                Status::Pass,
                format!("{who}: PCIe generation {current} of max {max} at idle: not judged (idle links downshift)"),
            );
        }
    }
}

/// Parses and judges `nvidia-smi` output.
pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let output = parse(input)?;
    let verdict = verdict(&output, thresholds);
    ToolReport::new(Tool::NvidiaSmi, &output, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xid_lines_are_found() {
        let errors = find_xid_errors(
            "[ 12.3] NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.\n",
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, 79);
        assert_eq!(errors[0].pci, "0000:3b:00");
        assert!(errors[0].message.contains("fallen off the bus"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"hello world").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
    }
}
