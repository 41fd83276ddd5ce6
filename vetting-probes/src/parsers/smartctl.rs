//! Parser and verdict rules for `smartctl --json` output: `-a`/`-x` for ATA
//! (also through SAT bridges and MegaRAID, `-d sat+megaraid,N`), NVMe and
//! SCSI/SAS devices, and the discovery output of `--scan` / `--scan-open`.
//!
//! The document is read leniently (as a `serde_json::Value`): smartctl's
//! JSON differs between versions, captures are often partial (a SCSI capture
//! without the `smartctl` object must parse), and fields are optional.
//!
//! The verdict comes from the device data, never from the exit status alone
//! (it is a bit mask): bits 0–2 (command line, open failed, a command
//! failed) with no device data give a `skip` carrying smartctl's own
//! message; bit 2 *with* device data is judged on the data.
//!
//! Rules (design.md "Stages" and "Verdict notes", EXPECTED.md defaults):
//! - every protocol: `smart_status.passed` false fails; a failed self-test in
//!   the log fails (a running test, or one aborted or interrupted by the
//!   host, is not a failure);
//! - ATA: an attribute with `when_failed` "now" fails; attribute 5 raw at or
//!   above the warn / fail thresholds warns / fails; 197 and 198 raw above
//!   their threshold fail; 187 above its threshold fails; 188 warns only when
//!   large; 199 (UDMA CRC, cabling) see [`SmartThresholds::crc_errors_warn_above`];
//! - NVMe: see [`crate::parsers::nvme`];
//! - SCSI/SAS: total uncorrected errors (read + write + verify) above the
//!   threshold fail; grown defects warn, then fail, at their thresholds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::json;
use crate::parsers::nvme::{self, NvmeHealth};
use crate::parsers::shared::{judge_at_or_above, lenient_u64};
use crate::thresholds::{ScsiThresholds, SmartThresholds};
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "smartctl";

/// How many failing self-test entries a reason lists before summarizing.
const LISTED_FAILURES: usize = 3;

/// A parsed smartctl JSON document: one device's data, or a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SmartctlOutput {
    /// `smartctl -a/-x --json DEVICE`.
    Device(Box<SmartDevice>),
    /// `smartctl --scan --json` or `--scan-open --json`.
    Scan(SmartScan),
}

/// Discovery output: devices keyed by `(name, type)` (several MegaRAID
/// disks share one name, `/dev/bus/0`, and differ by type `megaraid,N`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartScan {
    pub run: SmartctlRun,
    pub devices: Vec<ScannedDevice>,
}

/// One device found by `--scan` / `--scan-open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedDevice {
    pub name: String,
    /// The `-d` type to pass back to smartctl (`sat`, `nvme`, `megaraid,1`).
    pub device_type: String,
    pub info_name: Option<String>,
    pub protocol: Option<String>,
    /// `--scan-open` only: why the device could not be opened.
    pub open_error: Option<String>,
}

impl ScannedDevice {
    /// The key that identifies a scanned device.
    pub fn key(&self) -> (&str, &str) {
        (&self.name, &self.device_type)
    }
}

/// Facts about the smartctl run itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartctlRun {
    /// e.g. "7.3"; absent in partial captures.
    pub version: Option<String>,
    pub argv: Vec<String>,
    pub exit_status: Option<u64>,
    /// The meaning of each bit set in `exit_status`.
    pub exit_status_bits: Vec<String>,
    pub messages: Vec<SmartctlMessage>,
}

/// A message smartctl put in `smartctl.messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartctlMessage {
    pub severity: Option<String>,
    pub text: String,
}

/// One device's SMART data, normalized across protocols.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmartDevice {
    pub run: SmartctlRun,
    pub identity: DiskIdentity,
    /// Whether the output holds any health data (status, attributes, logs).
    /// Without it the verdict is a skip.
    pub has_health_data: bool,
    pub smart_available: Option<bool>,
    pub smart_enabled: Option<bool>,
    /// `smart_status.passed`: the drive's overall self-assessment.
    pub health_passed: Option<bool>,
    pub temperature_c: Option<i64>,
    pub power_on_hours: Option<u64>,
    pub power_cycles: Option<u64>,
    pub self_tests: SelfTests,
    pub ata: Option<AtaHealth>,
    pub nvme: Option<NvmeHealth>,
    pub scsi: Option<ScsiHealth>,
}

