//! Parser and verdict rules for `sensors -j` (lm-sensors), and the sensor
//! reading type and plausibility rules shared with the hwmon sysfs reader.
//!
//! Only plausible readings from trusted sources are judged (design.md,
//! "Verdict notes"): CPU package/core sensors (coretemp, k10temp, zenpower),
//! NVMe `Composite`, drivetemp, and GPU drivers (amdgpu, nouveau, radeon).
//! Unconnected Super-I/O inputs that read 100+ °C or ≤ 0 °C, NVMe
//! `Sensor N` inputs with absurd limits, voltage alarms with min = max = 0
//! and chassis intrusion are listed as ignored, with the reason, in the data
//! and in an informational `pass` reason. Rules for judged readings: a
//! temperature ≥ max warns, ≥ crit fails (a set crit alarm fails, a set
//! alarm warns; with no limits of its own, ≥ the default limit warns); a
//! fan at 0 RPM with a minimum above 0 or its alarm set fails, a fan below
//! its minimum or with its alarm set warns.

use serde::{Deserialize, Serialize};

use crate::error::text as utf8_text;
use crate::thresholds::SensorThresholds;
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "sensors";

/// Chip drivers whose temperatures are judged.
const TRUSTED_TEMPERATURE_DRIVERS: [&str; 7] = [
    "coretemp",
    "k10temp",
    "zenpower",
    "drivetemp",
    "amdgpu",
    "nouveau",
    "radeon",
];

/// Limits above this (°C) are not real limits (NVMe `Sensor 1` reports
/// 65261.85).
const ABSURD_LIMIT_C: f64 = 1000.0;

/// What a reading measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    Temperature,
    Fan,
    Voltage,
    Current,
    Power,
    Energy,
    Humidity,
    Intrusion,
    Other,
}

impl SensorKind {
    /// From a subfeature prefix such as `temp`, `fan`, `in`.
    pub fn from_prefix(prefix: &str) -> SensorKind {
        match prefix {
            "temp" => SensorKind::Temperature,
            "fan" => SensorKind::Fan,
            "in" => SensorKind::Voltage,
            "curr" => SensorKind::Current,
            "power" => SensorKind::Power,
            "energy" => SensorKind::Energy,
            "humidity" => SensorKind::Humidity,
            "intrusion" => SensorKind::Intrusion,
            _ => SensorKind::Other,
        }
    }

    /// The unit values of this kind are in (after scaling).
    pub fn unit(self) -> &'static str {
        match self {
            SensorKind::Temperature => "°C",
            SensorKind::Fan => "RPM",
            SensorKind::Voltage => "V",
            SensorKind::Current => "A",
            SensorKind::Power => "W",
            SensorKind::Energy => "J",
            SensorKind::Humidity => "%RH",
            SensorKind::Intrusion | SensorKind::Other => "",
        }
    }
}

/// One sensor reading, from `sensors -j` or from hwmon sysfs, in base units
/// (°C, RPM, V, A, W, J).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// `coretemp-isa-0000` (`sensors -j`) or `coretemp-hwmon2` (sysfs).
    pub chip: String,
    /// The driver (hwmon `name`), e.g. `coretemp`, `nvme`, `nct6798`.
    pub driver: String,
    /// The label (`Package id 0`, `Composite`, `SYSTIN`) or the input name.
    pub label: String,
    /// The input it came from, e.g. `temp1`, `fan2`, `in0`.
    pub input_name: String,
    pub kind: SensorKind,
    pub input: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub crit: Option<f64>,
    /// The alarms that are set (`alarm`, `crit_alarm`, `max_alarm`, ...).
    pub alarms: Vec<String>,
    pub unit: String,
}

/// Everything read from one `sensors -j` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorsOutput {
    pub chips: Vec<String>,
    pub readings: Vec<SensorReading>,
}

/// A reading left out of the verdict, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IgnoredReading {
    pub chip: String,
    pub label: String,
    pub kind: SensorKind,
    pub input: Option<f64>,
    pub unit: String,
    /// A short class: `implausible reading`, `bogus limits`, `alarm with
    /// min = max = 0`, `chassis intrusion`, `untrusted source`, `kind not
    /// judged`, `no reading`.
    pub category: String,
    pub reason: String,
    /// Whether the reading is noise that would have tripped a rule
    /// (implausible value, bogus limits, alarm on unconfigured limits).
    pub noise: bool,
}

