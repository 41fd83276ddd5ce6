//! The OCP Test & Validation export of a run: the stream of JSON output
//! artifacts (one object per line) that the OCP TV schema
//! (`../shared/ocp-tv-schema`) describes, built from the same `Report`
//! the JSON and HTML reports are.
//!
//! The mapping (OCP TV output version 2.0):
//! - `schemaVersion`, then `testRunStart`: name `vetting`, this build's
//!   version, the run's parameters, and `dutInfo` from the run's latest
//!   inventory (`platformInfos`: the system; `hardwareInfos`: CPUs, DIMMs,
//!   disks, NICs, GPUs, PSUs, each with the inventory's identity as id);
//! - one test step per stage attempt (`{stage}-{attempt}`):
//!   `testStepStart`, its measurements (a value the agent measured once is a
//!   `measurement`; sensor readings are a measurement series), validators
//!   where a threshold of the config judges the value, the stage's verdict
//!   reasons as logs, the spec diffs (SpecValidate) as logs, an `error` for
//!   a failure, a timeout, a lost agent or a hold, its artifacts as `file`s,
//!   one `diagnosis` (the orchestrator's verdict with its reason) and
//!   `testStepEnd` (COMPLETE; SKIP for a skipped or cancelled stage; ERROR
//!   when the stage could not finish: timed out, agent lost);
//! - `testRunEnd` once the run has ended: Completed is COMPLETE/PASS;
//!   Failed, and Released after a failure hold, are COMPLETE/FAIL;
//!   Cancelled, and Released after a wipe-probe hold (the destructive tests
//!   never ran), are SKIP/NOT_APPLICABLE. A run still in progress or held
//!   (FailedHolding waits for an operator) has no `testRunEnd` yet, nor its
//!   current stage a `testStepEnd`: the stream says what is known so far.
//!
//! Every line has its `sequenceNumber` (from 0) and the `timestamp` of what
//! it records (RFC 3339, UTC).

use std::collections::BTreeMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Map, Value, json};
use vetting_probes::Thresholds;
use vetting_probes::inventory::Inventory;

use super::{ArtifactSection, InventorySummary, Report, ReportError, StageSection};
use crate::error::{Result, db, internal};
use crate::orchestrator::Orchestrator;
use crate::spec::Severity;
use crate::store::entities::measurement;

/// The OCP TV output version this export follows.
pub const OCP_SCHEMA_VERSION: (u32, u32) = (2, 0);

/// The run's OCP TV artifacts, one JSON object per line.
pub async fn ocp_report(orchestrator: &Orchestrator, run_id: &str) -> Result<String> {
    let report = super::build_report(orchestrator, run_id)
        .await
        .map_err(|error| match error {
            ReportError::Orchestrator(error) => error,
            other => internal(crate::error::chain(&other)),
        })?;
    let inventory = match orchestrator
        .operator()
        .latest_inventory_json(run_id)
        .await?
    {
        // unreadable: the report's notes say so; the summary is used instead
        Some((_, text)) => serde_json::from_str::<Inventory>(&text).ok(),
        None => None,
    };
    let readings = stage_readings(orchestrator, run_id).await?;
    Ok(render(
        &report,
        inventory.as_ref(),
        &readings,
        &orchestrator.config().thresholds,
    ))
}

/// The measurements of one stage attempt under one name and unit, in time
/// order: `(at_ms, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Readings {
    pub name: String,
    pub unit: String,
    /// Recorded one by one as a time series (sensor samples), rather than
    /// as the stage's summary values.
    pub sampled: bool,
    pub points: Vec<(i64, f64)>,
}

/// Readings per stage attempt (`None`: recorded outside any stage).
pub type StageReadings = BTreeMap<Option<(String, u32)>, Vec<Readings>>;

