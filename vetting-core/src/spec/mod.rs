//! The expected hardware of a host (the spec): its schema, parsing (YAML or
//! JSON, `schema_version: 1`), per-host overrides merged over a named
//! profile, the diff engine that compares a spec with an inventory and gives
//! every difference a severity, the identity check, and the device
//! allowlist handed to the agent.
//!
//! A spec, in YAML (JSON is accepted too: it is a subset of YAML):
//!
//! ```yaml
//! schema_version: 1
//! system:
//!   serial: CZ1234ABCD          # identity: a mismatch is critical
//!   uuid: 35353636-3335-5a43-3232-343630335138
//!   product: "ProLiant DL380p*" # glob pattern
//! cpu:
//!   model: "*E5-2620*"          # glob pattern, every socket must match
//!   sockets: 2
//!   cores: 12                   # physical cores over all sockets
//! memory:
//!   total: 64GiB                # or total_bytes: 68719476736
//!   tolerance_percent: 5        # default 5
//!   dimm_count: 10
//! disks:
//!   exact_count: 3              # disks in total, not counting removable, USB, MMC/SD
//!   devices:
//!     - serial: S3Z8NB0K123456
//!     - wwn: "0x5000c500a1b2c3d4"
//!     - model: "MZ7LH1T9*"      # glob pattern
//!       size: 1.92TB            # or size_bytes; default tolerance 1 %
//!       count: 2
//! nics:
//!   count: 4
//!   min_speed_mbps: 10000       # checked against SUPPORTED speeds
//!   min_speed_count: 2          # how many NICs need it (default: count)
//! gpus:
//!   count: 8
//!   model: "*H100*"
//! psus:
//!   count: 2
//! ```
//!
//! Patterns are globs, not regular expressions: `*` matches any run of
//! characters, `?` one character, everything else itself; matching is
//! case-insensitive, runs of whitespace count as one space, and the pattern
//! must match the whole value (`E5-2620` does not match `Intel(R) Xeon(R)
//! CPU E5-2620 0 @ 2.00GHz`; `*E5-2620 *` does).
//!
//! Sizes are whole bytes or strings like `64GiB`, `64 GiB`, `1.92TB`,
//! `500 GB`: `KiB`, `MiB`, `GiB`, `TiB`, `PiB` are powers of 1024, `kB`/`KB`,
//! `MB`, `GB`, `TB`, `PB` powers of 1000 (as disks are sold). A bare `G` or
//! `T` is refused as ambiguous.
//!
//! Unknown keys are errors that name the key and its position. The
//! operator's guide is `docs/spec.md`.

mod diff;
pub(crate) mod store;

use serde::{Deserialize, Deserializer, Serialize};
use vetting_probes::protocol::{ExpectedDisk, ExpectedParts};

pub use diff::{diff, identity_diff, matched_disks};
pub use store::{SpecOutcome, SpecProfile};
pub use vetting_probes::glob::glob_matches;

/// The spec schema version this build reads and writes.
pub const SPEC_SCHEMA_VERSION: u32 = 1;

/// The default memory tolerance, in percent of the expected total.
pub const DEFAULT_MEMORY_TOLERANCE_PERCENT: f64 = 5.0;

/// The default disk size tolerance, in percent of the expected size.
pub const DEFAULT_DISK_TOLERANCE_PERCENT: f64 =
    vetting_probes::disks::DEFAULT_SIZE_TOLERANCE_PERCENT;

/// The expected hardware of a host (or of a server model, as a profile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<DisksSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<NicsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<GpusSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psus: Option<PsusSpec>,
}

/// The machine's identity and product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSpec {
    /// The system serial number (SMBIOS type 1). A mismatch is critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The system UUID (SMBIOS type 1). A mismatch is critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// A glob pattern for the product name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
}

/// The processors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuSpec {
    /// A glob pattern every populated socket's model must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Populated sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Physical cores over all sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
}

/// Installed memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    /// Installed bytes (`total: 64GiB` is accepted too).
    #[serde(
        default,
        alias = "total",
        deserialize_with = "deserialize_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_bytes: Option<u64>,
    /// How far below (critical) or above (warning) the total may be, in
    /// percent. Default [`DEFAULT_MEMORY_TOLERANCE_PERCENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_percent: Option<f64>,
    /// Populated DIMM slots (a different count is a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimm_count: Option<u32>,
}

