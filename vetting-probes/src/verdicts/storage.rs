//! Storage's own rule: the SMART counters of a disk that grew during the
//! surface test (ATA attributes 5, 187, 197, 198 raw; NVMe media errors
//! and critical warning) fail.
//!
//! Evidence: `smart-growth`, a [`BeforeAfter`] document whose subject is
//! the disk and whose two sides are smartctl's own `-a --json` outputs,
//! unchanged: the counters are read from them here, by both sides.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{BeforeAfter, document};
use crate::parsers::smartctl::{self, SmartDevice, SmartctlOutput};
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

/// The SMART counters whose growth fails, by name.
pub type SmartCounters = BTreeMap<String, u64>;

/// The counters of one smartctl device output (empty when it has none:
/// a SCSI disk, a device without SMART).
pub fn smart_counters(device: &SmartDevice) -> SmartCounters {
    let mut counters = SmartCounters::new();
    if let Some(ata) = &device.ata {
        for id in [5, 187, 197, 198] {
            if let Some(attribute) = ata.attribute(id) {
                counters.insert(format!("attribute {id} {}", attribute.name), attribute.raw);
            }
        }
    }
    if let Some(nvme) = &device.nvme {
        if let Some(media_errors) = nvme.media_errors {
            counters.insert("NVMe media_errors".to_string(), media_errors);
        }
        counters.insert("NVMe critical_warning".to_string(), nvme.critical_warning);
    }
    counters
}

/// Counters that grew fail.
pub fn judge_smart_growth(verdict: &mut Verdict, before: &SmartCounters, after: &SmartCounters) {
    let mut grew = false;
    for (name, value) in after {
        let old = before.get(name).copied().unwrap_or(0);
        if *value > old {
            grew = true;
            verdict.fail_with(format!(
                "SMART {name} grew during the surface test: {old} → {value}"
            ));
        }
    }
    if !grew && !before.is_empty() {
        verdict.add(
            Status::Pass,
            "SMART counters did not grow during the surface test",
        );
    }
}

/// A smartctl `-a --json` output read as one device's data.
fn device_of(side: &str, output: &Value) -> Result<SmartDevice, ParseError> {
    let bytes = serde_json::to_vec(output).map_err(|source| ParseError::Json {
        tool: Tool::SmartGrowth.name(),
        source,
    })?;
    match smartctl::parse(&bytes) {
        Ok(SmartctlOutput::Device(device)) => Ok(*device),
        Ok(SmartctlOutput::Scan(_)) => Err(ParseError::format(
            Tool::SmartGrowth.name(),
            format!("the output {side} the test is a scan, not a device's"),
        )),
        Err(_) => Err(ParseError::format(
            Tool::SmartGrowth.name(),
            format!("the output {side} the test is not smartctl's JSON"),
        )),
    }
}

/// A serial as a reason shows it: at most 40 characters, `none` when
/// absent.
fn shown(serial: Option<&str>) -> String {
    serial.map_or("none".to_string(), |serial| {
        serial
            .chars()
            .take(40)
            .collect::<String>()
            .escape_debug()
            .to_string()
    })
}

/// Judges a `smart-growth` document. Outputs of two different disks
/// (serial or WWN differ) fail: they say nothing of growth.
pub fn growth_report(input: &[u8], _thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let outputs: BeforeAfter<Value> = document(Tool::SmartGrowth, input)?;
    let before = device_of("before", &outputs.before)?;
    let after = device_of("after", &outputs.after)?;
    let mut verdict = Verdict::pass();
    let (was, is) = (&before.identity, &after.identity);
    if was.serial != is.serial || was.wwn != is.wwn {
        verdict.fail_with(format!(
            "the SMART outputs before and after the surface test are of different disks \
             (serial {} → {})",
            shown(was.serial.as_deref()),
            shown(is.serial.as_deref())
        ));
    } else {
        judge_smart_growth(
            &mut verdict,
            &smart_counters(&before),
            &smart_counters(&after),
        );
    }
    let data = BeforeAfter {
        subject: outputs.subject,
        before: smart_counters(&before),
        after: smart_counters(&after),
    };
    ToolReport::new(Tool::SmartGrowth, &data, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grown_smart_counters_fail() {
        let before = SmartCounters::from([("attribute 5 Reallocated_Sector_Ct".to_string(), 0u64)]);
        let mut unchanged = Verdict::pass();
        judge_smart_growth(&mut unchanged, &before, &before);
        assert_eq!(unchanged.status, Status::Pass);
        let after = SmartCounters::from([("attribute 5 Reallocated_Sector_Ct".to_string(), 8u64)]);
        let mut grown = Verdict::pass();
        judge_smart_growth(&mut grown, &before, &after);
        assert_eq!(grown.status, Status::Fail);
        assert!(grown.reasons[0].message.contains("0 → 8"));
    }

    #[test]
    fn a_document_that_is_not_two_device_outputs_is_refused() {
        for hostile in [
            r#"{"before": {}, "after": {}}"#,
            r#"{"before": 1, "after": "x"}"#,
            r#"{"before": {"smartctl": {"argv": ["--scan"]}, "devices": []}, "after": {"device": {}}}"#,
        ] {
            assert!(
                growth_report(hostile.as_bytes(), &Thresholds::default()).is_err(),
                "{hostile}"
            );
        }
    }
}
