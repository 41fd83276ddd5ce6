//! Parser and verdict rules for `nvme smart-log -o json` (nvme-cli), and the
//! NVMe health type and rules that `smartctl`'s NVMe output shares.
//!
//! nvme-cli's JSON keys (`json_smart_log()` in nvme-cli's
//! `nvme-print-json.c`): `critical_warning` (an integer, or with `-H` an
//! object whose `value` is the integer), `temperature` in kelvin,
//! `avail_spare`, `spare_thresh`, `percent_used`, and the 128-bit counters
//! `data_units_read`, `media_errors`, `num_err_log_entries`... which
//! nvme-cli 1.x prints as floats, 2.0–2.3 as decimal strings and later
//! versions as plain numbers. All three are accepted. smartctl's names for
//! the same fields (`available_spare`, `percentage_used`, temperature in
//! °C) are accepted too.
//!
//! Rules (design.md, EXPECTED.md): `critical_warning` ≠ 0, `media_errors`
//! above the threshold, or available spare below its threshold fail;
//! `percentage_used` at or above the warn threshold warns (at or above the
//! fail threshold fails); `num_err_log_entries` alone is not a failure.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::json;
use crate::parsers::shared::{judge_at_or_above, lenient_u64};
use crate::thresholds::NvmeThresholds;
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "nvme";

/// Kelvin offset used by the NVMe health log's temperatures.
const KELVIN_OFFSET: i64 = 273;

/// The NVMe SMART / health information log (log page 02h), normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeHealth {
    /// Bit mask; 0 means no critical warning.
    pub critical_warning: u64,
    /// Composite temperature in °C.
    pub temperature_c: Option<i64>,
    /// Remaining spare capacity, percent.
    pub available_spare: Option<u64>,
    /// Spare threshold below which the drive itself warns, percent.
    pub available_spare_threshold: Option<u64>,
    /// Vendor estimate of life used, percent (may exceed 100).
    pub percentage_used: Option<u64>,
    /// Unrecovered data integrity errors.
    pub media_errors: Option<u64>,
    /// Error-information log entries over the drive's life (often benign).
    pub num_err_log_entries: Option<u64>,
    pub power_on_hours: Option<u64>,
    pub power_cycles: Option<u64>,
    pub unsafe_shutdowns: Option<u64>,
    /// In units of 1000 × 512 bytes, as the log reports them.
    pub data_units_read: Option<u64>,
    pub data_units_written: Option<u64>,
    /// Minutes spent above the warning / critical composite temperature.
    pub warning_temp_time: Option<u64>,
    pub critical_comp_time: Option<u64>,
}

/// What each bit of `critical_warning` means (NVMe base specification).
const CRITICAL_WARNING_BITS: [(u64, &str); 6] = [
    (0x01, "available spare below threshold"),
    (0x02, "temperature outside its threshold"),
    (0x04, "NVM subsystem reliability degraded"),
    (0x08, "media placed in read-only mode"),
    (0x10, "volatile memory backup failed"),
    (0x20, "persistent memory region read-only"),
];

