//! Parser and verdict rules for `ipmitool` output: `sdr` / `sdr list`
//! (3 columns), `sdr elist` (5 columns), `sensor` (10 columns with
//! thresholds) and `dcmi power reading`. Lines that are not sensor rows
//! (`Unable to send command: Invalid argument`) are skipped and kept.
//!
//! Rules: a status of `cr`/`nr` (or `lcr`/`ucr`/`lnr`/`unr`) fails, `nc`
//! warns, `ns`/`na` means no reading and is not a failure. A power supply
//! sensor (named `Power Supply`/`PSU`/`PS1`..., or entity 10.x in `elist`)
//! whose reading says failure, predictive failure, AC/input lost, out of
//! range, configuration error or redundancy lost fails, whatever its status
//! column says; a PSU reading like `90 Watts` with `ok` is fine.

use serde::{Deserialize, Serialize};

use crate::error::text as utf8_text;
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "ipmitool";

/// Which `ipmitool` command the output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpmitoolFormat {
    /// `ipmitool sdr` / `sdr list`: name | reading | status.
    Sdr,
    /// `ipmitool sdr elist`: name | id | status | entity | reading.
    SdrElist,
    /// `ipmitool sensor`: name | value | unit | status | 6 thresholds.
    Sensor,
    /// `ipmitool dcmi power reading`.
    DcmiPowerReading,
    /// More than one of the above.
    Mixed,
}

/// Everything read from one `ipmitool` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpmitoolOutput {
    pub format: IpmitoolFormat,
    pub sensors: Vec<IpmiSensor>,
    /// The power-supply sensors among `sensors`, with the faults their
    /// readings state.
    pub psus: Vec<PsuState>,
    /// False when no sensor belongs to a power supply (the PSU stage then
    /// has nothing to judge).
    pub psu_sensors_found: bool,
    pub power_reading: Option<DcmiPowerReading>,
    /// System power in watts: the DCMI instantaneous reading, else a
    /// power-meter style sensor.
    pub power_watts: Option<f64>,
    /// Lines that were neither sensors nor DCMI fields (tool errors).
    pub skipped_lines: Vec<String>,
}

impl IpmitoolOutput {
    /// Whether any sensor belongs to a power supply.
    pub fn has_psu_sensors(&self) -> bool {
        !self.psus.is_empty()
    }
}

/// One sensor row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpmiSensor {
    pub name: String,
    /// `elist` sensor number, e.g. `03h`.
    pub sensor_id: Option<String>,
    /// `elist` entity, e.g. `10.1` (10 = power supply).
    pub entity: Option<String>,
    /// The numeric reading, when there is one.
    pub reading: Option<f64>,
    pub unit: Option<String>,
    /// The reading column as printed.
    pub reading_text: String,
    /// `ok`, `ns`, `nc`, `cr`, `nr`, `na`, `lcr`..., or a discrete state
    /// mask like `0x0100` (`ipmitool sensor`).
    pub status: String,
    /// Discrete states from the reading text (`Presence detected`, ...).
    pub states: Vec<String>,
    /// Thresholds from `ipmitool sensor` (`None` where `na`).
    pub thresholds: Option<IpmiThresholds>,
    pub is_psu: bool,
}

/// The six thresholds of `ipmitool sensor`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct IpmiThresholds {
    pub lower_non_recoverable: Option<f64>,
    pub lower_critical: Option<f64>,
    pub lower_non_critical: Option<f64>,
    pub upper_non_critical: Option<f64>,
    pub upper_critical: Option<f64>,
    pub upper_non_recoverable: Option<f64>,
}

/// A power-supply sensor and what its reading says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PsuState {
    pub name: String,
    pub status: String,
    pub reading_text: String,
    /// Fault states found (failure, AC lost, predictive failure, ...).
    pub faults: Vec<String>,
    /// Degraded states that warn (redundancy degraded, ...).
    pub warnings: Vec<String>,
}