/// The readings split into judged and ignored: the data a report carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssessedSensors {
    pub chips: Vec<String>,
    pub judged: Vec<SensorReading>,
    pub ignored: Vec<IgnoredReading>,
}

/// Whether a reading is judged, or ignored with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    Judged,
    /// Not judged: a short class, the reason, and whether it is noise.
    Ignored {
        category: &'static str,
        reason: String,
        noise: bool,
    },
}

const IMPLAUSIBLE: &str = "implausible reading";
const BOGUS_LIMITS: &str = "bogus limits";
const ZERO_LIMIT_ALARM: &str = "alarm with min = max = 0";
const INTRUSION: &str = "chassis intrusion";
const UNTRUSTED: &str = "untrusted source";
const KIND_NOT_JUDGED: &str = "kind not judged";
const NO_READING: &str = "no reading";

fn ignored(category: &'static str, reason: impl Into<String>) -> Assessment {
    Assessment::Ignored {
        category,
        reason: reason.into(),
        noise: matches!(
            category,
            IMPLAUSIBLE | BOGUS_LIMITS | ZERO_LIMIT_ALARM | INTRUSION
        ),
    }
}

impl SensorReading {
    /// Whether this temperature source is trusted.
    pub fn trusted_temperature_source(&self) -> bool {
        let driver = self.driver.to_ascii_lowercase();
        TRUSTED_TEMPERATURE_DRIVERS.contains(&driver.as_str())
            || (driver == "nvme" && self.label.eq_ignore_ascii_case("Composite"))
    }

    fn alarm_set(&self) -> bool {
        !self.alarms.is_empty()
    }
}

/// Decides whether a reading counts.
pub fn assess(reading: &SensorReading, thresholds: &SensorThresholds) -> Assessment {
    match reading.kind {
        SensorKind::Intrusion => {
            if reading.alarm_set() {
                ignored(INTRUSION, "chassis intrusion alarm set: not judged")
            } else {
                ignored(KIND_NOT_JUDGED, "chassis intrusion switch: not judged")
            }
        }
        SensorKind::Fan => match reading.input {
            Some(_) => Assessment::Judged,
            None => ignored(NO_READING, "no input value"),
        },
        SensorKind::Temperature => assess_temperature(reading, thresholds),
        SensorKind::Voltage => {
            let zero_limits = reading.min == Some(0.0) && reading.max == Some(0.0);
            if reading.alarm_set() && zero_limits {
                ignored(
                    ZERO_LIMIT_ALARM,
                    "voltage alarm with min = max = 0 (unconfigured limits)",
                )
            } else {
                ignored(KIND_NOT_JUDGED, "voltages are not judged")
            }
        }
        _ => ignored(KIND_NOT_JUDGED, "this kind of sensor is not judged"),
    }
}

fn assess_temperature(reading: &SensorReading, thresholds: &SensorThresholds) -> Assessment {
    let Some(input) = reading.input else {
        return ignored(NO_READING, "no input value");
    };
    let absurd = |limit: Option<f64>| limit.is_some_and(|limit| limit.abs() >= ABSURD_LIMIT_C);
    if absurd(reading.max) || absurd(reading.crit) || reading.min.is_some_and(|min| min <= -273.0) {
        let limit = reading.max.or(reading.crit).or(reading.min).unwrap_or(0.0);
        return ignored(BOGUS_LIMITS, format!("bogus limits (limit {limit} °C)"));
    }
    let trusted = reading.trusted_temperature_source();
    if input <= thresholds.implausible_low_temp_c {
        return ignored(
            IMPLAUSIBLE,
            format!(
                "implausible reading {input} °C (<= {} °C){}",
                thresholds.implausible_low_temp_c,
                if trusted {
                    ""
                } else {
                    " from an untrusted input"
                }
            ),
        );
    }
    if !trusted {
        if input >= thresholds.implausible_temp_c {
            return ignored(
                IMPLAUSIBLE,
                format!(
                    "implausible reading {input} °C (>= {} °C) from an untrusted input (unconnected Super-I/O style)",
                    thresholds.implausible_temp_c
                ),
            );
        }
        return ignored(UNTRUSTED, format!("untrusted source ({})", reading.driver));
    }
    Assessment::Judged
}

