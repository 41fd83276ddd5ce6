//! Parser and verdict rules for `stress-ng --metrics --yaml FILE` output.
//!
//! The YAML has quirks: `version: #80~18.04.1-Ubuntu …` is a comment (so
//! null), `date-yyyy-mm-dd: 2022:04:29` is a sexagesimal integer to a YAML
//! 1.1 reader, and the document ends with `...`. The system information is
//! therefore kept as text where it is text and never required.
//!
//! Verdict: every stressor must have done work, `bogo-ops` > 0 and positive
//! bogo-ops rates; a run with no metrics fails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::text;
use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "stress-ng";

/// A stress-ng run's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StressNg {
    pub stress_ng_version: Option<String>,
    /// The other `system-info` entries, as text (`null` entries dropped).
    pub system_info: BTreeMap<String, String>,
    pub metrics: Vec<StressorMetrics>,
}

/// One stressor's line of the `metrics` list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StressorMetrics {
    pub stressor: String,
    pub bogo_ops: f64,
    pub bogo_ops_per_second_usr_sys_time: Option<f64>,
    pub bogo_ops_per_second_real_time: Option<f64>,
    pub wall_clock_time: Option<f64>,
    pub user_time: Option<f64>,
    pub system_time: Option<f64>,
    pub cpu_usage_per_instance: Option<f64>,
    pub max_rss_kib: Option<f64>,
}

#[derive(Deserialize)]
struct RawReport {
    #[serde(rename = "system-info", default)]
    system_info: Option<BTreeMap<String, serde_norway::Value>>,
    #[serde(default)]
    metrics: Option<Vec<BTreeMap<String, serde_norway::Value>>>,
}

/// Parses the YAML report.
pub fn parse(input: &[u8]) -> Result<StressNg, ParseError> {
    let text = text(TOOL, input)?;
    let document: serde_norway::Value =
        serde_norway::from_str(text).map_err(|source| ParseError::Yaml { tool: TOOL, source })?;
    if !document.is_mapping() {
        return Err(ParseError::format(TOOL, "expected a YAML mapping"));
    }
    let raw: RawReport = serde_norway::from_value(document)
        .map_err(|source| ParseError::Yaml { tool: TOOL, source })?;
    if raw.system_info.is_none() && raw.metrics.is_none() {
        return Err(ParseError::format(
            TOOL,
            "neither `system-info` nor `metrics`: not a stress-ng --yaml report",
        ));
    }
    let mut system_info: BTreeMap<String, String> = raw
        .system_info
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, value)| scalar_text(&value).map(|value| (key, value)))
        .collect();
    let stress_ng_version = system_info.remove("stress-ng-version");
    let mut metrics = Vec::new();
    for (index, entry) in raw.metrics.unwrap_or_default().into_iter().enumerate() {
        let stressor = entry.get("stressor").and_then(scalar_text).ok_or_else(|| {
            ParseError::format(TOOL, format!("metrics entry {index} has no `stressor`"))
        })?;
        let field = |key: &str| entry.get(key).and_then(scalar_number);
        let bogo_ops = field("bogo-ops").ok_or_else(|| {
            ParseError::format(
                TOOL,
                format!("stressor {stressor} has no numeric `bogo-ops`"),
            )
        })?;
        metrics.push(StressorMetrics {
            bogo_ops,
            bogo_ops_per_second_usr_sys_time: field("bogo-ops-per-second-usr-sys-time"),
            bogo_ops_per_second_real_time: field("bogo-ops-per-second-real-time"),
            wall_clock_time: field("wall-clock-time"),
            user_time: field("user-time"),
            system_time: field("system-time"),
            cpu_usage_per_instance: field("cpu-usage-per-instance"),
            max_rss_kib: field("max-rss"),
            stressor,
        });
    }
    Ok(StressNg {
        stress_ng_version,
        system_info,
        metrics,
    })
}

/// Every stressor did work: bogo-ops > 0 and every bogo-ops rate present
/// is > 0. `system-time` 0 is normal for CPU stressors and not judged.
pub fn verdict(data: &StressNg, _thresholds: &Thresholds) -> Verdict {
    let mut verdict = Verdict::pass();
    if data.metrics.is_empty() {
        verdict.fail_with(
            "stress-ng reported no stressor metrics (run aborted, or --metrics not given)",
        );
        return verdict;
    }
    for metric in &data.metrics {
        let name = &metric.stressor;
        if !is_positive(metric.bogo_ops) {
            verdict.fail_with(format!(
                "stressor {name}: bogo-ops {} (must be > 0)",
                metric.bogo_ops
            ));
        }
        let rates = [
            (
                "bogo-ops-per-second-real-time",
                metric.bogo_ops_per_second_real_time,
            ),
            (
                "bogo-ops-per-second-usr-sys-time",
                metric.bogo_ops_per_second_usr_sys_time,
            ),
        ];
        let mut any_rate = false;
        for (label, rate) in rates {
            if let Some(rate) = rate {
                any_rate = true;
                if !is_positive(rate) {
                    verdict.fail_with(format!("stressor {name}: {label} {rate} (must be > 0)"));
                }
            }
        }
        if !any_rate {
            verdict.fail_with(format!("stressor {name}: no bogo-ops rate reported"));
        }
    }
    verdict
}

pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let data = parse(input)?;
    let verdict = verdict(&data, thresholds);
    ToolReport::new(Tool::StressNg, &data, verdict)
}

/// Finite and above zero (NaN is not).
fn is_positive(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

/// A scalar as text; `null` and collections give `None`.
fn scalar_text(value: &serde_norway::Value) -> Option<String> {
    match value {
        serde_norway::Value::String(text) => Some(text.clone()),
        serde_norway::Value::Number(number) => Some(number.to_string()),
        serde_norway::Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// A number, also when written as a string.
fn scalar_number(value: &serde_norway::Value) -> Option<f64> {
    match value {
        serde_norway::Value::Number(number) => number.as_f64(),
        serde_norway::Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stressor_without_work_fails_by_name() {
        let yaml = b"---\nmetrics:\n    - stressor: vm\n      bogo-ops: 0\n      bogo-ops-per-second-real-time: 0.0\n...\n";
        let data = parse(yaml).unwrap();
        let verdict = verdict(&data, &Thresholds::default());
        assert_eq!(verdict.status, crate::Status::Fail);
        assert!(
            verdict
                .reasons
                .iter()
                .all(|reason| reason.message.contains("vm"))
        );
    }

    #[test]
    fn a_report_without_metrics_fails() {
        let data = parse(b"system-info:\n  stress-ng-version: 0.15.06\n").unwrap();
        assert_eq!(
            verdict(&data, &Thresholds::default()).status,
            crate::Status::Fail
        );
    }

    #[test]
    fn yaml_that_is_not_a_report_is_an_error() {
        assert!(parse(b"just words").is_err());
        assert!(parse(b"other: 1\n").is_err());
    }
}