/// `ipmitool dcmi power reading`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DcmiPowerReading {
    pub instantaneous_watts: Option<f64>,
    pub minimum_watts: Option<f64>,
    pub maximum_watts: Option<f64>,
    pub average_watts: Option<f64>,
    pub timestamp: Option<String>,
    pub sampling_period_seconds: Option<f64>,
    pub state: Option<String>,
}

/// PSU reading phrases that fail (IPMI sensor type 08h and redundancy 0Bh
/// offsets, as ipmitool prints them).
const PSU_FAULT_PHRASES: [&str; 11] = [
    "failure detected",
    "predictive failure",
    "ac lost",
    "input lost",
    "out-of-range",
    "out of range",
    "config error",
    "configuration error",
    "redundancy lost",
    "insufficient resources",
    "sufficient from redundant",
];

/// PSU reading phrases that warn.
const PSU_WARNING_PHRASES: [&str; 2] = ["redundancy degraded", "non-redundant"];

/// PSU states by bit of the first byte of a discrete `ipmitool sensor`
/// state mask (sensor type 08h): bit, name, fails.
const PSU_STATE_BITS: [(u8, &str, bool); 8] = [
    (0, "Presence detected", false),
    (1, "Failure detected", true),
    (2, "Predictive failure", true),
    (3, "Power Supply AC lost", true),
    (4, "AC lost or out-of-range", true),
    (5, "AC out-of-range, but present", true),
    (6, "Config Error", true),
    (7, "Power Supply Inactive", false),
];

/// Redundancy states (sensor type 0Bh) for PSU sensors named `...Redundancy`.
const REDUNDANCY_STATE_BITS: [(u8, &str, Option<Status>); 8] = [
    (0, "Fully Redundant", None),
    (1, "Redundancy Lost", Some(Status::Fail)),
    (2, "Redundancy Degraded", Some(Status::Warn)),
    (
        3,
        "Non-Redundant: Sufficient from Redundant",
        Some(Status::Fail),
    ),
    (
        4,
        "Non-Redundant: Sufficient from Insufficient",
        Some(Status::Warn),
    ),
    (
        5,
        "Non-Redundant: Insufficient Resources",
        Some(Status::Fail),
    ),
    (
        6,
        "Redundancy Degraded from Fully Redundant",
        Some(Status::Warn),
    ),
    (
        7,
        "Redundancy Degraded from Non-Redundant",
        Some(Status::Warn),
    ),
];

/// Parses `ipmitool sdr`, `sdr elist`, `sensor` or `dcmi power reading`.
pub fn parse(input: &[u8]) -> Result<IpmitoolOutput, ParseError> {
    let text = utf8_text(TOOL, input)?;
    let mut sensors = Vec::new();
    let mut skipped_lines = Vec::new();
    let mut formats = Vec::new();
    let mut dcmi = DcmiPowerReading {
        instantaneous_watts: None,
        minimum_watts: None,
        maximum_watts: None,
        average_watts: None,
        timestamp: None,
        sampling_period_seconds: None,
        state: None,
    };
    let mut dcmi_seen = false;

    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.contains('|') {
            let mut fields: Vec<&str> = line.split('|').map(str::trim).collect();
            if fields.len() == 11 && fields.last().is_some_and(|field| field.is_empty()) {
                fields.pop();
            }
            let parsed = match fields.len() {
                3 => Some((IpmitoolFormat::Sdr, sdr_row(&fields))),
                5 => Some((IpmitoolFormat::SdrElist, elist_row(&fields))),
                10 => Some((IpmitoolFormat::Sensor, sensor_row(&fields))),
                _ => None,
            };
            match parsed {
                Some((format, sensor)) if !sensor.name.is_empty() => {
                    if !formats.contains(&format) {
                        formats.push(format);
                    }
                    sensors.push(sensor);
                }
                _ => skipped_lines.push(line.trim().to_string()),
            }
            continue;
        }
        if dcmi_line(line, &mut dcmi) {
            dcmi_seen = true;
        } else {
            skipped_lines.push(line.trim().to_string());
        }
    }
    if dcmi_seen {
        formats.push(IpmitoolFormat::DcmiPowerReading);
    }
    let format = match formats.as_slice() {
        [] => {
            return Err(ParseError::format(
                TOOL,
                "no sensor rows and no DCMI power reading (not ipmitool sdr/sensor/dcmi output)",
            ));
        }
        [only] => *only,
        _ => IpmitoolFormat::Mixed,
    };
    let psus: Vec<PsuState> = sensors
        .iter()
        .filter(|sensor| sensor.is_psu)
        .map(psu_state)
        .collect();
    let power_reading = dcmi_seen.then_some(dcmi);
    let power_watts = power_reading
        .as_ref()
        .and_then(|reading| reading.instantaneous_watts)
        .or_else(|| {
            sensors
                .iter()
                .filter(|sensor| !sensor.is_psu)
                .filter(|sensor| {
                    sensor
                        .unit
                        .as_deref()
                        .is_some_and(|unit| unit.eq_ignore_ascii_case("watts"))
                })
                .find_map(|sensor| sensor.reading)
        });
    Ok(IpmitoolOutput {
        format,
        psu_sensors_found: !psus.is_empty(),
        sensors,
        psus,
        power_reading,
        power_watts,
        skipped_lines,
    })
}