/// Names the bits set in a `critical_warning` value.
pub fn critical_warning_flags(critical_warning: u64) -> Vec<&'static str> {
    CRITICAL_WARNING_BITS
        .iter()
        .filter(|(bit, _)| critical_warning & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Adds the NVMe health findings to `verdict`.
pub fn judge_health(health: &NvmeHealth, thresholds: &NvmeThresholds, verdict: &mut Verdict) {
    if health.critical_warning != 0 {
        let flags = critical_warning_flags(health.critical_warning);
        let meaning = if flags.is_empty() {
            "reserved bits".to_owned()
        } else {
            flags.join(", ")
        };
        verdict.fail_with(format!(
            "NVMe critical_warning {} (0x{:02x}: {meaning}) != 0",
            health.critical_warning, health.critical_warning
        ));
    }
    if let Some(media_errors) = health.media_errors
        && media_errors > thresholds.media_errors_fail_above
    {
        verdict.fail_with(format!(
            "NVMe media_errors {media_errors} > fail threshold {}",
            thresholds.media_errors_fail_above
        ));
    }
    if let (Some(spare), Some(spare_threshold)) =
        (health.available_spare, health.available_spare_threshold)
        && spare < spare_threshold
    {
        verdict.fail_with(format!(
            "NVMe available_spare {spare}% < available_spare_threshold {spare_threshold}%"
        ));
    }
    if let Some(used) = health.percentage_used {
        judge_at_or_above(
            verdict,
            "NVMe percentage_used",
            used,
            "%",
            thresholds.percentage_used_warn,
            thresholds.percentage_used_fail,
        );
    }
    if let Some(entries) = health.num_err_log_entries
        && entries > 0
    {
        verdict.add(
            Status::Pass,
            format!("NVMe num_err_log_entries {entries} (not a failure on its own)"),
        );
    }
}

/// Reads an NVMe health log object, with nvme-cli's or smartctl's key
/// names. `temperature_in_kelvin` says which unit `temperature` is in.
/// `None` when the object has no `critical_warning`.
pub fn health_from_object(
    object: &Map<String, Value>,
    temperature_in_kelvin: bool,
) -> Option<NvmeHealth> {
    let number = |keys: &[&str]| {
        keys.iter()
            .find_map(|key| object.get(*key).and_then(lenient_u64))
    };
    let critical_warning = match object.get("critical_warning")? {
        Value::Object(verbose) => verbose.get("value").and_then(lenient_u64)?,
        other => lenient_u64(other)?,
    };
    let temperature_c = number(&["temperature"]).and_then(|raw| {
        let raw = i64::try_from(raw).ok()?;
        Some(if temperature_in_kelvin {
            raw - KELVIN_OFFSET
        } else {
            raw
        })
    });
    Some(NvmeHealth {
        critical_warning,
        temperature_c,
        available_spare: number(&["avail_spare", "available_spare"]),
        available_spare_threshold: number(&["spare_thresh", "available_spare_threshold"]),
        percentage_used: number(&["percent_used", "percentage_used"]),
        media_errors: number(&["media_errors"]),
        num_err_log_entries: number(&["num_err_log_entries"]),
        power_on_hours: number(&["power_on_hours"]),
        power_cycles: number(&["power_cycles"]),
        unsafe_shutdowns: number(&["unsafe_shutdowns"]),
        data_units_read: number(&["data_units_read"]),
        data_units_written: number(&["data_units_written"]),
        warning_temp_time: number(&["warning_temp_time"]),
        critical_comp_time: number(&["critical_comp_time"]),
    })
}

/// Parses `nvme smart-log -o json` (nvme-cli 1.x and 2.x).
pub fn parse(input: &[u8]) -> Result<NvmeHealth, ParseError> {
    let document: Value = json(TOOL, input)?;
    let Value::Object(object) = &document else {
        return Err(ParseError::format(TOOL, "expected a JSON object"));
    };
    let health = health_from_object(object, true)
        .ok_or_else(|| ParseError::format(TOOL, "not an NVMe smart-log: no critical_warning"))?;
    if health.media_errors.is_none() && health.available_spare.is_none() {
        return Err(ParseError::format(
            TOOL,
            "not an NVMe smart-log: neither media_errors nor avail_spare",
        ));
    }
    Ok(health)
}

/// Judges an NVMe health log with the NVMe thresholds.
pub fn verdict(health: &NvmeHealth, thresholds: &NvmeThresholds) -> Verdict {
    let mut verdict = Verdict::pass();
    judge_health(health, thresholds, &mut verdict);
    verdict
}

pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let health = parse(input)?;
    let verdict = verdict(&health, &thresholds.nvme);
    ToolReport::new(Tool::Nvme, &health, verdict)
}
