//! CPUStress's own rules: memory errors counted by EDAC, thermal
//! throttling counted by the CPUs, both read from sysfs before and after
//! the stress; and the thermal sidecar's peaks, judged with the sensor
//! rules (`sensors::judge_readings`) plus the stress limit for CPU
//! temperatures (`StressThresholds::max_cpu_temp_c`).
//!
//! Evidence: `edac` and `cpu-throttle` are [`BeforeAfter`] documents of
//! [`EdacCounts`] and [`ThrottleCounts`]; `thermal-sidecar` is a
//! [`SidecarSummary`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{BeforeAfter, check_names, document, numbered};
use crate::parsers::hwmon;
use crate::parsers::sensors::{SensorKind, SensorReading};
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

/// Where EDAC lists its memory controllers, under the sysfs root.
pub const EDAC_MC: &str = "devices/system/edac/mc";
/// Where the CPUs are, under the sysfs root.
pub const SYSTEM_CPU: &str = "devices/system/cpu";

/// A memory controller's error counters (`ce_count`, `ue_count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryErrors {
    pub corrected: u64,
    pub uncorrected: u64,
}

/// EDAC's counters per memory controller (`mc0` → counts); empty when
/// EDAC is not loaded.
pub type EdacCounts = BTreeMap<String, MemoryErrors>;

/// The thermal throttle events of each CPU (`cpu0` → core plus package
/// count).
pub type ThrottleCounts = BTreeMap<String, u64>;

/// The entries of `root` named `prefix` and a number (`mc0`, `cpu3`);
/// none when it cannot be listed.
fn numbered_entries(root: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .filter(|(name, _)| numbered(name, prefix))
        .collect()
}

fn read_count(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
}

/// Reads the memory-controller error counters under `root`
/// (`SYS/`[`EDAC_MC`]).
pub fn read_edac(root: &Path) -> EdacCounts {
    numbered_entries(root, "mc")
        .into_iter()
        .filter_map(|(name, path)| {
            let corrected = read_count(&path.join("ce_count"))?;
            let uncorrected = read_count(&path.join("ue_count"))?;
            Some((
                name,
                MemoryErrors {
                    corrected,
                    uncorrected,
                },
            ))
        })
        .collect()
}

/// New corrected or uncorrected memory errors fail.
pub fn judge_edac(verdict: &mut Verdict, before: &EdacCounts, after: &EdacCounts) {
    if after.is_empty() {
        verdict.add(
            Status::Pass,
            "EDAC is not available: memory error counters were not read",
        );
        return;
    }
    let mut grew = false;
    for (controller, now) in after {
        let then = before.get(controller).copied().unwrap_or_default();
        for (kind, was, is) in [
            ("uncorrected", then.uncorrected, now.uncorrected),
            ("corrected", then.corrected, now.corrected),
        ] {
            if is > was {
                grew = true;
                verdict.fail_with(format!(
                    "EDAC {controller}: {} new {kind} memory error(s) during stress ({was} → {is})",
                    is - was
                ));
            }
        }
    }
    if !grew {
        verdict.add(
            Status::Pass,
            format!(
                "EDAC: no new memory errors on {} controller(s)",
                after.len()
            ),
        );
    }
}

/// Reads the CPUs' thermal throttle counters under `cpu_root`
/// (`SYS/`[`SYSTEM_CPU`]): core and package events, summed per CPU.
pub fn read_throttle(cpu_root: &Path) -> ThrottleCounts {
    numbered_entries(cpu_root, "cpu")
        .into_iter()
        .filter_map(|(name, path)| {
            let dir = path.join("thermal_throttle");
            let total = ["core_throttle_count", "package_throttle_count"]
                .iter()
                .filter_map(|file| read_count(&dir.join(file)))
                .fold(0, u64::saturating_add);
            dir.exists().then_some((name, total))
        })
        .collect()
}

/// Throttling during the stress fails.
pub fn judge_throttle(verdict: &mut Verdict, before: &ThrottleCounts, after: &ThrottleCounts) {
    let throttled: Vec<String> = after
        .iter()
        .filter_map(|(cpu, count)| {
            let grown = count.saturating_sub(before.get(cpu).copied().unwrap_or(0));
            (grown > 0).then(|| format!("{cpu} +{grown}"))
        })
        .collect();
    if !throttled.is_empty() {
        verdict.fail_with(format!(
            "thermal throttling during stress: {}",
            throttled.join(", ")
        ));
    }
}