fn is_psu(name: &str, entity: Option<&str>) -> bool {
    let psu_entity = entity
        .and_then(|entity| entity.split('.').next())
        .is_some_and(|id| id.trim() == "10");
    psu_entity || psu_name(name)
}

/// Names like `Power Supply 1`, `Power Supplies`, `PSU1 Status`, `PS1 Status`,
/// `PS 2 Fan Fault`, `PS_1`, `PS Redundancy` (not `UPS`, not `Pwr Rail`).
fn psu_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let squashed: String = lower.split_whitespace().collect();
    if squashed.contains("powersuppl") {
        return true;
    }
    let bytes = lower.as_bytes();
    lower.match_indices("ps").any(|(start, _)| {
        let word_start = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if !word_start {
            return false;
        }
        let mut next = start + 2;
        match bytes.get(next) {
            None => start == 0,
            Some(b'u') => true,
            Some(byte) if byte.is_ascii_digit() => true,
            Some(b' ' | b'_' | b'-') => {
                next += 1;
                bytes.get(next).is_some_and(u8::is_ascii_digit) || start == 0
            }
            Some(_) => false,
        }
    })
}

/// `90 Watts` → (90, Watts); `0x00`, `disabled`, `Not Readable` → none.
fn numeric_reading(text: &str) -> Option<(f64, String)> {
    let text = text.trim();
    if text.starts_with("0x") {
        return None;
    }
    let (number, unit) = text.split_once(' ').unwrap_or((text, ""));
    let value = number
        .parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())?;
    Some((value, unit.trim().to_string()))
}

fn sdr_row(fields: &[&str]) -> IpmiSensor {
    let reading = numeric_reading(fields[1]);
    IpmiSensor {
        name: fields[0].to_string(),
        sensor_id: None,
        entity: None,
        reading: reading.as_ref().map(|(value, _)| *value),
        unit: reading
            .map(|(_, unit)| unit)
            .filter(|unit| !unit.is_empty()),
        reading_text: fields[1].to_string(),
        status: fields[2].to_ascii_lowercase(),
        states: Vec::new(),
        thresholds: None,
        is_psu: is_psu(fields[0], None),
    }
}

fn elist_row(fields: &[&str]) -> IpmiSensor {
    // The reading is `110 Watts, Presence detected`: a number, then states.
    let mut parts = fields[4]
        .split(", ")
        .map(str::trim)
        .filter(|part| !part.is_empty());
    let first = parts.next();
    let reading = first.and_then(numeric_reading);
    let mut states: Vec<String> = parts.map(str::to_string).collect();
    if reading.is_none()
        && let Some(first) = first
    {
        states.insert(0, first.to_string());
    }
    let entity = Some(fields[3].to_string()).filter(|entity| !entity.is_empty());
    IpmiSensor {
        name: fields[0].to_string(),
        sensor_id: Some(fields[1].to_string()).filter(|id| !id.is_empty()),
        is_psu: is_psu(fields[0], entity.as_deref()),
        entity,
        reading: reading.as_ref().map(|(value, _)| *value),
        unit: reading
            .map(|(_, unit)| unit)
            .filter(|unit| !unit.is_empty()),
        reading_text: fields[4].to_string(),
        status: fields[2].to_ascii_lowercase(),
        states,
        thresholds: None,
    }
}