async fn stage_readings(orchestrator: &Orchestrator, run_id: &str) -> Result<StageReadings> {
    type Row = (
        Option<String>,
        Option<i32>,
        Option<i64>,
        String,
        String,
        f64,
        i64,
    );
    let rows: Vec<Row> = measurement::Entity::find()
        .select_only()
        .column(measurement::Column::Stage)
        .column(measurement::Column::Attempt)
        .column(measurement::Column::Seq)
        .column(measurement::Column::Name)
        .column(measurement::Column::Unit)
        .column(measurement::Column::Value)
        .column(measurement::Column::AtMs)
        .filter(measurement::Column::RunId.eq(run_id))
        .order_by_asc(measurement::Column::AtMs)
        .order_by_asc(measurement::Column::Id)
        .into_tuple()
        .all(orchestrator.store().db())
        .await
        .map_err(db("reading measurements"))?;
    // per stage attempt, then per (name, unit, sampled)
    type ByName = BTreeMap<(String, String, bool), Vec<(i64, f64)>>;
    let mut grouped: BTreeMap<Option<(String, u32)>, ByName> = BTreeMap::new();
    for (stage, attempt, seq, name, unit, value, at_ms) in rows {
        if !value.is_finite() {
            continue;
        }
        let key = stage.map(|stage| (stage, attempt.unwrap_or(1).max(0) as u32));
        grouped
            .entry(key)
            .or_default()
            .entry((name, unit, seq.is_some()))
            .or_default()
            .push((at_ms, value));
    }
    Ok(grouped
        .into_iter()
        .map(|(key, by_name)| {
            let readings = by_name
                .into_iter()
                .map(|((name, unit, sampled), points)| Readings {
                    name,
                    unit,
                    sampled,
                    points,
                })
                .collect();
            (key, readings)
        })
        .collect())
}

