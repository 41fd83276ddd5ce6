//! Reads hwmon sensors from sysfs (`/sys/class/hwmon/hwmon*/`) into the same
//! [`SensorReading`]s as `sensors -j`, judged by the same plausibility and
//! verdict rules. A machine without hwmon (a VM) gives an empty list.
//!
//! Files read per `hwmonN`: `name`; `tempN_{input,max,crit,min,label}`
//! (millidegrees), `fanN_{input,min,label}` (RPM), `inN_{input,min,max,label}`
//! (millivolts), `currN_*` (milliamps), `powerN_*` (microwatts),
//! `energyN_*` (microjoules), `humidityN_*` (milli-percent) and every
//! `*_alarm` and `intrusionN_alarm`. Files that cannot be read (sensors
//! answering EIO) are skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Verdict;
use crate::parsers::sensors::{
    RawInput, SensorKind, SensorReading, judge_readings, reading_from_attributes, split_subfeature,
};
use crate::thresholds::SensorThresholds;

/// The usual root.
pub const SYS_CLASS_HWMON: &str = "/sys/class/hwmon";

/// Reading the hwmon root failed for a reason other than it being absent.
#[derive(Debug, thiserror::Error)]
pub enum HwmonError {
    #[error("cannot list {path}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads every hwmon device under `root` (normally [`SYS_CLASS_HWMON`]).
/// A missing or empty root gives an empty list.
pub fn read_hwmon(root: &Path) -> Result<Vec<SensorReading>, HwmonError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HwmonError::List {
                path: root.to_path_buf(),
                source,
            });
        }
    };
    let mut devices: Vec<(u64, String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = name.strip_prefix("hwmon")?.parse::<u64>().ok()?;
            Some((number, name, entry.path()))
        })
        .collect();
    devices.sort();
    let mut readings = Vec::new();
    for (_, dir_name, path) in devices {
        readings.extend(read_device(&dir_name, &path));
    }
    Ok(readings)
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// The factor that turns a raw sysfs value into base units.
fn scale(kind: SensorKind) -> f64 {
    match kind {
        SensorKind::Temperature
        | SensorKind::Voltage
        | SensorKind::Current
        | SensorKind::Humidity => 1000.0,
        SensorKind::Power | SensorKind::Energy => 1_000_000.0,
        SensorKind::Fan | SensorKind::Intrusion | SensorKind::Other => 1.0,
    }
}

fn read_device(dir_name: &str, path: &Path) -> Vec<SensorReading> {
    let driver = read_trimmed(&path.join("name"))
        .or_else(|| read_trimmed(&path.join("device").join("name")))
        .unwrap_or_else(|| "unknown".to_string());
    let chip = format!("{driver}-{dir_name}");
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    // (prefix, number) → label and values, in a stable order.
    let mut inputs: BTreeMap<(String, u64), (Option<String>, RawInput)> = BTreeMap::new();
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some((prefix, input_name, attribute)) = split_subfeature(&file_name) else {
            continue;
        };
        let kind = SensorKind::from_prefix(prefix);
        if kind == SensorKind::Other {
            continue;
        }
        let number = input_name[prefix.len()..].parse::<u64>().unwrap_or(0);
        let (label, raw) = inputs
            .entry((prefix.to_string(), number))
            .or_insert_with(|| (None, RawInput::new(prefix, input_name)));
        let Some(content) = read_trimmed(&entry.path()) else {
            continue;
        };
        if attribute == "label" {
            *label = Some(content);
            continue;
        }
        let Ok(number) = content.parse::<f64>() else {
            continue;
        };
        let value = if attribute.ends_with("alarm") || attribute == "type" || attribute == "pulses"
        {
            number
        } else {
            number / scale(kind)
        };
        raw.attributes.push((attribute.to_string(), value));
    }
    inputs
        .into_values()
        .filter_map(|(label, raw)| {
            let label = label.unwrap_or_else(|| raw.input_name.clone());
            reading_from_attributes(&chip, &driver, &label, &raw)
        })
        .collect()
}

/// Judges hwmon readings with the same rules as `sensors -j`.
pub fn verdict(readings: &[SensorReading], thresholds: &SensorThresholds) -> Verdict {
    judge_readings(readings, thresholds)
}