/// A disk's stable identity and shape, as smartctl reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskIdentity {
    /// Device path given to smartctl (`/dev/sda`, `/dev/bus/0`).
    pub device_name: Option<String>,
    /// smartctl's device type (`sat`, `nvme`, `scsi`, `sat+megaraid,1`).
    pub device_type: Option<String>,
    /// `ATA`, `NVMe` or `SCSI`.
    pub protocol: Option<String>,
    /// Set when the disk is read through a RAID controller (`megaraid,1`).
    pub raid_passthrough: Option<String>,
    pub model: Option<String>,
    pub model_family: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    /// `0x` + 16 hex digits for ATA and SAS (as lsblk prints it), `eui.` +
    /// 16 hex digits for NVMe namespaces.
    pub wwn: Option<String>,
    pub firmware: Option<String>,
    pub capacity_bytes: Option<u64>,
    pub logical_block_size: Option<u64>,
    /// 0 for solid state.
    pub rotation_rate_rpm: Option<u64>,
    pub form_factor: Option<String>,
    /// SCSI transport (`SAS (SPL-4)`) or SATA version and speed.
    pub transport: Option<String>,
}

/// Self-test state and history, whatever the protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTests {
    /// A test running now (polling its completion is the caller's business).
    pub in_progress: Option<SelfTestProgress>,
    /// The log, newest first.
    pub log: Vec<SelfTestEntry>,
    /// The last test's status when no log was captured (ATA only).
    pub last_status: Option<SelfTestEntry>,
}

/// A self-test that is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestProgress {
    pub status: String,
    pub remaining_percent: Option<u64>,
}

/// One self-test log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestEntry {
    /// e.g. "Extended offline", "Short", "Background short".
    pub test: String,
    /// The result as smartctl words it.
    pub status: String,
    pub outcome: SelfTestOutcome,
    pub power_on_hours: Option<u64>,
    pub failing_lba: Option<u64>,
}

/// What a self-test entry means for the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfTestOutcome {
    Passed,
    Failed,
    /// Aborted or interrupted by the host (not a failure).
    Aborted,
    InProgress,
    Other,
}

/// ATA SMART data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtaHealth {
    pub attributes: Vec<AtaAttribute>,
    pub error_log: Option<AtaErrorLog>,
}

impl AtaHealth {
    /// The attribute with this id.
    pub fn attribute(&self, id: u64) -> Option<&AtaAttribute> {
        self.attributes.iter().find(|attribute| attribute.id == id)
    }
}

/// One ATA SMART attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtaAttribute {
    pub id: u64,
    pub name: String,
    /// Normalized value, worst and threshold (vendor scale, usually 1–253).
    pub value: Option<u64>,
    pub worst: Option<u64>,
    pub threshold: Option<u64>,
    /// `now` or `past` when the normalized value is (was) at or below the
    /// threshold; `None` otherwise.
    pub when_failed: Option<String>,
    pub prefailure: Option<bool>,
    /// The raw count: the leading number of smartctl's raw string (so
    /// "25 (Min/Max 19/39)" is 25), else the 48-bit raw value.
    pub raw: u64,
    pub raw_string: Option<String>,
}

/// The ATA error log summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtaErrorLog {
    /// Errors over the drive's life.
    pub count: u64,
    /// Entries kept in the log (at most 5 in the summary log).
    pub logged: u64,
    /// Logged entries that are interface CRC errors (cabling).
    pub icrc_entries: u64,
    /// The newest entry's description, e.g. "Error: ICRC, ABRT at LBA = ...".
    pub newest: Option<String>,
}

/// SCSI / SAS health counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScsiHealth {
    pub grown_defects: Option<u64>,
    pub uncorrected_read: Option<u64>,
    pub uncorrected_write: Option<u64>,
    pub uncorrected_verify: Option<u64>,
    pub pending_defects: Option<u64>,
}

impl ScsiHealth {
    /// Read + write + verify uncorrected errors, when any is reported.
    pub fn uncorrected_total(&self) -> Option<u64> {
        let parts = [
            self.uncorrected_read,
            self.uncorrected_write,
            self.uncorrected_verify,
        ];
        if parts.iter().all(Option::is_none) {
            return None;
        }
        Some(
            parts
                .iter()
                .flatten()
                .fold(0u64, |sum, part| sum.saturating_add(*part)),
        )
    }
}

fn lenient_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Follows a path of object keys.
fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |current, key| current.get(*key))
}

fn u64_at(value: &Value, path: &[&str]) -> Option<u64> {
    at(value, path).and_then(lenient_u64)
}