/// The disks: the device allowlist of the Storage stage is derived from
/// `devices`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisksSpec {
    /// How many disks the machine has in total, not counting removable,
    /// USB and MMC/SD disks (see [`vetting_probes::disks`]): fewer is
    /// critical, more a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_count: Option<u32>,
    /// The expected disks, each by serial or WWN, or by model and size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DiskSpec>,
}

/// One expected disk (by serial or WWN), or a group of identical disks (by
/// model and/or size, with a count).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// A glob pattern for the disk model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The disk's size (`size: 1.92TB` is accepted too).
    #[serde(
        default,
        alias = "size",
        deserialize_with = "deserialize_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub size_bytes: Option<u64>,
    /// Default [`DEFAULT_DISK_TOLERANCE_PERCENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_tolerance_percent: Option<f64>,
    /// How many disks of this model and size (default 1). Not allowed with
    /// a serial or WWN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

impl DiskSpec {
    /// Matched by serial or WWN (one disk), rather than by model and size.
    pub fn is_identified(&self) -> bool {
        self.serial.is_some() || self.wwn.is_some()
    }

    /// How many disks this entry stands for.
    pub fn wanted(&self) -> u32 {
        if self.is_identified() {
            1
        } else {
            self.count.unwrap_or(1)
        }
    }

    /// A short description for messages (`serial S1`, `2 × model X, 1.92 TB`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(serial) = &self.serial {
            parts.push(format!("serial {serial}"));
        }
        if let Some(wwn) = &self.wwn {
            parts.push(format!("WWN {wwn}"));
        }
        if let Some(model) = &self.model {
            parts.push(format!("model {model}"));
        }
        if let Some(size) = self.size_bytes {
            parts.push(format!("size {}", format_bytes_decimal(size)));
        }
        let described = parts.join(", ");
        if self.is_identified() || self.wanted() == 1 {
            described
        } else {
            format!("{} × {described}", self.wanted())
        }
    }
}

/// The network interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicsSpec {
    /// Physical NICs: fewer is critical, more a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The speed the NICs must SUPPORT (ethtool's supported link modes),
    /// in Mb/s. The speed negotiated with the vetting switch does not count
    /// against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_speed_mbps: Option<u64>,
    /// How many NICs need `min_speed_mbps` (default: `count`, or 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_speed_count: Option<u32>,
}

/// The GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpusSpec {
    /// Fewer is critical (a missing GPU), more a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// A glob pattern every GPU's model must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The power supplies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsusSpec {
    /// Fewer is critical, more a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// How much a difference matters: a critical one fails SpecValidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(name: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|severity| severity.as_str() == name)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One difference between the spec and what the machine reports (or, with
/// severity `info`, one thing that matched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecDiff {
    /// Where in the spec: `memory.total_bytes`, `disks.devices[1]`,
    /// `identity.serial`.
    pub path: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub severity: Severity,
    /// What an operator reads.
    pub message: String,
}

impl SpecDiff {
    pub(crate) fn new(
        severity: Severity,
        path: impl Into<String>,
        expected: Option<String>,
        actual: Option<String>,
        message: impl Into<String>,
    ) -> SpecDiff {
        SpecDiff {
            path: path.into(),
            expected,
            actual,
            severity,
            message: message.into(),
        }
    }
}