fn sensor_row(fields: &[&str]) -> IpmiSensor {
    let threshold = |field: &str| field.parse::<f64>().ok().filter(|value| value.is_finite());
    let thresholds = IpmiThresholds {
        lower_non_recoverable: threshold(fields[4]),
        lower_critical: threshold(fields[5]),
        lower_non_critical: threshold(fields[6]),
        upper_non_critical: threshold(fields[7]),
        upper_critical: threshold(fields[8]),
        upper_non_recoverable: threshold(fields[9]),
    };
    let any_threshold = thresholds != IpmiThresholds::default();
    let unit = Some(fields[2].to_string()).filter(|unit| !unit.is_empty());
    let discrete = unit.as_deref() == Some("discrete");
    IpmiSensor {
        name: fields[0].to_string(),
        sensor_id: None,
        entity: None,
        reading: if discrete { None } else { threshold(fields[1]) },
        unit,
        reading_text: fields[1].to_string(),
        status: fields[3].to_ascii_lowercase(),
        states: Vec::new(),
        thresholds: any_threshold.then_some(thresholds),
        is_psu: is_psu(fields[0], None),
    }
}

/// Reads one `dcmi power reading` line into `reading`; false when the line
/// is not one of its fields.
fn dcmi_line(line: &str, reading: &mut DcmiPowerReading) -> bool {
    let Some((key, value)) = line.split_once(':') else {
        return false;
    };
    let key = key.trim().to_ascii_lowercase();
    let value = value.trim();
    let watts = || numeric_reading(value).map(|(watts, _)| watts);
    if key.starts_with("instantaneous power reading") {
        reading.instantaneous_watts = watts();
    } else if key.starts_with("minimum during sampling period") {
        reading.minimum_watts = watts();
    } else if key.starts_with("maximum during sampling period") {
        reading.maximum_watts = watts();
    } else if key.starts_with("average power reading over sample period") {
        reading.average_watts = watts();
    } else if key.starts_with("ipmi timestamp") {
        reading.timestamp = Some(value.to_string());
    } else if key.starts_with("sampling period") {
        reading.sampling_period_seconds = value
            .split_whitespace()
            .next()
            .and_then(|number| number.parse::<f64>().ok());
    } else if key.starts_with("power reading state is") {
        reading.state = Some(value.to_string());
    } else {
        return false;
    }
    true
}

fn psu_state(sensor: &IpmiSensor) -> PsuState {
    let mut faults = Vec::new();
    let mut warnings = Vec::new();
    let text = sensor.reading_text.to_ascii_lowercase();
    for phrase in PSU_FAULT_PHRASES {
        if text.contains(phrase) {
            faults.push(phrase.to_string());
        }
    }
    if faults.is_empty() {
        for phrase in PSU_WARNING_PHRASES {
            if text.contains(phrase) {
                warnings.push(phrase.to_string());
            }
        }
    }
    // `ipmitool sensor` discrete rows carry the state mask in the status
    // column: `0x0100` is states 0-7 = 0x01 (presence detected).
    if sensor.unit.as_deref() == Some("discrete")
        && let Some(mask) = sensor
            .status
            .strip_prefix("0x")
            .filter(|hex| hex.len() == 4 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(&hex[..2], 16).ok())
    {
        let redundancy = sensor.name.to_ascii_lowercase().contains("redundan");
        for bit in 0..8u8 {
            if mask & (1 << bit) == 0 {
                continue;
            }
            if redundancy {
                if let Some((_, name, Some(status))) = REDUNDANCY_STATE_BITS.get(usize::from(bit)) {
                    match status {
                        Status::Fail => faults.push(name.to_string()),
                        _ => warnings.push(name.to_string()),
                    }
                }
            } else if let Some((_, name, true)) = PSU_STATE_BITS.get(usize::from(bit)) {
                faults.push(name.to_string());
            }
        }
    }
    PsuState {
        name: sensor.name.clone(),
        status: sensor.status.clone(),
        reading_text: sensor.reading_text.clone(),
        faults,
        warnings,
    }
}

