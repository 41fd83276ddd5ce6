//! What several parsers use, so that none imports another for it: lenient
//! JSON counts (smartctl, nvme-cli, fio, lsblk and wipefs write numbers as
//! integers, floats or strings) and the warn/fail rule of a count with
//! two thresholds.

use serde_json::Value;

use crate::Verdict;

/// Reads a count from a JSON number (integer or float) or a numeric string
/// (decimal or `0x` hex); `None` for anything else (NVMe counters come in
/// all three forms).
pub(crate) fn lenient_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64().or_else(|| {
            number
                .as_f64()
                .filter(|float| float.is_finite() && *float >= 0.0 && *float < u64::MAX as f64)
                .map(|float| float as u64)
        }),
        Value::String(text) => {
            let text = text.trim();
            if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                u64::from_str_radix(hex, 16).ok()
            } else {
                text.parse::<u64>().ok().or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .filter(|float| {
                            float.is_finite() && *float >= 0.0 && *float < u64::MAX as f64
                        })
                        .map(|float| float as u64)
                })
            }
        }
        _ => None,
    }
}

/// A count that fails at or above `fail` and warns at or above `warn`,
/// named `what` in the reason (`NVMe percentage_used 85% >= warn threshold
/// 80%`); `unit` follows each number.
pub(crate) fn judge_at_or_above(
    verdict: &mut Verdict,
    what: &str,
    value: u64,
    unit: &str,
    warn: u64,
    fail: u64,
) {
    if value >= fail {
        verdict.fail_with(format!(
            "{what} {value}{unit} >= fail threshold {fail}{unit}"
        ));
    } else if value >= warn {
        verdict.warn(format!(
            "{what} {value}{unit} >= warn threshold {warn}{unit}"
        ));
    }
}