/// A spec that cannot be read or does not make sense. The message names
/// the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The text is not YAML/JSON of the schema (an unknown key, a wrong
    /// type, a bad size string); `message` names the key and position.
    #[error("spec: {message}")]
    Syntax { message: String },
    /// The keys parse but their values contradict each other or are out
    /// of range.
    #[error("spec: `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("spec: schema_version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// The per-host overrides are not a JSON object.
    #[error("spec overrides: {message}")]
    Overrides { message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Parses a spec from YAML or JSON and checks that it makes sense.
pub fn parse_spec(text: &str) -> Result<Spec, SpecError> {
    if text.trim().is_empty() {
        return Err(SpecError::Syntax {
            message: "the spec is empty (it needs at least `schema_version: 1`)".into(),
        });
    }
    let spec: Spec = serde_norway::from_str(text).map_err(|error| SpecError::Syntax {
        message: error.to_string(),
    })?;
    validate(&spec)?;
    Ok(spec)
}

/// The spec a host is held to: its profile with the per-host overrides
/// merged over it as a JSON merge patch (RFC 7396: objects merge key by
/// key, a list or a value replaces, `null` removes). With overrides but no
/// profile, the overrides alone are the spec (`schema_version` may be left
/// out of overrides). `None` when there is neither.
pub fn effective_spec(
    profile: Option<&Spec>,
    overrides: Option<&serde_json::Value>,
) -> Result<Option<Spec>, SpecError> {
    let overrides = overrides.filter(|value| !value.is_null());
    let Some(overrides) = overrides else {
        return Ok(profile.cloned());
    };
    if !overrides.is_object() {
        return Err(SpecError::Overrides {
            message: format!("expected an object of spec keys, found {overrides}"),
        });
    }
    let mut merged = match profile {
        Some(spec) => serde_json::to_value(spec).map_err(|error| SpecError::Overrides {
            message: error.to_string(),
        })?,
        None => serde_json::json!({ "schema_version": SPEC_SCHEMA_VERSION }),
    };
    merge_patch(&mut merged, overrides);
    if let Some(object) = merged.as_object_mut() {
        object
            .entry("schema_version")
            .or_insert_with(|| serde_json::json!(SPEC_SCHEMA_VERSION));
    }
    // through the YAML parser, so errors name the key path
    let text = serde_json::to_string(&merged).map_err(|error| SpecError::Overrides {
        message: error.to_string(),
    })?;
    parse_spec(&text).map(Some).map_err(|error| match error {
        // positions in the generated text would only mislead
        SpecError::Syntax { message } => SpecError::Overrides {
            message: match message.rfind(" at line ") {
                Some(at) => message[..at].to_string(),
                None => message,
            },
        },
        other => other,
    })
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(patch_object) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(Default::default());
    }
    if let serde_json::Value::Object(target_object) = target {
        for (key, value) in patch_object {
            if value.is_null() {
                target_object.remove(key);
            } else {
                merge_patch(
                    target_object
                        .entry(key.clone())
                        .or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
    }
}

/// Checks what serde cannot: versions, ranges, contradictions.
fn validate(spec: &Spec) -> Result<(), SpecError> {
    if spec.schema_version != SPEC_SCHEMA_VERSION {
        return Err(SpecError::UnsupportedVersion {
            found: spec.schema_version,
            supported: SPEC_SCHEMA_VERSION,
        });
    }
    let pattern = |key: &str, value: &Option<String>| -> Result<(), SpecError> {
        match value {
            Some(text) if text.trim().is_empty() => Err(invalid(key, "must not be empty")),
            _ => Ok(()),
        }
    };
    let percent = |key: &str, value: Option<f64>| -> Result<(), SpecError> {
        match value {
            Some(value) if !value.is_finite() || !(0.0..100.0).contains(&value) => Err(invalid(
                key,
                format!("{value} is not a percentage from 0 to below 100"),
            )),
            _ => Ok(()),
        }
    };
    if let Some(system) = &spec.system {
        pattern("system.serial", &system.serial)?;
        pattern("system.uuid", &system.uuid)?;
        pattern("system.product", &system.product)?;
    }
    if let Some(cpu) = &spec.cpu {
        pattern("cpu.model", &cpu.model)?;
        if cpu.sockets == Some(0) {
            return Err(invalid("cpu.sockets", "must be at least 1"));
        }
        if cpu.cores == Some(0) {
            return Err(invalid("cpu.cores", "must be at least 1"));
        }
        if let (Some(sockets), Some(cores)) = (cpu.sockets, cpu.cores)
            && cores < sockets
        {
            return Err(invalid(
                "cpu.cores",
                format!("{cores} cores over {sockets} sockets: `cores` counts all sockets"),
            ));
        }
    }
    if let Some(memory) = &spec.memory {
        if memory.total_bytes == Some(0) {
            return Err(invalid("memory.total_bytes", "must be more than 0"));
        }
        percent("memory.tolerance_percent", memory.tolerance_percent)?;
    }
    if let Some(disks) = &spec.disks {
        let mut listed: u64 = 0;
        for (index, disk) in disks.devices.iter().enumerate() {
            let key = |field: &str| format!("disks.devices[{index}].{field}");
            pattern(&key("serial"), &disk.serial)?;
            pattern(&key("wwn"), &disk.wwn)?;
            pattern(&key("model"), &disk.model)?;
            percent(&key("size_tolerance_percent"), disk.size_tolerance_percent)?;
            if !disk.is_identified() && disk.model.is_none() && disk.size_bytes.is_none() {
                return Err(invalid(
                    format!("disks.devices[{index}]"),
                    "give a serial, a wwn, or a model and/or size",
                ));
            }
            if disk.is_identified() && disk.count.is_some() {
                return Err(invalid(
                    key("count"),
                    "a disk named by serial or WWN is one disk: `count` is for model/size groups",
                ));
            }
            if disk.count == Some(0) {
                return Err(invalid(key("count"), "must be at least 1"));
            }
            if disk.size_bytes == Some(0) {
                return Err(invalid(key("size_bytes"), "must be more than 0"));
            }
            listed += u64::from(disk.wanted());
        }
        if let Some(exact) = disks.exact_count
            && u64::from(exact) < listed
        {
            return Err(invalid(
                "disks.exact_count",
                format!("{exact} is less than the {listed} disks listed in `disks.devices`"),
            ));
        }
    }
    if let Some(nics) = &spec.nics {
        if nics.min_speed_mbps == Some(0) {
            return Err(invalid("nics.min_speed_mbps", "must be more than 0"));
        }
        if let (Some(needed), Some(count)) = (nics.min_speed_count, nics.count)
            && needed > count
        {
            return Err(invalid(
                "nics.min_speed_count",
                format!("{needed} is more than `nics.count` {count}"),
            ));
        }
        if nics.min_speed_count.is_some() && nics.min_speed_mbps.is_none() {
            return Err(invalid(
                "nics.min_speed_count",
                "needs `nics.min_speed_mbps`",
            ));
        }
    }
    if let Some(gpus) = &spec.gpus {
        pattern("gpus.model", &gpus.model)?;
    }
    Ok(())
}

/// The device allowlist the agent's Storage stage works from: one entry
/// per expected disk (by serial or WWN) or group (by model and size, with a
/// count). `model` is a glob pattern (see [`glob_matches`]); `size_bytes`
/// is the nominal size, matched within [`DEFAULT_DISK_TOLERANCE_PERCENT`]
/// unless the spec sets another tolerance. Empty when the spec lists no
/// disks: then nothing destructive runs (an `exact_count` alone allows
/// nothing).
pub fn expected_disks(spec: &Spec) -> Vec<ExpectedDisk> {
    let Some(disks) = &spec.disks else {
        return Vec::new();
    };
    disks
        .devices
        .iter()
        .map(|disk| ExpectedDisk {
            serial: disk.serial.clone(),
            wwn: disk.wwn.clone(),
            model: disk.model.clone(),
            size_bytes: disk.size_bytes,
            count: if disk.is_identified() {
                None
            } else {
                Some(disk.wanted())
            },
        })
        .collect()
}

/// What the spec says is there, so a stage whose tool is missing fails
/// instead of skipping when the part is expected.
pub fn expected_parts(spec: &Spec) -> ExpectedParts {
    let gpus = spec.gpus.as_ref().map_or(0, |gpus| {
        gpus.count
            .unwrap_or(if gpus.model.is_some() { 1 } else { 0 })
    });
    let disks = spec.disks.as_ref().map_or(0, |disks| {
        let listed: u32 = disks.devices.iter().map(DiskSpec::wanted).sum();
        disks.exact_count.unwrap_or(listed).max(listed)
    });
    ExpectedParts {
        gpus,
        psus: spec.psus.as_ref().and_then(|psus| psus.count).unwrap_or(0),
        nics: spec.nics.as_ref().and_then(|nics| nics.count).unwrap_or(0),
        disks,
    }
}

/// Parses `64GiB`, `64 GiB`, `1.92TB`, `500 GB`, `68719476736` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number = number.replace('_', "");
    let unit = unit.trim();
    let bad = || {
        format!(
            "`{text}` is not a size: use bytes or a number with a unit \
             (KiB, MiB, GiB, TiB, PiB or kB, MB, GB, TB, PB), e.g. `64GiB`"
        )
    };
    if number.is_empty() {
        return Err(bad());
    }
    let factor: u64 = match unit {
        "" | "B" | "b" | "bytes" => 1,
        "KiB" | "kiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "PiB" => 1 << 50,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "PB" => 1_000_000_000_000_000,
        "K" | "k" | "M" | "G" | "T" | "P" | "g" | "m" | "t" => {
            return Err(format!(
                "`{text}`: the unit `{unit}` is ambiguous; write `{unit}iB` (powers of 1024) \
                 or `{}B` (powers of 1000)",
                unit.to_ascii_uppercase()
            ));
        }
        _ => return Err(bad()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(factor)
            .ok_or_else(|| format!("`{text}` is too large"));
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{text}` is too large"));
    }
    if (bytes - bytes.round()).abs() > 1e-6 * bytes.max(1.0) && factor == 1 {
        return Err(format!("`{text}`: a size in bytes must be a whole number"));
    }
    Ok(bytes.round() as u64)
}

fn deserialize_size<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    struct SizeVisitor;
    impl serde::de::Visitor<'_> for SizeVisitor {
        type Value = Option<u64>;
        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a size in bytes or a string like `64GiB`")
        }
        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(Some(value))
        }
        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
            u64::try_from(value)
                .map(Some)
                .map_err(|_| E::custom(format!("a size cannot be negative ({value})")))
        }
        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "{value}: a size in bytes must be a whole number (or a string like `1.5TB`)"
            )))
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            parse_size(value).map(Some).map_err(E::custom)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(SizeVisitor)
}

/// `68719476736` → `64 GiB` (powers of 1024, as memory is counted).
pub fn format_bytes_binary(bytes: u64) -> String {
    format_bytes(
        bytes,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
    )
}

/// `1920383410176` → `1.92 TB` (powers of 1000, as disks are sold).
pub fn format_bytes_decimal(bytes: u64) -> String {
    format_bytes(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB", "EB"])
}

fn format_bytes(bytes: u64, base: f64, units: &[&str]) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit + 1 < units.len() {
        value /= base;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        let text = format!("{value:.2}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_both_unit_families() {
        assert_eq!(parse_size("64GiB"), Ok(64 << 30));
        assert_eq!(parse_size("64 GiB"), Ok(64 << 30));
        assert_eq!(parse_size("1.92TB"), Ok(1_920_000_000_000));
        assert_eq!(parse_size("500 GB"), Ok(500_000_000_000));
        assert_eq!(parse_size("68719476736"), Ok(68_719_476_736));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
        assert!(parse_size("64G").unwrap_err().contains("ambiguous"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("1.2.3GB").is_err());
        assert!(
            parse_size("99999999999PiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn bytes_format_readably() {
        assert_eq!(format_bytes_binary(64 << 30), "64 GiB");
        assert_eq!(format_bytes_binary(1536), "1.5 KiB");
        assert_eq!(format_bytes_decimal(1_920_383_410_176), "1.92 TB");
        assert_eq!(format_bytes_decimal(512), "512 B");
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = serde_json::json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1});
        merge_patch(
            &mut target,
            &serde_json::json!({"a": {"b": null, "d": 3}, "l": [9], "x": null}),
        );
        assert_eq!(target, serde_json::json!({"a": {"c": 2, "d": 3}, "l": [9]}));
    }

    #[test]
    fn the_allowlist_follows_the_listed_disks() {
        let spec = parse_spec(
            "schema_version: 1\ndisks:\n  exact_count: 4\n  devices:\n    - serial: S1\n    - model: 'X*'\n      size: 1TB\n      count: 2\n",
        )
        .unwrap();
        let allow = expected_disks(&spec);
        assert_eq!(allow.len(), 2);
        assert_eq!(allow[0].serial.as_deref(), Some("S1"));
        assert_eq!(allow[0].count, None);
        assert_eq!(allow[1].count, Some(2));
        assert_eq!(allow[1].size_bytes, Some(1_000_000_000_000));
        assert_eq!(expected_parts(&spec).disks, 4);
        let only_count = parse_spec("schema_version: 1\ndisks:\n  exact_count: 2\n").unwrap();
        assert!(expected_disks(&only_count).is_empty());
    }
}