/// How a status column reads: `Some(Fail)` for `cr`/`nr`, `Some(Warn)` for
/// `nc`, `None` otherwise (including `ns`/`na`, no reading).
fn status_severity(status: &str) -> Option<Status> {
    if status.ends_with("nr") || status.ends_with("cr") {
        Some(Status::Fail)
    } else if status.ends_with("nc") {
        Some(Status::Warn)
    } else {
        None
    }
}

/// Judges the sensors and power supplies.
pub fn verdict(output: &IpmitoolOutput, _thresholds: &Thresholds) -> Verdict {
    let mut verdict = Verdict::pass();
    let mut no_reading = Vec::new();
    for sensor in &output.sensors {
        match status_severity(&sensor.status) {
            Some(status) => verdict.add(
                status,
                format!(
                    "sensor '{}' status {} (reading {}; threshold: {} fails, nc warns)",
                    sensor.name,
                    sensor.status,
                    if sensor.reading_text.is_empty() {
                        "none"
                    } else {
                        &sensor.reading_text
                    },
                    "cr/nr"
                ),
            ),
            None if sensor.status == "ns" || sensor.status == "na" => {
                no_reading.push(sensor.name.as_str());
            }
            None => {}
        }
    }
    for psu in &output.psus {
        for fault in &psu.faults {
            verdict.fail_with(format!(
                "power supply '{}' reading '{}' (status {}): {fault} (threshold: no failure, AC loss, predictive failure or redundancy loss)",
                psu.name, psu.reading_text, psu.status
            ));
        }
        for warning in &psu.warnings {
            verdict.warn(format!(
                "power supply '{}' reading '{}': {warning}",
                psu.name, psu.reading_text
            ));
        }
    }
    if !no_reading.is_empty() {
        verdict.add(
            Status::Pass,
            format!(
                "{} sensor(s) with no reading (ns/na, not a failure): {}",
                no_reading.len(),
                no_reading.join(", ")
            ),
        );
    }
    if output.psus.is_empty() && !output.sensors.is_empty() {
        verdict.add(Status::Pass, "no PSU sensors in this output");
    }
    if !output.skipped_lines.is_empty() {
        verdict.add(
            Status::Pass,
            format!(
                "skipped {} line(s) that are not sensor rows: {}",
                output.skipped_lines.len(),
                output.skipped_lines.join(" / ")
            ),
        );
    }
    verdict
}

/// Parses and judges `ipmitool` output.
pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let output = parse(input)?;
    let verdict = verdict(&output, thresholds);
    ToolReport::new(Tool::Ipmitool, &output, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psu_names() {
        for name in [
            "Power Supply 1",
            "PSU1 Status",
            "PS1 Status",
            "PS 2 Fan Fault",
            "Power Supplies",
            "PS Redundancy",
        ] {
            assert!(is_psu(name, None), "{name}");
        }
        for name in ["Pwr Rail A Fault", "UPS Link", "CPU 1", "Planar 12V"] {
            assert!(!is_psu(name, None), "{name}");
        }
        assert!(is_psu("Current 1", Some("10.1")));
    }

    #[test]
    fn discrete_psu_mask_is_decoded() {
        let output = parse(b"PS1 Status       | 0x1        | discrete   | 0x0b00| na        | na        | na        | na        | na        | na\n").unwrap();
        assert_eq!(
            output.psus[0].faults,
            vec![
                "Failure detected".to_string(),
                "Power Supply AC lost".to_string()
            ]
        );
    }
}