/// Reads a document of counters per sysfs entry named `prefix` and a
/// number, and judges it with `judge`.
fn judge_numbered<V: DeserializeOwned>(
    tool: Tool,
    (what, prefix): (&str, &str),
    input: &[u8],
    judge: impl Fn(&mut Verdict, &BTreeMap<String, V>, &BTreeMap<String, V>),
) -> Result<(BeforeAfter<BTreeMap<String, V>>, Verdict), ParseError> {
    let counts: BeforeAfter<BTreeMap<String, V>> = document(tool, input)?;
    for side in [&counts.before, &counts.after] {
        check_names(tool, what, side.keys(), |name| numbered(name, prefix))?;
    }
    let mut verdict = Verdict::pass();
    judge(&mut verdict, &counts.before, &counts.after);
    Ok((counts, verdict))
}

/// Judges an `edac` document.
pub fn edac_report(input: &[u8], _thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let (counts, verdict) =
        judge_numbered(Tool::Edac, ("memory controller", "mc"), input, judge_edac)?;
    ToolReport::new(Tool::Edac, &counts, verdict)
}

/// Judges a `cpu-throttle` document.
pub fn throttle_report(input: &[u8], _thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let (counts, mut verdict) =
        judge_numbered(Tool::CpuThrottle, ("CPU", "cpu"), input, judge_throttle)?;
    if verdict.reasons.is_empty() {
        verdict.add(
            Status::Pass,
            format!(
                "no thermal throttling on {} CPU(s) during stress",
                counts.after.len()
            ),
        );
    }
    ToolReport::new(Tool::CpuThrottle, &counts, verdict)
}

/// CPU temperature drivers whose readings the stress limit applies to.
pub const CPU_DRIVERS: &[&str] = &["coretemp", "k10temp", "zenpower", "k8temp", "cpu_thermal"];

/// What the thermal sidecar saw during a stress: the `thermal-sidecar`
/// document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarSummary {
    /// How many times hwmon was read.
    pub rounds: u64,
    /// How many samples were sent.
    pub samples: u64,
    /// Each sensor's reading at its peak value.
    pub peaks: Vec<SensorReading>,
}

impl SidecarSummary {
    /// Judges the peaks with the sensor rules and the stress CPU limit.
    pub fn verdict(&self, thresholds: &Thresholds) -> Verdict {
        if self.peaks.is_empty() {
            return Verdict::skip("no hwmon sensors: temperatures were not watched");
        }
        let mut verdict = hwmon::verdict(&self.peaks, &thresholds.sensors);
        let limit = thresholds.stress.max_cpu_temp_c;
        for reading in &self.peaks {
            let is_cpu = CPU_DRIVERS.contains(&reading.driver.as_str());
            if !is_cpu || reading.kind != SensorKind::Temperature {
                continue;
            }
            if let Some(peak) = reading.input.filter(|value| {
                *value < thresholds.sensors.implausible_temp_c
                    && *value > thresholds.sensors.implausible_low_temp_c
            }) {
                if peak >= limit {
                    verdict.fail_with(format!(
                        "{} {} peaked at {peak:.1} °C under stress >= limit {limit:.1} °C",
                        reading.chip, reading.label
                    ));
                } else {
                    verdict.add(
                        Status::Pass,
                        format!(
                            "{} {} peaked at {peak:.1} °C under stress (limit {limit:.1} °C)",
                            reading.chip, reading.label
                        ),
                    );
                }
            }
        }
        verdict
    }

    /// The document as uploaded (JSON).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }
}

/// The most sensors a `thermal-sidecar` document may list (a large
/// server has a few hundred hwmon inputs).
pub const MAX_SIDECAR_PEAKS: usize = 4096;
/// The longest chip, driver, label, input or unit name it may carry
/// (hwmon names and labels are short).
pub const MAX_SENSOR_NAME: usize = 128;

/// Whether a sensor's name can be hwmon's: short, no control characters.
fn plausible_sensor_name(name: &str) -> bool {
    name.len() <= MAX_SENSOR_NAME && !name.chars().any(char::is_control)
}