fn string_at(value: &Value, path: &[&str]) -> Option<String> {
    at(value, path)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

fn bool_at(value: &Value, path: &[&str]) -> Option<bool> {
    at(value, path).and_then(Value::as_bool)
}

/// What each bit of smartctl's exit status means (smartctl(8)).
const EXIT_STATUS_BITS: [&str; 8] = [
    "command line did not parse",
    "device open failed, or the device did not return IDENTIFY data",
    "some SMART or other command to the disk failed, or a SMART data checksum error",
    "SMART status check returned DISK FAILING",
    "prefail attributes found at or below threshold",
    "attributes found at or below threshold in the past",
    "the device error log contains records of errors",
    "the device self-test log contains records of errors",
];

/// Exit bits 0–2: smartctl could not read the device.
const EXIT_BITS_NO_DATA: u64 = 0b111;

fn parse_run(document: &Value) -> SmartctlRun {
    let version = at(document, &["smartctl", "version"])
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(Value::as_u64)
                .map(|part| part.to_string())
                .collect::<Vec<_>>()
                .join(".")
        })
        .filter(|version| !version.is_empty());
    let argv = at(document, &["smartctl", "argv"])
        .and_then(Value::as_array)
        .map(|args| {
            args.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let exit_status = u64_at(document, &["smartctl", "exit_status"]);
    let exit_status_bits = exit_status
        .map(|status| {
            EXIT_STATUS_BITS
                .iter()
                .enumerate()
                .filter(|(bit, _)| status & (1 << bit) != 0)
                .map(|(bit, meaning)| format!("bit {bit}: {meaning}"))
                .collect()
        })
        .unwrap_or_default();
    let messages = at(document, &["smartctl", "messages"])
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .filter_map(|message| {
                    Some(SmartctlMessage {
                        severity: string_at(message, &["severity"]),
                        text: string_at(message, &["string"])?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    SmartctlRun {
        version,
        argv,
        exit_status,
        exit_status_bits,
        messages,
    }
}

fn parse_scan(document: &Value, devices: &[Value]) -> SmartScan {
    let devices = devices
        .iter()
        .filter_map(|device| {
            Some(ScannedDevice {
                name: string_at(device, &["name"])?,
                device_type: string_at(device, &["type"]).unwrap_or_default(),
                info_name: string_at(device, &["info_name"]),
                protocol: string_at(device, &["protocol"]),
                open_error: string_at(device, &["open_error"]),
            })
        })
        .collect();
    SmartScan {
        run: parse_run(document),
        devices,
    }
}

/// Formats a 64-bit NAA WWN the way lsblk prints it (`0x5000cca...`).
fn ata_wwn(document: &Value) -> Option<String> {
    let naa = u64_at(document, &["wwn", "naa"])?;
    let oui = u64_at(document, &["wwn", "oui"])?;
    let id = u64_at(document, &["wwn", "id"])?;
    Some(format!(
        "0x{:x}{:06x}{:09x}",
        naa & 0xf,
        oui & 0xff_ffff,
        id & 0xf_ffff_ffff
    ))
}

/// The EUI-64 of the first NVMe namespace that has one (`eui.` + hex, as
/// the kernel's `wwid` and lsblk show it).
fn nvme_eui64(document: &Value) -> Option<String> {
    document
        .get("nvme_namespaces")?
        .as_array()?
        .iter()
        .find_map(|namespace| {
            let oui = u64_at(namespace, &["eui64", "oui"])?;
            let extension = u64_at(namespace, &["eui64", "ext_id"])?;
            Some(format!(
                "eui.{:06x}{:010x}",
                oui & 0xff_ffff,
                extension & 0xff_ffff_ffff
            ))
        })
}

/// The RAID passthrough part of a device type (`sat+megaraid,1` → `megaraid,1`).
fn raid_passthrough(device_type: &str) -> Option<String> {
    const CONTROLLERS: [&str; 6] = [
        "megaraid,",
        "3ware,",
        "areca,",
        "cciss,",
        "aacraid,",
        "hpt,",
    ];
    device_type
        .split('+')
        .find(|part| CONTROLLERS.iter().any(|prefix| part.starts_with(prefix)))
        .map(str::to_owned)
}

fn parse_identity(document: &Value) -> DiskIdentity {
    let device_type = string_at(document, &["device", "type"]);
    let vendor = string_at(document, &["scsi_vendor"]).or_else(|| string_at(document, &["vendor"]));
    let product =
        string_at(document, &["scsi_product"]).or_else(|| string_at(document, &["product"]));
    let model = string_at(document, &["model_name"])
        .or_else(|| string_at(document, &["scsi_model_name"]))
        .or_else(|| match (&vendor, &product) {
            (Some(vendor), Some(product)) => Some(format!("{vendor} {product}")),
            (None, Some(product)) => Some(product.clone()),
            _ => None,
        });
    let namespaces_capacity = document
        .get("nvme_namespaces")
        .and_then(Value::as_array)
        .map(|namespaces| {
            namespaces
                .iter()
                .filter_map(|namespace| u64_at(namespace, &["size", "bytes"]))
                .fold(0u64, u64::saturating_add)
        })
        .filter(|bytes| *bytes > 0);
    let capacity_bytes = u64_at(document, &["user_capacity", "bytes"])
        .or(namespaces_capacity)
        .or_else(|| u64_at(document, &["nvme_total_capacity"]).filter(|bytes| *bytes > 0));
    let transport = string_at(document, &["scsi_transport_protocol", "name"]).or_else(|| {
        string_at(document, &["sata_version", "string"]).map(|sata| {
            match string_at(document, &["interface_speed", "current", "string"]) {
                Some(speed) => format!("{sata} ({speed})"),
                None => sata,
            }
        })
    });
    let wwn = ata_wwn(document)
        .or_else(|| string_at(document, &["logical_unit_id"]).map(|id| id.to_ascii_lowercase()))
        .or_else(|| nvme_eui64(document));
    DiskIdentity {
        device_name: string_at(document, &["device", "name"]),
        raid_passthrough: device_type.as_deref().and_then(raid_passthrough),
        device_type,
        protocol: string_at(document, &["device", "protocol"]),
        model,
        model_family: string_at(document, &["model_family"]),
        vendor,
        serial: string_at(document, &["serial_number"]),
        wwn,
        firmware: string_at(document, &["firmware_version"])
            .or_else(|| string_at(document, &["scsi_revision"]))
            .or_else(|| string_at(document, &["revision"])),
        capacity_bytes,
        logical_block_size: u64_at(document, &["logical_block_size"]),
        rotation_rate_rpm: u64_at(document, &["rotation_rate"]),
        form_factor: string_at(document, &["form_factor", "name"]),
        transport,
    }
}

/// The leading decimal number of a raw string ("25 (Min/Max 19/39)" → 25).
fn leading_number(text: &str) -> Option<u64> {
    let digits: String = text
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn parse_attributes(document: &Value) -> Vec<AtaAttribute> {
    let Some(table) = at(document, &["ata_smart_attributes", "table"]).and_then(Value::as_array)
    else {
        return Vec::new();
    };
    table
        .iter()
        .filter_map(|attribute| {
            let raw_string = string_at(attribute, &["raw", "string"]);
            let raw = raw_string
                .as_deref()
                .and_then(leading_number)
                .or_else(|| u64_at(attribute, &["raw", "value"]))
                .unwrap_or(0);
            Some(AtaAttribute {
                id: u64_at(attribute, &["id"])?,
                name: string_at(attribute, &["name"]).unwrap_or_default(),
                value: u64_at(attribute, &["value"]),
                worst: u64_at(attribute, &["worst"]),
                threshold: u64_at(attribute, &["thresh"]),
                when_failed: string_at(attribute, &["when_failed"]),
                prefailure: bool_at(attribute, &["flags", "prefailure"]),
                raw,
                raw_string,
            })
        })
        .collect()
}

fn parse_error_log(document: &Value) -> Option<AtaErrorLog> {
    let log = at(document, &["ata_smart_error_log", "extended"])
        .or_else(|| at(document, &["ata_smart_error_log", "summary"]))?;
    let descriptions: Vec<String> = log
        .get("table")
        .and_then(Value::as_array)
        .map(|table| {
            table
                .iter()
                .filter_map(|entry| string_at(entry, &["error_description"]))
                .collect()
        })
        .unwrap_or_default();
    let count = u64_at(log, &["count"]).unwrap_or(0);
    Some(AtaErrorLog {
        count,
        logged: u64_at(log, &["logged_count"]).unwrap_or(descriptions.len() as u64),
        icrc_entries: descriptions
            .iter()
            .filter(|description| description.contains("ICRC"))
            .count() as u64,
        newest: descriptions.first().cloned(),
    })
}

/// ATA self-test status byte: high nibble is the result, low nibble the
/// remaining tenths.
fn ata_outcome(status: &Value) -> SelfTestOutcome {
    match u64_at(status, &["value"]).map(|value| value >> 4) {
        Some(0) => SelfTestOutcome::Passed,
        Some(1 | 2) => SelfTestOutcome::Aborted,
        Some(3..=8) => SelfTestOutcome::Failed,
        Some(15) => SelfTestOutcome::InProgress,
        Some(_) => SelfTestOutcome::Other,
        None => match bool_at(status, &["passed"]) {
            Some(true) => SelfTestOutcome::Passed,
            Some(false) => SelfTestOutcome::Failed,
            None => outcome_from_words(&string_at(status, &["string"]).unwrap_or_default()),
        },
    }
}

fn outcome_from_words(words: &str) -> SelfTestOutcome {
    let words = words.to_ascii_lowercase();
    if words.contains("progress") {
        SelfTestOutcome::InProgress
    } else if words.contains("abort") || words.contains("interrupt") {
        SelfTestOutcome::Aborted
    } else if words.contains("fail") {
        SelfTestOutcome::Failed
    } else if words.contains("completed") {
        SelfTestOutcome::Passed
    } else {
        SelfTestOutcome::Other
    }
}

fn ata_self_tests(document: &Value, tests: &mut SelfTests) {
    // `-x` reads the extended (GP) log; `-a` the standard one. When both
    // are present they hold the same tests: prefer the extended one.
    let table = ["extended", "standard"].iter().find_map(|kind| {
        at(document, &["ata_smart_self_test_log", kind, "table"])
            .and_then(Value::as_array)
            .filter(|table| !table.is_empty())
    });
    for entry in table.into_iter().flatten() {
        let Some(status) = entry.get("status") else {
            continue;
        };
        tests.log.push(SelfTestEntry {
            test: string_at(entry, &["type", "string"]).unwrap_or_default(),
            status: string_at(status, &["string"]).unwrap_or_default(),
            outcome: ata_outcome(status),
            power_on_hours: u64_at(entry, &["lifetime_hours"]),
            failing_lba: u64_at(entry, &["lba"]),
        });
    }
    if let Some(status) = at(document, &["ata_smart_data", "self_test", "status"]) {
        let words = string_at(status, &["string"]).unwrap_or_default();
        let outcome = ata_outcome(status);
        if outcome == SelfTestOutcome::InProgress {
            let remaining = u64_at(status, &["remaining_percent"])
                .or_else(|| u64_at(status, &["value"]).map(|value| (value & 0xf) * 10));
            tests.in_progress = Some(SelfTestProgress {
                status: words,
                remaining_percent: remaining,
            });
        } else if tests.log.is_empty() {
            tests.last_status = Some(SelfTestEntry {
                test: "last self-test".to_owned(),
                status: words,
                outcome,
                power_on_hours: None,
                failing_lba: None,
            });
        }
    }
}

fn nvme_self_tests(document: &Value, tests: &mut SelfTests) {
    let Some(log) = document.get("nvme_self_test_log") else {
        return;
    };
    let operation = at(log, &["current_self_test_operation", "value"])
        .or_else(|| log.get("current_self_test_operation"))
        .and_then(lenient_u64)
        .unwrap_or(0);
    if operation != 0 {
        let done = u64_at(log, &["current_self_test_completion_percent"]);
        tests.in_progress = Some(SelfTestProgress {
            status: string_at(log, &["current_self_test_operation", "string"])
                .unwrap_or_else(|| "self-test in progress".to_owned()),
            remaining_percent: done.map(|done| 100u64.saturating_sub(done)),
        });
    }
    for entry in log
        .get("table")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let result = u64_at(entry, &["self_test_result", "value"]);
        let words = string_at(entry, &["self_test_result", "string"]).unwrap_or_default();
        let outcome = match result {
            Some(0xf) => continue, // unused entry
            Some(0) => SelfTestOutcome::Passed,
            Some(1 | 2 | 3 | 4 | 8 | 9) => SelfTestOutcome::Aborted,
            Some(5..=7) => SelfTestOutcome::Failed,
            Some(_) => SelfTestOutcome::Other,
            None => outcome_from_words(&words),
        };
        tests.log.push(SelfTestEntry {
            test: string_at(entry, &["self_test_code", "string"]).unwrap_or_default(),
            status: words,
            outcome,
            power_on_hours: u64_at(entry, &["power_on_hours"]),
            failing_lba: u64_at(entry, &["lba"]),
        });
    }
}

/// SCSI self-tests are flat keys `scsi_self_test_0` (newest) .. `_19`.
fn scsi_self_tests(object: &Map<String, Value>, tests: &mut SelfTests) {
    let mut numbered: Vec<(u64, &Value)> = object
        .iter()
        .filter_map(|(key, entry)| {
            let number = key.strip_prefix("scsi_self_test_")?.parse().ok()?;
            Some((number, entry))
        })
        .collect();
    numbered.sort_by_key(|(number, _)| *number);
    for (_, entry) in numbered {
        let words = string_at(entry, &["result", "string"]).unwrap_or_default();
        let outcome = match u64_at(entry, &["result", "value"]) {
            Some(0) => SelfTestOutcome::Passed,
            Some(1 | 2) => SelfTestOutcome::Aborted,
            Some(3..=7) => SelfTestOutcome::Failed,
            Some(15) => SelfTestOutcome::InProgress,
            Some(_) => SelfTestOutcome::Other,
            None => outcome_from_words(&words),
        };
        if outcome == SelfTestOutcome::InProgress && tests.in_progress.is_none() {
            tests.in_progress = Some(SelfTestProgress {
                status: words.clone(),
                remaining_percent: None,
            });
        }
        tests.log.push(SelfTestEntry {
            test: string_at(entry, &["code", "string"]).unwrap_or_default(),
            status: words,
            outcome,
            power_on_hours: u64_at(entry, &["power_on_time", "hours"]),
            failing_lba: u64_at(entry, &["lba_first_failure", "value"])
                .or_else(|| u64_at(entry, &["lba_first_failure"])),
        });
    }
}

fn parse_scsi(document: &Value) -> Option<ScsiHealth> {
    let log = document.get("scsi_error_counter_log");
    let grown_defects = u64_at(document, &["scsi_grown_defect_list"]);
    if log.is_none() && grown_defects.is_none() {
        return None;
    }
    let uncorrected =
        |direction: &str| log.and_then(|log| u64_at(log, &[direction, "total_uncorrected_errors"]));
    Some(ScsiHealth {
        grown_defects,
        uncorrected_read: uncorrected("read"),
        uncorrected_write: uncorrected("write"),
        uncorrected_verify: uncorrected("verify"),
        pending_defects: u64_at(document, &["scsi_pending_defects", "count"]),
    })
}

fn parse_device(document: &Value, object: &Map<String, Value>) -> SmartDevice {
    let attributes = parse_attributes(document);
    let error_log = parse_error_log(document);
    let ata = (!attributes.is_empty() || error_log.is_some()).then_some(AtaHealth {
        attributes,
        error_log,
    });
    let nvme = document
        .get("nvme_smart_health_information_log")
        .and_then(Value::as_object)
        .and_then(|log| nvme::health_from_object(log, false));
    let scsi = parse_scsi(document);
    let mut self_tests = SelfTests::default();
    ata_self_tests(document, &mut self_tests);
    nvme_self_tests(document, &mut self_tests);
    scsi_self_tests(object, &mut self_tests);
    let health_passed = bool_at(document, &["smart_status", "passed"]);
    let has_health_data = health_passed.is_some()
        || ata.is_some()
        || nvme.is_some()
        || scsi.is_some()
        || !self_tests.log.is_empty()
        || self_tests.in_progress.is_some();
    SmartDevice {
        run: parse_run(document),
        identity: parse_identity(document),
        has_health_data,
        smart_available: bool_at(document, &["smart_support", "available"]),
        smart_enabled: bool_at(document, &["smart_support", "enabled"]),
        health_passed,
        temperature_c: at(document, &["temperature", "current"])
            .and_then(lenient_i64)
            .or_else(|| nvme.as_ref().and_then(|health| health.temperature_c)),
        power_on_hours: u64_at(document, &["power_on_time", "hours"])
            .or_else(|| nvme.as_ref().and_then(|health| health.power_on_hours)),
        power_cycles: u64_at(document, &["power_cycle_count"])
            .or_else(|| nvme.as_ref().and_then(|health| health.power_cycles)),
        self_tests,
        ata,
        nvme,
        scsi,
    }
}

/// Keys that only a smartctl JSON document has; one must be present.
const SMARTCTL_KEYS: [&str; 7] = [
    "smartctl",
    "json_format_version",
    "device",
    "devices",
    "smart_status",
    "ata_smart_attributes",
    "nvme_smart_health_information_log",
];

/// Parses a smartctl JSON document (device data or a scan).
pub fn parse(input: &[u8]) -> Result<SmartctlOutput, ParseError> {
    let document: Value = json(TOOL, input)?;
    let Value::Object(object) = &document else {
        return Err(ParseError::format(TOOL, "expected a JSON object"));
    };
    if !SMARTCTL_KEYS.iter().any(|key| object.contains_key(*key)) {
        return Err(ParseError::format(
            TOOL,
            "not a smartctl JSON document: no smartctl, device or SMART section",
        ));
    }
    // A scan that found nothing has no `devices` key at all: the command
    // line tells.
    let scan_requested = at(&document, &["smartctl", "argv"])
        .and_then(Value::as_array)
        .is_some_and(|args| {
            args.iter()
                .any(|arg| matches!(arg.as_str(), Some("--scan" | "--scan-open")))
        });
    let devices = object.get("devices").and_then(Value::as_array);
    if !object.contains_key("device") && (devices.is_some() || scan_requested) {
        let devices = devices.map(Vec::as_slice).unwrap_or_default();
        return Ok(SmartctlOutput::Scan(parse_scan(&document, devices)));
    }
    Ok(SmartctlOutput::Device(Box::new(parse_device(
        &document, object,
    ))))
}

/// Judges a parsed smartctl document. A scan has no health verdict (pass,
/// no reasons).
pub fn verdict(output: &SmartctlOutput, thresholds: &Thresholds) -> Verdict {
    match output {
        SmartctlOutput::Scan(_) => Verdict::pass(),
        SmartctlOutput::Device(device) => judge_device(device, thresholds),
    }
}

/// Judges one device's SMART data.
pub fn judge_device(device: &SmartDevice, thresholds: &Thresholds) -> Verdict {
    let exit_status = device.run.exit_status.unwrap_or(0);
    if !device.has_health_data {
        return skip_without_data(device, exit_status);
    }
    let mut verdict = Verdict::pass();
    if exit_status & EXIT_BITS_NO_DATA != 0 {
        let messages: Vec<&str> = device
            .run
            .messages
            .iter()
            .map(|message| message.text.as_str())
            .collect();
        verdict.add(
            Status::Pass,
            format!(
                "smartctl exit status {exit_status} ({}), device data present and judged{}",
                device.run.exit_status_bits.join("; "),
                if messages.is_empty() {
                    String::new()
                } else {
                    format!(": {}", messages.join("; "))
                }
            ),
        );
    }
    if device.health_passed == Some(false) {
        verdict
            .fail_with("SMART overall-health self-assessment FAILED (smart_status.passed false)");
    }
    if let Some(ata) = &device.ata {
        judge_ata(ata, &thresholds.smart, &mut verdict);
    }
    if let Some(health) = &device.nvme {
        nvme::judge_health(health, &thresholds.nvme, &mut verdict);
    }
    if let Some(scsi) = &device.scsi {
        judge_scsi(scsi, &thresholds.scsi, &mut verdict);
    }
    judge_self_tests(&device.self_tests, &mut verdict);
    verdict
}

fn skip_without_data(device: &SmartDevice, exit_status: u64) -> Verdict {
    let errors: Vec<&str> = device
        .run
        .messages
        .iter()
        .filter(|message| message.severity.as_deref() != Some("information"))
        .map(|message| message.text.as_str())
        .collect();
    if !errors.is_empty() {
        return Verdict::skip(errors.join("; "));
    }
    if exit_status & EXIT_BITS_NO_DATA != 0 {
        return Verdict::skip(format!(
            "smartctl exit status {exit_status} ({}) and no device data",
            device.run.exit_status_bits.join("; ")
        ));
    }
    if device.smart_available == Some(false) {
        return Verdict::skip(
            "SMART is not supported by this device (smart_support.available false)",
        );
    }
    if device.smart_enabled == Some(false) {
        return Verdict::skip("SMART is disabled on this device (smart_support.enabled false)");
    }
    Verdict::skip("no SMART health data in the smartctl output")
}

fn attribute_label(attribute: &AtaAttribute) -> String {
    format!("attribute {} {}", attribute.id, attribute.name)
}

fn judge_ata(ata: &AtaHealth, thresholds: &SmartThresholds, verdict: &mut Verdict) {
    for attribute in &ata.attributes {
        match attribute.when_failed.as_deref() {
            Some("now") => verdict.fail_with(format!(
                "{} normalized value {} <= threshold {} (when_failed now)",
                attribute_label(attribute),
                attribute
                    .value
                    .map_or_else(|| "?".to_owned(), |value| value.to_string()),
                attribute
                    .threshold
                    .map_or_else(|| "?".to_owned(), |value| value.to_string()),
            )),
            Some("past") => verdict.add(
                Status::Pass,
                format!(
                    "{} was at or below its threshold in the past (when_failed past)",
                    attribute_label(attribute)
                ),
            ),
            _ => {}
        }
    }
    if let Some(reallocated) = ata.attribute(5) {
        judge_at_or_above(
            verdict,
            &format!("{} raw", attribute_label(reallocated)),
            reallocated.raw,
            "",
            thresholds.reallocated_warn,
            thresholds.reallocated_fail,
        );
    }
    for id in [197, 198] {
        if let Some(attribute) = ata.attribute(id)
            && attribute.raw > thresholds.pending_fail_above
        {
            verdict.fail_with(format!(
                "{} raw {} > fail threshold {}",
                attribute_label(attribute),
                attribute.raw,
                thresholds.pending_fail_above
            ));
        }
    }
    if let Some(attribute) = ata.attribute(187)
        && attribute.raw > thresholds.reported_uncorrectable_fail_above
    {
        verdict.fail_with(format!(
            "{} raw {} > fail threshold {}",
            attribute_label(attribute),
            attribute.raw,
            thresholds.reported_uncorrectable_fail_above
        ));
    }
    if let Some(attribute) = ata.attribute(188)
        && attribute.raw >= thresholds.command_timeout_warn
    {
        verdict.warn(format!(
            "{} raw {} >= warn threshold {}",
            attribute_label(attribute),
            attribute.raw,
            thresholds.command_timeout_warn
        ));
    }
    judge_crc(ata, thresholds, verdict);
}

/// Interface CRC errors point at cabling, not at the medium.
fn judge_crc(ata: &AtaHealth, thresholds: &SmartThresholds, verdict: &mut Verdict) {
    if let Some(attribute) = ata.attribute(199).filter(|attribute| attribute.raw > 0) {
        let raw = attribute.raw;
        match thresholds.crc_errors_warn_above {
            Some(limit) if raw > limit => verdict.warn(format!(
                "{} raw {raw} > warn threshold {limit} (interface CRC errors: check the cable)",
                attribute_label(attribute)
            )),
            Some(limit) => verdict.add(
                Status::Pass,
                format!(
                    "{} raw {raw} <= warn threshold {limit} (interface CRC errors: cabling)",
                    attribute_label(attribute)
                ),
            ),
            None => verdict.add(
                Status::Pass,
                format!(
                    "{} raw {raw}: interface CRC errors point at cabling (not judged: crc_errors_warn_above unset)",
                    attribute_label(attribute)
                ),
            ),
        }
    }
    if let Some(log) = &ata.error_log
        && log.count > 0
    {
        verdict.add(
            Status::Pass,
            format!(
                "ATA error log: {} errors over the drive's life, {} logged, {} of them ICRC (interface CRC){}",
                log.count,
                log.logged,
                log.icrc_entries,
                log.newest
                    .as_deref()
                    .map(|newest| format!("; newest: {newest}"))
                    .unwrap_or_default()
            ),
        );
    }
}

fn judge_scsi(scsi: &ScsiHealth, thresholds: &ScsiThresholds, verdict: &mut Verdict) {
    if let Some(total) = scsi.uncorrected_total()
        && total > thresholds.uncorrected_errors_fail_above
    {
        let parts: Vec<String> = [
            ("read", scsi.uncorrected_read),
            ("write", scsi.uncorrected_write),
            ("verify", scsi.uncorrected_verify),
        ]
        .iter()
        .filter_map(|(direction, count)| count.map(|count| format!("{direction} {count}")))
        .collect();
        verdict.fail_with(format!(
            "SCSI total_uncorrected_errors {total} ({}) > fail threshold {}",
            parts.join(", "),
            thresholds.uncorrected_errors_fail_above
        ));
    }
    if let Some(grown) = scsi.grown_defects {
        judge_at_or_above(
            verdict,
            "SCSI scsi_grown_defect_list",
            grown,
            "",
            thresholds.grown_defects_warn,
            thresholds.grown_defects_fail,
        );
    }
}

fn describe_entry(entry: &SelfTestEntry) -> String {
    let mut text = format!("{} \"{}\"", entry.test, entry.status);
    if let Some(hours) = entry.power_on_hours {
        text.push_str(&format!(" at {hours} h"));
    }
    if let Some(lba) = entry.failing_lba {
        text.push_str(&format!(", LBA {lba}"));
    }
    text
}

fn judge_self_tests(tests: &SelfTests, verdict: &mut Verdict) {
    let failures: Vec<&SelfTestEntry> = tests
        .log
        .iter()
        .filter(|entry| entry.outcome == SelfTestOutcome::Failed)
        .collect();
    if !failures.is_empty() {
        let listed: Vec<String> = failures
            .iter()
            .take(LISTED_FAILURES)
            .map(|entry| describe_entry(entry))
            .collect();
        let more = failures.len().saturating_sub(LISTED_FAILURES);
        verdict.fail_with(format!(
            "self-test log: {} failed self-test{} (newest first): {}{}",
            failures.len(),
            if failures.len() == 1 { "" } else { "s" },
            listed.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if let Some(last) = &tests.last_status
        && last.outcome == SelfTestOutcome::Failed
    {
        verdict.fail_with(format!("last self-test failed: \"{}\"", last.status));
    }
    if let Some(running) = &tests.in_progress {
        verdict.add(
            Status::Pass,
            format!(
                "a self-test is in progress ({}{}): not a failure",
                running.status,
                running
                    .remaining_percent
                    .filter(|_| !running.status.contains('%'))
                    .map(|remaining| format!(", {remaining}% remaining"))
                    .unwrap_or_default()
            ),
        );
    }
}

pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let output = parse(input)?;
    let verdict = verdict(&output, thresholds);
    ToolReport::new(Tool::Smartctl, &output, verdict)
}