/// Splits readings into judged and ignored.
pub fn assess_all(
    chips: &[String],
    readings: &[SensorReading],
    thresholds: &SensorThresholds,
) -> AssessedSensors {
    let mut assessed = AssessedSensors {
        chips: chips.to_vec(),
        judged: Vec::new(),
        ignored: Vec::new(),
    };
    for reading in readings {
        match assess(reading, thresholds) {
            Assessment::Judged => assessed.judged.push(reading.clone()),
            Assessment::Ignored {
                category,
                reason,
                noise,
            } => assessed.ignored.push(IgnoredReading {
                chip: reading.chip.clone(),
                label: reading.label.clone(),
                kind: reading.kind,
                input: reading.input,
                unit: reading.unit.clone(),
                category: category.to_string(),
                reason,
                noise,
            }),
        }
    }
    assessed
}

/// Judges a set of readings (shared by `sensors -j` and hwmon).
pub fn judge_readings(readings: &[SensorReading], thresholds: &SensorThresholds) -> Verdict {
    if readings.is_empty() {
        return Verdict::skip("no sensor readings");
    }
    let assessed = assess_all(&[], readings, thresholds);
    let mut verdict = Verdict::pass();
    for reading in &assessed.judged {
        match reading.kind {
            SensorKind::Temperature => judge_temperature(&mut verdict, reading, thresholds),
            SensorKind::Fan => judge_fan(&mut verdict, reading),
            _ => {}
        }
    }
    let temperatures = assessed
        .judged
        .iter()
        .filter(|reading| reading.kind == SensorKind::Temperature)
        .count();
    let fans = assessed.judged.len() - temperatures;
    verdict.add(
        Status::Pass,
        format!("judged {temperatures} temperature(s) from trusted sources and {fans} fan(s)"),
    );
    for category in [IMPLAUSIBLE, BOGUS_LIMITS, ZERO_LIMIT_ALARM, INTRUSION] {
        let listed: Vec<String> = assessed
            .ignored
            .iter()
            .filter(|reading| reading.category == category)
            .map(|reading| match reading.input {
                Some(input) if category == BOGUS_LIMITS => format!(
                    "{} {} {input} {} [{}]",
                    reading.chip, reading.label, reading.unit, reading.reason
                ),
                Some(input) if category != INTRUSION => {
                    format!(
                        "{} {} {input} {}",
                        reading.chip, reading.label, reading.unit
                    )
                }
                _ => format!("{} {}", reading.chip, reading.label),
            })
            .collect();
        if listed.is_empty() {
            continue;
        }
        let why = match category {
            IMPLAUSIBLE => format!(
                "outside {}..{} °C on an untrusted input, or <= {} °C",
                thresholds.implausible_low_temp_c,
                thresholds.implausible_temp_c,
                thresholds.implausible_low_temp_c
            ),
            BOGUS_LIMITS => format!("a limit beyond ±{ABSURD_LIMIT_C} °C or at absolute zero"),
            ZERO_LIMIT_ALARM => "unconfigured limits".to_string(),
            _ => "not a hardware health signal".to_string(),
        };
        verdict.add(
            Status::Pass,
            format!(
                "ignored {} reading(s) as {category} ({why}): {}",
                listed.len(),
                listed.join(", ")
            ),
        );
    }
    let untrusted = assessed
        .ignored
        .iter()
        .filter(|reading| !reading.noise)
        .count();
    if untrusted > 0 {
        let mut chips: Vec<&str> = assessed
            .ignored
            .iter()
            .filter(|reading| !reading.noise)
            .map(|reading| reading.chip.as_str())
            .collect();
        chips.dedup();
        verdict.add(
            Status::Pass,
            format!(
                "not judged: {untrusted} reading(s) from untrusted sources or unjudged kinds ({})",
                chips.join(", ")
            ),
        );
    }
    verdict
}

fn judge_temperature(
    verdict: &mut Verdict,
    reading: &SensorReading,
    thresholds: &SensorThresholds,
) {
    let Some(input) = reading.input else {
        return;
    };
    let who = format!("{} {}", reading.chip, reading.label);
    if let Some(crit) = reading.crit
        && input >= crit
    {
        verdict.fail_with(format!("{who}: temperature {input} °C >= crit {crit} °C"));
        return;
    }
    if reading.alarms.iter().any(|alarm| alarm.contains("crit")) {
        verdict.fail_with(format!(
            "{who}: temperature {input} °C with its critical alarm set ({})",
            reading.alarms.join(", ")
        ));
        return;
    }
    if let Some(max) = reading.max
        && input >= max
    {
        verdict.warn(format!("{who}: temperature {input} °C >= max {max} °C"));
        return;
    }
    if reading.alarm_set() {
        verdict.warn(format!(
            "{who}: temperature {input} °C with its alarm set ({})",
            reading.alarms.join(", ")
        ));
        return;
    }
    if reading.max.is_none() && reading.crit.is_none() && input >= thresholds.default_max_temp_c {
        verdict.warn(format!(
            "{who}: temperature {input} °C >= default limit {} °C (the sensor has no max)",
            thresholds.default_max_temp_c
        ));
    }
}