/// The export of a report: pure, from what was read.
pub fn render(
    report: &Report,
    inventory: Option<&Inventory>,
    readings: &StageReadings,
    thresholds: &Thresholds,
) -> String {
    let mut out = Writer::default();
    let (major, minor) = OCP_SCHEMA_VERSION;
    out.line(
        report.run.created_at_ms,
        "schemaVersion",
        json!({"major": major, "minor": minor}),
    );
    let hardware = hardware_infos(inventory, report.inventory.as_ref());
    out.run(
        report.run.created_at_ms,
        "testRunStart",
        json!({
            "name": "vetting",
            "version": env!("CARGO_PKG_VERSION"),
            // a run is started by an operator's action, not by a command
            // line of its own (who did it is in the parameters)
            "commandLine": "",
            "parameters": parameters(report),
            "dutInfo": dut_info(report, inventory, &hardware),
        }),
    );
    for note in &report.notes {
        out.run(
            report.generated_at_ms,
            "log",
            json!({"severity": "WARNING", "message": note}),
        );
    }

    let disks: Vec<&str> = report
        .inventory
        .as_ref()
        .map(|summary| {
            summary
                .disks
                .iter()
                .map(|disk| disk.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    let disk_ids: BTreeMap<&str, String> = match inventory {
        Some(full) => full
            .disks
            .iter()
            .map(|disk| {
                (
                    disk.name.as_str(),
                    disk_id(disk.serial.as_deref(), &disk.name),
                )
            })
            .collect(),
        None => disks
            .iter()
            .map(|name| (*name, disk_id(None, name)))
            .collect(),
    };
    for stage in &report.stages {
        let step = format!("{}-{}", stage.stage, stage.attempt);
        out.step(
            &step,
            stage.started_at_ms,
            "testStepStart",
            json!({"name": format!("{} (attempt {})", stage.stage, stage.attempt)}),
        );
        let at_end = stage.finished_at_ms.unwrap_or(report.generated_at_ms);
        let key = Some((stage.stage.clone(), stage.attempt));
        for reading in readings.get(&key).into_iter().flatten() {
            let validators = validators(&stage.stage, reading, thresholds);
            let hardware_id = disk_ids
                .iter()
                .find(|(name, _)| {
                    reading
                        .name
                        .strip_prefix("storage.")
                        .and_then(|rest| rest.strip_prefix(*name))
                        .is_some_and(|rest| rest.starts_with('.'))
                })
                .map(|(_, id)| id.clone());
            write_readings(&mut out, &step, reading, validators, hardware_id);
        }
        for (severity, message) in verdict_reasons(stage) {
            out.step(
                &step,
                at_end,
                "log",
                json!({"severity": severity, "message": message}),
            );
        }
        if stage.stage == "SpecValidate" {
            for diff in &report.spec_diffs {
                let severity = match diff.severity {
                    Severity::Critical => "ERROR",
                    Severity::Warning => "WARNING",
                    Severity::Info => "INFO",
                };
                out.step(
                    &step,
                    at_end,
                    "log",
                    json!({"severity": severity, "message": format!(
                        "{} {}: {} (expected {}, found {})",
                        diff.severity.as_str(),
                        diff.path,
                        diff.message,
                        diff.expected.as_deref().unwrap_or("-"),
                        diff.actual.as_deref().unwrap_or("-"),
                    )}),
                );
            }
        }
        if let Some(symptom) = error_symptom(&stage.outcome) {
            let mut error = Map::new();
            error.insert("symptom".into(), json!(symptom));
            if let Some(reason) = &stage.reason {
                error.insert("message".into(), json!(reason));
            }
            out.step(&step, at_end, "error", Value::Object(error));
        }
        for artifact in report.artifacts.iter().filter(|artifact| {
            artifact.stage.as_deref() == Some(stage.stage.as_str())
                && artifact.attempt == Some(stage.attempt)
        }) {
            out.step(
                &step,
                artifact.created_at_ms,
                "file",
                file_artifact(artifact),
            );
        }
        if stage.outcome != "running" {
            let mut diagnosis = Map::new();
            diagnosis.insert(
                "verdict".into(),
                json!(format!(
                    "{}-{}",
                    stage.stage.to_lowercase(),
                    stage.outcome.replace('_', "-")
                )),
            );
            diagnosis.insert("type".into(), json!(diagnosis_type(&stage.outcome)));
            diagnosis.insert(
                "message".into(),
                json!(
                    stage
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("{} {}", stage.stage, stage.outcome))
                ),
            );
            out.step(&step, at_end, "diagnosis", Value::Object(diagnosis));
            out.step(
                &step,
                at_end,
                "testStepEnd",
                json!({"status": step_status(&stage.outcome)}),
            );
        }
    }
    if let Some(outside) = readings.get(&None) {
        // readings the agent sent outside any stage: a step of their own
        let step = "readings".to_string();
        let first = outside
            .iter()
            .filter_map(|reading| reading.points.first().map(|(at, _)| *at))
            .min()
            .unwrap_or(report.generated_at_ms);
        out.step(
            &step,
            first,
            "testStepStart",
            json!({"name": "readings outside a stage"}),
        );
        for reading in outside {
            write_readings(&mut out, &step, reading, Vec::new(), None);
        }
        out.step(
            &step,
            report.generated_at_ms,
            "testStepEnd",
            json!({"status": "COMPLETE"}),
        );
    }

    match run_end(report) {
        Some((status, result)) => out.run(
            report.run.ended_at_ms.unwrap_or(report.run.updated_at_ms),
            "testRunEnd",
            json!({"status": status, "result": result}),
        ),
        None => out.run(
            report.generated_at_ms,
            "log",
            json!({"severity": "INFO", "message": match &report.run.hold_reason {
                Some(reason) if report.run.state == "FailedHolding" => format!(
                    "the run is held ({reason}) and has not ended: no testRunEnd yet"
                ),
                _ => format!(
                    "the run is in {} and has not ended: no testRunEnd yet",
                    report.run.state
                ),
            }}),
        ),
    }
    out.text
}

/// The lines, numbered.
#[derive(Default)]
struct Writer {
    text: String,
    sequence: u64,
}

impl Writer {
    fn line(&mut self, at_ms: i64, key: &str, body: Value) {
        let mut object = Map::new();
        object.insert(key.to_string(), body);
        object.insert("sequenceNumber".into(), json!(self.sequence));
        object.insert("timestamp".into(), json!(timestamp(at_ms)));
        self.sequence += 1;
        // a Value always encodes
        self.text.push_str(&Value::Object(object).to_string());
        self.text.push('\n');
    }

    fn run(&mut self, at_ms: i64, key: &str, body: Value) {
        let mut artifact = Map::new();
        artifact.insert(key.to_string(), body);
        self.line(at_ms, "testRunArtifact", Value::Object(artifact));
    }

    fn step(&mut self, step: &str, at_ms: i64, key: &str, body: Value) {
        let mut artifact = Map::new();
        artifact.insert("testStepId".into(), json!(step));
        artifact.insert(key.to_string(), body);
        self.line(at_ms, "testStepArtifact", Value::Object(artifact));
    }
}

/// RFC 3339 in UTC with milliseconds.
fn timestamp(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parameters(report: &Report) -> Value {
    json!({
        "run_id": report.run.id,
        "host": report.host.name,
        "spec_profile": report.host.spec_profile,
        "created_by": report.run.created_by,
        "override_flags": report.run.override_flags,
        "report_schema_version": report.schema_version,
    })
}

/// An id for the host: its serial where known, else its registry id.
fn dut_info(report: &Report, inventory: Option<&Inventory>, hardware: &[Value]) -> Value {
    let summary = report.inventory.as_ref().map(|summary| &summary.system);
    let vendor = inventory
        .and_then(|full| full.system.vendor.clone())
        .or_else(|| summary.and_then(|system| system.vendor.clone()));
    let product = inventory
        .and_then(|full| full.system.product.clone())
        .or_else(|| summary.and_then(|system| system.product.clone()));
    let serial = report
        .host
        .serial
        .clone()
        .or_else(|| summary.and_then(|system| system.serial.clone()));
    let mut platforms = Vec::new();
    let system: Vec<String> = [vendor, product].into_iter().flatten().collect();
    if !system.is_empty() {
        platforms.push(json!({"info": system.join(" ")}));
    }
    if let Some(serial) = &serial {
        platforms.push(json!({"info": format!("serial {serial}")}));
    }
    if let Some(bios) = summary.and_then(|system| system.bios_version.clone()) {
        platforms.push(json!({"info": format!("BIOS {bios}")}));
    }
    let mut metadata = Map::new();
    metadata.insert("host_id".into(), json!(report.host.id));
    metadata.insert("macs".into(), json!(report.host.macs));
    if let Some(uuid) = report
        .host
        .system_uuid
        .clone()
        .or_else(|| summary.and_then(|system| system.uuid.clone()))
    {
        metadata.insert("system_uuid".into(), json!(uuid));
    }
    json!({
        "dutInfoId": serial.map_or_else(|| format!("host-{}", report.host.id), |serial| format!("serial:{serial}")),
        "name": report.host.name,
        "platformInfos": platforms,
        "hardwareInfos": hardware,
        "metadata": metadata,
    })
}

fn disk_id(serial: Option<&str>, name: &str) -> String {
    match serial {
        Some(serial) => format!("disk:serial:{serial}"),
        None => format!("disk:name:{name}"),
    }
}

/// A `hardwareInfo` with the fields that are known.
fn hardware_info(
    id: String,
    name: String,
    part_type: &str,
    fields: &[(&str, Option<String>)],
) -> Value {
    let mut info = Map::new();
    info.insert("hardwareInfoId".into(), json!(id));
    info.insert("name".into(), json!(name));
    info.insert("partType".into(), json!(part_type));
    for (key, value) in fields {
        if let Some(value) = value {
            info.insert((*key).to_string(), json!(value));
        }
    }
    Value::Object(info)
}

/// The parts of the host: from the whole inventory where it can be read,
/// else from the report's summary of it (no DIMMs there).
fn hardware_infos(inventory: Option<&Inventory>, summary: Option<&InventorySummary>) -> Vec<Value> {
    let mut parts = Vec::new();
    if let Some(inventory) = inventory {
        for package in &inventory.cpus.packages {
            parts.push(hardware_info(
                format!("cpu:{}", package.identity()),
                format!("CPU {}", package.socket),
                "CPU",
                &[
                    ("location", Some(package.socket.clone())),
                    (
                        "partNumber",
                        package.model.clone().or(inventory.cpus.model.clone()),
                    ),
                ],
            ));
        }
        if inventory.cpus.packages.is_empty()
            && let Some(model) = &inventory.cpus.model
        {
            parts.push(hardware_info(
                "cpu:model".into(),
                "CPU".into(),
                "CPU",
                &[("partNumber", Some(model.clone()))],
            ));
        }
        for dimm in &inventory.memory.dimms {
            parts.push(hardware_info(
                format!("dimm:{}", dimm.identity()),
                format!("DIMM {}", dimm.slot),
                "DIMM",
                &[
                    ("location", Some(dimm.slot.clone())),
                    ("serialNumber", dimm.serial.clone()),
                    ("partNumber", dimm.part_number.clone()),
                    ("manufacturer", dimm.manufacturer.clone()),
                    (
                        "version",
                        Some(format!(
                            "{} GiB{}{}",
                            dimm.size_bytes >> 30,
                            dimm.memory_type
                                .as_ref()
                                .map(|kind| format!(" {kind}"))
                                .unwrap_or_default(),
                            dimm.speed_mts
                                .map(|speed| format!(" {speed} MT/s"))
                                .unwrap_or_default()
                        )),
                    ),
                ],
            ));
        }
        for disk in &inventory.disks {
            parts.push(hardware_info(
                disk_id(disk.serial.as_deref(), &disk.name),
                format!("disk {}", disk.name),
                "DISK",
                &[
                    ("location", Some(disk.name.clone())),
                    ("serialNumber", disk.serial.clone()),
                    ("partNumber", disk.model.clone()),
                    ("manufacturer", disk.vendor.clone()),
                ],
            ));
        }
        for nic in &inventory.nics {
            parts.push(hardware_info(
                format!("nic:{}", nic.identity()),
                format!("NIC {}", nic.name),
                "NIC",
                &[
                    ("location", nic.pci_slot.clone().or(Some(nic.name.clone()))),
                    ("serialNumber", nic.mac.clone()),
                    ("version", nic.driver.clone()),
                ],
            ));
        }
        for gpu in &inventory.gpus {
            parts.push(hardware_info(
                format!("gpu:{}", gpu.identity()),
                format!("GPU {}", gpu.pci_slot.as_deref().unwrap_or(""))
                    .trim()
                    .to_string(),
                "GPU",
                &[
                    ("location", gpu.pci_slot.clone()),
                    ("serialNumber", gpu.serial.clone()),
                    ("partNumber", gpu.model.clone()),
                ],
            ));
        }
        for psu in &inventory.psus {
            parts.push(hardware_info(
                format!("psu:{}", psu.identity()),
                psu.name.clone(),
                "PSU",
                &[
                    ("serialNumber", psu.serial.clone()),
                    ("partNumber", psu.model.clone()),
                    ("manufacturer", psu.manufacturer.clone()),
                ],
            ));
        }
        return parts;
    }
    let Some(summary) = summary else {
        return parts;
    };
    if let Some(model) = &summary.cpu.model {
        parts.push(hardware_info(
            "cpu:model".into(),
            "CPU".into(),
            "CPU",
            &[("partNumber", Some(model.clone()))],
        ));
    }
    for disk in &summary.disks {
        parts.push(hardware_info(
            disk_id(disk.serial.as_deref(), &disk.name),
            format!("disk {}", disk.name),
            "DISK",
            &[
                ("location", Some(disk.name.clone())),
                ("serialNumber", disk.serial.clone()),
                ("partNumber", disk.model.clone()),
            ],
        ));
    }
    for nic in &summary.nics {
        let id = match &nic.mac {
            Some(mac) => format!("nic:mac:{mac}"),
            None => format!("nic:name:{}", nic.name),
        };
        parts.push(hardware_info(
            id,
            format!("NIC {}", nic.name),
            "NIC",
            &[
                ("location", Some(nic.name.clone())),
                ("serialNumber", nic.mac.clone()),
                ("version", nic.driver.clone()),
            ],
        ));
    }
    for (index, gpu) in summary.gpus.iter().enumerate() {
        let id = gpu
            .uuid
            .clone()
            .map(|uuid| format!("gpu:uuid:{uuid}"))
            .unwrap_or_else(|| format!("gpu:{index}"));
        parts.push(hardware_info(
            id,
            format!("GPU {index}"),
            "GPU",
            &[
                ("location", gpu.pci_slot.clone()),
                ("serialNumber", gpu.serial.clone()),
                ("partNumber", gpu.model.clone()),
            ],
        ));
    }
    for psu in &summary.psus {
        let id = match &psu.serial {
            Some(serial) => format!("psu:serial:{serial}"),
            None => format!("psu:name:{}", psu.name),
        };
        parts.push(hardware_info(
            id,
            psu.name.clone(),
            "PSU",
            &[
                ("serialNumber", psu.serial.clone()),
                ("partNumber", psu.model.clone()),
            ],
        ));
    }
    parts
}

/// A measurement for a value measured once, a series for samples.
fn write_readings(
    out: &mut Writer,
    step: &str,
    reading: &Readings,
    validators: Vec<Value>,
    hardware_id: Option<String>,
) {
    let single = !reading.sampled && reading.points.len() == 1;
    if single && let Some((at_ms, value)) = reading.points.first() {
        let mut body = Map::new();
        body.insert("name".into(), json!(reading.name));
        body.insert("value".into(), json!(value));
        body.insert("unit".into(), json!(reading.unit));
        if !validators.is_empty() {
            body.insert("validators".into(), Value::Array(validators));
        }
        if let Some(id) = hardware_id {
            body.insert("hardwareInfoId".into(), json!(id));
        }
        out.step(step, *at_ms, "measurement", Value::Object(body));
        return;
    }
    let series = format!("{step}/{}", reading.name);
    let first = reading.points.first().map_or(0, |(at, _)| *at);
    let last = reading.points.last().map_or(first, |(at, _)| *at);
    let mut start = Map::new();
    start.insert("name".into(), json!(reading.name));
    start.insert("unit".into(), json!(reading.unit));
    start.insert("measurementSeriesId".into(), json!(series));
    if !validators.is_empty() {
        start.insert("validators".into(), Value::Array(validators));
    }
    if let Some(id) = hardware_id {
        start.insert("hardwareInfoId".into(), json!(id));
    }
    out.step(step, first, "measurementSeriesStart", Value::Object(start));
    for (index, (at_ms, value)) in reading.points.iter().enumerate() {
        out.step(
            step,
            *at_ms,
            "measurementSeriesElement",
            json!({
                "index": index,
                "value": value,
                "timestamp": timestamp(*at_ms),
                "measurementSeriesId": series,
            }),
        );
    }
    out.step(
        step,
        last,
        "measurementSeriesEnd",
        json!({"measurementSeriesId": series, "totalCount": reading.points.len()}),
    );
}

/// The thresholds of the config that judge a measurement, as validators.
/// Only where the verdict rule is a plain bound of the value: a CPU
/// temperature under CPUStress fails at `thresholds.stress.max_cpu_temp_c`.
/// (Throughput is judged against the lower link speed of both ends, which
/// the report does not carry; SMART counters are judged on the tool output,
/// not recorded as measurements.)
fn validators(stage: &str, reading: &Readings, thresholds: &Thresholds) -> Vec<Value> {
    let cpu_sensor = ["coretemp/", "k10temp/", "zenpower/"]
        .iter()
        .any(|driver| reading.name.contains(driver));
    if stage == "CPUStress" && reading.unit == "°C" && cpu_sensor {
        return vec![json!({
            "name": "thresholds.stress.max_cpu_temp_c",
            "type": "LESS_THAN",
            "value": thresholds.stress.max_cpu_temp_c,
        })];
    }
    Vec::new()
}

/// The stage's verdict reasons (the orchestrator's, the one that counts):
/// `(severity, message)`.
fn verdict_reasons(stage: &StageSection) -> Vec<(&'static str, String)> {
    let Some(reasons) = stage
        .verdict
        .as_ref()
        .and_then(|verdict| verdict.get("reasons"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    reasons
        .iter()
        .filter_map(|reason| {
            let message = reason.get("message").and_then(Value::as_str)?;
            let severity = match reason.get("status").and_then(Value::as_str) {
                Some("fail") => "ERROR",
                Some("warn") => "WARNING",
                _ => "INFO",
            };
            Some((severity, message.to_string()))
        })
        .collect()
}

/// An artifact as a `file`: where it lies on the orchestrator (until
/// retention deletes it), its hash and size.
fn file_artifact(artifact: &ArtifactSection) -> Value {
    let content_type = match artifact
        .name
        .rsplit_once('.')
        .map(|(_, extension)| extension)
    {
        Some("json") => "application/json",
        Some("yaml" | "yml") => "application/yaml",
        Some("xml") => "application/xml",
        Some("txt" | "log") => "text/plain",
        _ => "application/octet-stream",
    };
    let mut metadata = Map::new();
    metadata.insert("sha256".into(), json!(artifact.sha256));
    metadata.insert("size_bytes".into(), json!(artifact.size_bytes));
    if let Some(tool) = &artifact.tool {
        metadata.insert("tool".into(), json!(tool));
    }
    json!({
        "displayName": artifact.name,
        "uri": file_uri(&artifact.path),
        "isSnapshot": false,
        "contentType": content_type,
        "metadata": metadata,
    })
}

/// `file://` and the path, with what a URI cannot hold percent-encoded.
fn file_uri(path: &str) -> String {
    let mut uri = String::from("file://");
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

fn error_symptom(outcome: &str) -> Option<&'static str> {
    match outcome {
        "failed" => Some("stage-failed"),
        "timed_out" => Some("stage-timed-out"),
        "agent_lost" => Some("agent-lost"),
        "held" => Some("stage-held"),
        _ => None,
    }
}

fn diagnosis_type(outcome: &str) -> &'static str {
    match outcome {
        "passed" | "warned" => "PASS",
        "failed" | "timed_out" | "agent_lost" | "held" => "FAIL",
        // skipped, cancelled, ended: no verdict on the hardware
        _ => "UNKNOWN",
    }
}

fn step_status(outcome: &str) -> &'static str {
    match outcome {
        "skipped" | "cancelled" => "SKIP",
        "timed_out" | "agent_lost" => "ERROR",
        _ => "COMPLETE",
    }
}

/// `(status, result)` of a run that has ended; `None` while it has not.
fn run_end(report: &Report) -> Option<(&'static str, &'static str)> {
    match report.run.state.as_str() {
        "Completed" => Some(("COMPLETE", "PASS")),
        "Failed" => Some(("COMPLETE", "FAIL")),
        "Released" => match report.run.hold_reason.as_deref() {
            Some("wipe_signatures" | "unexpected_data") => Some(("SKIP", "NOT_APPLICABLE")),
            _ => Some(("COMPLETE", "FAIL")),
        },
        "Cancelled" => Some(("SKIP", "NOT_APPLICABLE")),
        _ => None,
    }
}