/// Judges a `thermal-sidecar` document.
pub fn sidecar_report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let summary: SidecarSummary = document(Tool::ThermalSidecar, input)?;
    if summary.peaks.len() > MAX_SIDECAR_PEAKS {
        return Err(ParseError::format(
            Tool::ThermalSidecar.name(),
            format!(
                "{} sensors listed, more than the {MAX_SIDECAR_PEAKS} taken",
                summary.peaks.len()
            ),
        ));
    }
    for peak in &summary.peaks {
        let names = [
            &peak.chip,
            &peak.driver,
            &peak.label,
            &peak.input_name,
            &peak.unit,
        ];
        check_names(Tool::ThermalSidecar, "sensor", names, plausible_sensor_name)?;
    }
    let verdict = summary.verdict(thresholds);
    ToolReport::new(Tool::ThermalSidecar, &summary, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_memory_errors_fail() {
        let dir = tempfile::tempdir().unwrap();
        let mc = dir.path().join("mc0");
        std::fs::create_dir(&mc).unwrap();
        std::fs::write(mc.join("ce_count"), "3\n").unwrap();
        std::fs::write(mc.join("ue_count"), "0\n").unwrap();
        std::fs::create_dir(dir.path().join("power")).unwrap();
        let before = read_edac(dir.path());
        assert_eq!(
            before,
            EdacCounts::from([(
                "mc0".to_string(),
                MemoryErrors {
                    corrected: 3,
                    uncorrected: 0
                }
            )])
        );
        let mut unchanged = Verdict::pass();
        judge_edac(&mut unchanged, &before, &before);
        assert_eq!(unchanged.status, Status::Pass);
        std::fs::write(mc.join("ce_count"), "5\n").unwrap();
        let mut grown = Verdict::pass();
        judge_edac(&mut grown, &before, &read_edac(dir.path()));
        assert_eq!(grown.status, Status::Fail);
        assert!(grown.reasons[0].message.contains("2 new corrected"));
    }

    #[test]
    fn throttle_growth_fails() {
        let dir = tempfile::tempdir().unwrap();
        let throttle = dir.path().join("cpu0/thermal_throttle");
        std::fs::create_dir_all(&throttle).unwrap();
        std::fs::create_dir_all(dir.path().join("cpufreq")).unwrap();
        std::fs::write(throttle.join("core_throttle_count"), "3\n").unwrap();
        std::fs::write(throttle.join("package_throttle_count"), "1\n").unwrap();
        let before = read_throttle(dir.path());
        assert_eq!(before, ThrottleCounts::from([("cpu0".to_string(), 4)]));
        let after = ThrottleCounts::from([("cpu0".to_string(), 9u64)]);
        let mut verdict = Verdict::pass();
        judge_throttle(&mut verdict, &before, &before);
        assert_eq!(verdict.status, Status::Pass);
        judge_throttle(&mut verdict, &before, &after);
        assert!(verdict.reasons[0].message.contains("cpu0 +5"));
    }

    #[test]
    fn sidecar_documents_carry_only_hwmon_sized_names() {
        let peak = |label: &str| {
            serde_json::json!({"rounds": 1, "samples": 1, "peaks": [{
                "chip": "coretemp-hwmon1", "driver": "coretemp", "label": label,
                "input_name": "temp1", "kind": "temperature", "input": 50.0,
                "min": null, "max": 100.0, "crit": 105.0, "alarms": [], "unit": "°C"
            }]})
            .to_string()
        };
        let thresholds = Thresholds::default();
        let report = sidecar_report(peak("Package id 0").as_bytes(), &thresholds).unwrap();
        assert_eq!(report.verdict.status, Status::Pass, "{:?}", report.verdict);
        for hostile in ["x".repeat(MAX_SENSOR_NAME + 1), "Package\nid 0".to_string()] {
            assert!(
                sidecar_report(peak(&hostile).as_bytes(), &thresholds).is_err(),
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn documents_are_judged_and_names_checked() {
        let report = edac_report(
            br#"{"before": {"mc0": {"corrected": 0, "uncorrected": 0}},
                 "after": {"mc0": {"corrected": 0, "uncorrected": 2}}}"#,
            &Thresholds::default(),
        )
        .unwrap();
        assert_eq!(report.verdict.status, Status::Fail);
        assert!(
            report.verdict.reasons[0]
                .message
                .contains("2 new uncorrected")
        );
        for hostile in [
            r#"{"before": {}, "after": {"../mc0": {"corrected": 0, "uncorrected": 0}}}"#,
            r#"{"before": {}, "after": {}, "verdict": "pass"}"#,
            r#"{"before": {"mc0": {"corrected": -1, "uncorrected": 0}}, "after": {}}"#,
        ] {
            assert!(
                edac_report(hostile.as_bytes(), &Thresholds::default()).is_err(),
                "{hostile}"
            );
        }
        let report = throttle_report(
            br#"{"before": {"cpu0": 1}, "after": {"cpu0": 1}}"#,
            &Thresholds::default(),
        )
        .unwrap();
        assert_eq!(report.verdict.status, Status::Pass);
        assert!(
            throttle_report(
                br#"{"before": {}, "after": {"cpufreq": 1}}"#,
                &Thresholds::default()
            )
            .is_err()
        );
    }
}