fn judge_fan(verdict: &mut Verdict, reading: &SensorReading) {
    let Some(input) = reading.input else {
        return;
    };
    let who = format!("{} {}", reading.chip, reading.label);
    let min = reading.min.unwrap_or(0.0);
    if input <= 0.0 && (min > 0.0 || reading.alarm_set()) {
        verdict.fail_with(format!(
            "{who}: fan at {input} RPM (min {min} RPM{})",
            if reading.alarm_set() {
                ", alarm set"
            } else {
                ""
            }
        ));
    } else if min > 0.0 && input < min {
        verdict.warn(format!("{who}: fan at {input} RPM < min {min} RPM"));
    } else if reading.alarm_set() {
        verdict.warn(format!("{who}: fan at {input} RPM with its alarm set"));
    }
}

/// `temp1_input` → (`temp`, `temp1`, `input`).
pub(crate) fn split_subfeature(name: &str) -> Option<(&str, &str, &str)> {
    let (input_name, attribute) = name.split_once('_')?;
    let prefix_end = input_name
        .find(|character: char| character.is_ascii_digit())
        .unwrap_or(input_name.len());
    let prefix = &input_name[..prefix_end];
    if prefix.is_empty() || prefix_end == input_name.len() {
        return None;
    }
    Some((prefix, input_name, attribute))
}

/// The raw values of one input (`temp1_input`, `temp1_max`, ...), already
/// in base units.
pub(crate) struct RawInput {
    /// `temp`, `fan`, `in`, ...
    pub prefix: String,
    /// `temp1`, `fan2`, ...
    pub input_name: String,
    /// `input` → 45.0, `max` → 80.0, `crit_alarm` → 0.0, ...
    pub attributes: Vec<(String, f64)>,
}

impl RawInput {
    pub(crate) fn new(prefix: &str, input_name: &str) -> Self {
        RawInput {
            prefix: prefix.to_string(),
            input_name: input_name.to_string(),
            attributes: Vec::new(),
        }
    }
}

/// Builds a reading from the values of one input.
pub(crate) fn reading_from_attributes(
    chip: &str,
    driver: &str,
    label: &str,
    raw: &RawInput,
) -> Option<SensorReading> {
    let attributes = &raw.attributes;
    let input_name = raw.input_name.as_str();
    let kind = SensorKind::from_prefix(&raw.prefix);
    let value = |name: &str| {
        attributes
            .iter()
            .find(|(attribute, _)| attribute == name)
            .map(|(_, value)| *value)
    };
    let alarms: Vec<String> = attributes
        .iter()
        .filter(|(attribute, value)| attribute.ends_with("alarm") && *value != 0.0)
        .map(|(attribute, _)| attribute.clone())
        .collect();
    let input = value("input").or_else(|| value("average"));
    if input.is_none() && kind != SensorKind::Intrusion {
        return None;
    }
    Some(SensorReading {
        chip: chip.to_string(),
        driver: driver.to_string(),
        label: label.to_string(),
        input_name: input_name.to_string(),
        kind,
        input,
        min: value("min"),
        max: value("max"),
        crit: value("crit"),
        alarms,
        unit: kind.unit().to_string(),
    })
}

/// A JSON value that keeps object members in document order (whatever
/// serde_json's map type), so readings come out as `sensors` printed them.
enum OrderedJson {
    Object(Vec<(String, OrderedJson)>),
    Number(f64),
    Other,
}

impl<'de> Deserialize<'de> for OrderedJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedJson;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedJson, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, OrderedJson>()? {
                    members.push((key, value));
                }
                Ok(OrderedJson::Object(members))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OrderedJson, A::Error> {
                while seq.next_element::<OrderedJson>()?.is_some() {}
                Ok(OrderedJson::Other)
            }
            fn visit_f64<E>(self, value: f64) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Number(value))
            }
            fn visit_i64<E>(self, value: i64) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Number(value as f64))
            }
            fn visit_u64<E>(self, value: u64) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Number(value as f64))
            }
            fn visit_str<E>(self, _: &str) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Other)
            }
            fn visit_unit<E>(self) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Other)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses `sensors -j`: chips → features → `tempN_input`-style values.
pub fn parse(input: &[u8]) -> Result<SensorsOutput, ParseError> {
    let text = utf8_text(TOOL, input)?;
    let document: OrderedJson =
        serde_json::from_str(text).map_err(|source| ParseError::Json { tool: TOOL, source })?;
    let OrderedJson::Object(chips) = document else {
        return Err(ParseError::format(
            TOOL,
            "sensors -j output is not a JSON object",
        ));
    };
    let mut output = SensorsOutput {
        chips: Vec::new(),
        readings: Vec::new(),
    };
    for (chip, features) in &chips {
        let OrderedJson::Object(features) = features else {
            return Err(ParseError::format(
                TOOL,
                format!("chip {chip} is not an object of features"),
            ));
        };
        output.chips.push(chip.clone());
        let driver = chip.split('-').next().unwrap_or(chip);
        for (label, subfeatures) in features {
            let OrderedJson::Object(subfeatures) = subfeatures else {
                continue; // "Adapter": "ISA adapter"
            };
            // Group the subfeatures by input (a feature usually has one).
            let mut inputs: Vec<RawInput> = Vec::new();
            for (name, value) in subfeatures {
                let (Some((prefix, input_name, attribute)), OrderedJson::Number(value)) =
                    (split_subfeature(name), value)
                else {
                    continue;
                };
                let position = match inputs.iter().position(|seen| seen.input_name == input_name) {
                    Some(position) => position,
                    None => {
                        inputs.push(RawInput::new(prefix, input_name));
                        inputs.len() - 1
                    }
                };
                inputs[position]
                    .attributes
                    .push((attribute.to_string(), *value));
            }
            for input in inputs {
                if let Some(reading) = reading_from_attributes(chip, driver, label, &input) {
                    output.readings.push(reading);
                }
            }
        }
    }
    Ok(output)
}

/// Judges a `sensors -j` output.
pub fn verdict(output: &SensorsOutput, thresholds: &Thresholds) -> Verdict {
    judge_readings(&output.readings, &thresholds.sensors)
}

/// Parses and judges `sensors -j`; the data lists judged and ignored
/// readings.
pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let output = parse(input)?;
    let verdict = verdict(&output, thresholds);
    let assessed = assess_all(&output.chips, &output.readings, &thresholds.sensors);
    ToolReport::new(Tool::Sensors, &assessed, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subfeature_names() {
        assert_eq!(
            split_subfeature("temp1_input"),
            Some(("temp", "temp1", "input"))
        );
        assert_eq!(
            split_subfeature("temp1_crit_alarm"),
            Some(("temp", "temp1", "crit_alarm"))
        );
        assert_eq!(
            split_subfeature("intrusion0_alarm"),
            Some(("intrusion", "intrusion0", "alarm"))
        );
        assert_eq!(split_subfeature("beep_enable"), None);
    }

    #[test]
    fn hot_cpu_fails_and_stopped_fan_fails() {
        let json = br#"{"coretemp-isa-0000":{"Adapter":"ISA adapter","Package id 0":{"temp1_input":101.0,"temp1_max":80.0,"temp1_crit":100.0}},
            "nct6775-isa-0290":{"fan1":{"fan1_input":0.0,"fan1_min":300.0,"fan1_alarm":1.0}}}"#;
        let output = parse(json).unwrap();
        let verdict = verdict(&output, &Thresholds::default());
        assert_eq!(verdict.status, Status::Fail);
        let failures: Vec<&str> = verdict.messages(Status::Fail).collect();
        assert!(
            failures
                .iter()
                .any(|message| message.contains("101 °C >= crit 100"))
        );
        assert!(
            failures
                .iter()
                .any(|message| message.contains("fan at 0 RPM (min 300"))
        );
    }

    #[test]
    fn warm_cpu_warns() {
        let json = br#"{"k10temp-pci-00c3":{"Tctl":{"temp1_input":85.0,"temp1_max":80.0}}}"#;
        let verdict = verdict(&parse(json).unwrap(), &Thresholds::default());
        assert_eq!(verdict.status, Status::Warn);
    }
}
