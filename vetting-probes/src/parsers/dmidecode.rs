//! Parser for `dmidecode` text output (SMBIOS types 0, 1, 2, 3, 4, 16, 17,
//! 38 and 39; other and OEM types are counted), and the shape that the
//! binary SMBIOS reader ([`crate::inventory::smbios`]) fills too.
//!
//! Real dumps differ: OEM types first, no "N structures occupying" line,
//! 128 placeholder CPUs and DIMM slots in VMware guests, values with double,
//! leading or trailing spaces, "NO DIMM" / "No Module Installed" for empty
//! slots, "Populated, Idle" processors (a second CPU that is present and
//! counts). dmidecode output is inventory: its verdict is always `pass`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::text;
use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "dmidecode";

/// The SMBIOS facts vetting uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dmidecode {
    /// `3.1` from `# dmidecode 3.1` (absent for the binary reader).
    pub dmidecode_version: Option<String>,
    /// `2.8` from `SMBIOS 2.8 present.`
    pub smbios_version: Option<String>,
    /// Structures found.
    pub structure_count: usize,
    /// What the `N structures occupying M bytes.` line says, where present.
    pub declared_structure_count: Option<usize>,
    /// How many structures of each type (OEM types 128..=255 included).
    pub type_counts: BTreeMap<u8, usize>,
    pub bios: Option<Bios>,
    pub system: Option<SystemRecord>,
    pub baseboards: Vec<Baseboard>,
    pub chassis: Vec<Chassis>,
    pub processors: Vec<Processor>,
    pub memory_arrays: Vec<MemoryArray>,
    pub memory_devices: Vec<MemoryDevice>,
    pub power_supplies: Vec<PowerSupplyRecord>,
    /// SMBIOS type 38: an IPMI BMC is described by the firmware.
    pub ipmi: Option<IpmiDevice>,
    pub summary: Summary,
}

/// Type 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bios {
    pub vendor: Option<String>,
    pub version: Option<String>,
    pub release_date: Option<String>,
}

/// Type 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemRecord {
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub sku: Option<String>,
    pub family: Option<String>,
}

/// Type 2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseboard {
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
}

/// Type 3.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chassis {
    pub manufacturer: Option<String>,
    pub chassis_type: Option<String>,
    pub serial: Option<String>,
}

/// Type 4, one socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processor {
    pub handle: u16,
    pub socket: Option<String>,
    pub manufacturer: Option<String>,
    /// The model string (`Version:`), trimmed.
    pub version: Option<String>,
    /// As printed: `Populated, Enabled`, `Populated, Idle`, `Unpopulated`.
    pub status: Option<String>,
    /// A processor is in the socket.
    pub populated: bool,
    /// Populated and enabled or idle: a CPU the machine has and uses.
    pub active: bool,
    pub core_count: Option<u32>,
    pub core_enabled: Option<u32>,
    pub thread_count: Option<u32>,
    pub max_speed_mhz: Option<u32>,
    pub current_speed_mhz: Option<u32>,
    pub serial: Option<String>,
    pub part_number: Option<String>,
}

/// Type 16.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryArray {
    pub handle: u16,
    pub location: Option<String>,
    pub usage: Option<String>,
    pub error_correction: Option<String>,
    pub maximum_capacity_bytes: Option<u64>,
    pub number_of_devices: Option<u32>,
}

/// Type 17, one slot, populated or not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryDevice {
    pub handle: u16,
    pub array_handle: Option<u16>,
    pub locator: Option<String>,
    pub bank_locator: Option<String>,
    /// `None` for an empty slot (or an unknown size).
    pub size_bytes: Option<u64>,
    pub populated: bool,
    pub form_factor: Option<String>,
    /// `DDR4`, `DDR5`, or dmidecode's `<OUT OF SPEC>` for types it predates.
    pub memory_type: Option<String>,
    pub speed_mts: Option<u64>,
    pub configured_speed_mts: Option<u64>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub part_number: Option<String>,
    pub rank: Option<u32>,
}

/// Type 39.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerSupplyRecord {
    pub location: Option<String>,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub model_part_number: Option<String>,
    pub max_power_watts: Option<u64>,
    /// As printed: `Present, OK`, `Not Present`.
    pub status: Option<String>,
    pub present: bool,
}

/// Type 38.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpmiDevice {
    pub interface_type: Option<String>,
    pub specification_version: Option<String>,
}

/// Totals derived from the records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Sum of the populated memory devices.
    pub total_memory_bytes: u64,
    pub dimm_slots: usize,
    pub dimms_populated: usize,
    pub cpu_sockets: usize,
    /// Processors that are populated and enabled or idle.
    pub cpus_active: usize,
    pub cores_active: u32,
    pub threads_active: u32,
}

impl Dmidecode {
    /// Clears what describes a module in empty slots (older dmidecode
    /// prints `Manufacturer: NO DIMM` and the like there, newer versions
    /// print nothing), then fills [`Dmidecode::summary`] from the records.
    pub fn summarize(&mut self) {
        for slot in self
            .memory_devices
            .iter_mut()
            .filter(|slot| !slot.populated)
        {
            slot.speed_mts = None;
            slot.configured_speed_mts = None;
            slot.manufacturer = None;
            slot.serial = None;
            slot.part_number = None;
            slot.rank = None;
        }
        let populated = self.memory_devices.iter().filter(|dimm| dimm.populated);
        let active = self.processors.iter().filter(|cpu| cpu.active);
        self.summary = Summary {
            total_memory_bytes: populated.clone().filter_map(|dimm| dimm.size_bytes).sum(),
            dimm_slots: self.memory_devices.len(),
            dimms_populated: populated.count(),
            cpu_sockets: self.processors.len(),
            cpus_active: active.clone().count(),
            cores_active: active
                .clone()
                .filter_map(|cpu| cpu.core_enabled.or(cpu.core_count))
                .sum(),
            threads_active: active.filter_map(|cpu| cpu.thread_count).sum(),
        };
    }
}

/// Parses `dmidecode` text output. Input without a single `Handle` record
/// (e.g. "No SMBIOS nor DMI entry point found") is an error.
pub fn parse(input: &[u8]) -> Result<Dmidecode, ParseError> {
    let text = text(TOOL, input)?;
    let mut data = Dmidecode::default();
    let mut records: Vec<Record> = Vec::new();
    let mut current: Option<Record> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some((handle, kind)) = parse_handle_line(line) {
            records.extend(current.take());
            current = Some(Record::new(handle, kind));
            continue;
        }
        let Some(record) = current.as_mut() else {
            parse_preamble_line(line, &mut data);
            continue;
        };
        if line.trim().is_empty() {
            records.extend(current.take());
            continue;
        }
        record.push_line(line);
    }
    records.extend(current);
    if records.is_empty() {
        return Err(ParseError::format(
            TOOL,
            "no DMI structures (no `Handle` line) found",
        ));
    }
    data.structure_count = records.len();
    for record in &records {
        *data.type_counts.entry(record.kind).or_default() += 1;
        apply_record(record, &mut data);
    }
    data.summarize();
    Ok(data)
}

/// dmidecode output is inventory: it passes, with no reasons.
pub fn verdict(_data: &Dmidecode, _thresholds: &Thresholds) -> Verdict {
    Verdict::pass()
}

pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let data = parse(input)?;
    let verdict = verdict(&data, thresholds);
    ToolReport::new(Tool::Dmidecode, &data, verdict)
}

/// `Handle 0x0400, DMI type 4, 42 bytes` → (0x0400, 4).
fn parse_handle_line(line: &str) -> Option<(u16, u8)> {
    let rest = line.strip_prefix("Handle 0x")?;
    let (handle, rest) = rest.split_once(',')?;
    let handle = u16::from_str_radix(handle.trim(), 16).ok()?;
    let rest = rest.trim_start().strip_prefix("DMI type ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let kind = digits.parse::<u8>().ok()?;
    Some((handle, kind))
}

fn parse_preamble_line(line: &str, data: &mut Dmidecode) {
    let line = line.trim();
    if let Some(version) = line.strip_prefix("# dmidecode ") {
        data.dmidecode_version = Some(version.trim().to_string());
    } else if let Some(rest) = line.strip_prefix("SMBIOS ") {
        if let Some(version) = rest.strip_suffix(" present.") {
            data.smbios_version = Some(version.trim().to_string());
        }
    } else if let Some((count, _)) = line.split_once(" structures occupying ") {
        data.declared_structure_count = count.trim().parse().ok();
    }
}

/// One `Handle` block: its title and its `Key: value` fields (list items
/// under a key are kept with it).
#[derive(Debug)]
struct Record {
    handle: u16,
    kind: u8,
    title: Option<String>,
    fields: Vec<(String, String)>,
}

impl Record {
    fn new(handle: u16, kind: u8) -> Self {
        Record {
            handle,
            kind,
            title: None,
            fields: Vec::new(),
        }
    }

    fn push_line(&mut self, line: &str) {
        if self.title.is_none() && !line.starts_with('\t') && !line.starts_with(' ') {
            self.title = Some(line.trim().to_string());
            return;
        }
        // Two tabs: a list item or hex dump under the previous key.
        if line.starts_with("\t\t") {
            return;
        }
        let field = line.trim_start();
        match field.split_once(':') {
            Some((key, value)) => self
                .fields
                .push((key.trim().to_string(), value.trim().to_string())),
            None => self.fields.push((field.trim().to_string(), String::new())),
        }
    }

    /// The value of the first field named `key`, trimmed (may be empty).
    fn raw(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// The value with placeholders ("Not Specified", "To Be Filled By
    /// O.E.M.", ...) taken as absent.
    fn value(&self, key: &str) -> Option<String> {
        self.raw(key).and_then(meaningful)
    }

    /// The value as printed (placeholders kept), `None` when empty.
    fn text(&self, key: &str) -> Option<String> {
        self.raw(key)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.raw(key)?.split_whitespace().next()?.parse().ok()
    }

    fn hex_handle(&self, key: &str) -> Option<u16> {
        let value = self.raw(key)?;
        u16::from_str_radix(value.strip_prefix("0x")?, 16).ok()
    }
}

/// Placeholder strings that firmware puts where it has no value.
const PLACEHOLDERS: &[&str] = &[
    "not specified",
    "not provided",
    "not available",
    "not applicable",
    "not settable",
    "not present",
    "unknown",
    "to be filled by o.e.m.",
    "default string",
    "n/a",
    "na",
    "none",
    "no module installed",
    "<bad index>",
    "system serial number",
    "system product name",
    "system manufacturer",
    "system version",
    "base board serial number",
    "chassis serial number",
    "0123456789",
    "123456789",
];

/// The trimmed value, or `None` for an empty value or a placeholder.
pub fn meaningful(value: &str) -> Option<String> {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    if value.is_empty() || PLACEHOLDERS.contains(&lower.as_str()) {
        None
    } else {
        Some(value.to_string())
    }
}

/// `16384 MB`, `16 GB`, `2048 kB`, `1 TB` → bytes; `No Module Installed`,
/// `Unknown` → `None`.
pub fn parse_size(value: &str) -> Option<u64> {
    let mut words = value.split_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    let unit = words.next().unwrap_or("bytes");
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "BYTES" | "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Processor status as dmidecode prints it → (populated, active).
pub fn processor_status(status: &str) -> (bool, bool) {
    let lower = status.to_ascii_lowercase();
    let populated = lower.starts_with("populated");
    let active = populated
        && lower
            .split(',')
            .nth(1)
            .is_some_and(|state| matches!(state.trim(), "enabled" | "idle"));
    (populated, active)
}

fn apply_record(record: &Record, data: &mut Dmidecode) {
    match record.kind {
        0 => {
            data.bios.get_or_insert(Bios {
                vendor: record.value("Vendor"),
                version: record.value("Version"),
                release_date: record.value("Release Date"),
            });
        }
        1 => {
            data.system.get_or_insert(SystemRecord {
                manufacturer: record.value("Manufacturer"),
                product: record.value("Product Name"),
                version: record.value("Version"),
                serial: record.value("Serial Number"),
                // dmidecode 3.2 and later print it in lower case: one
                // spelling, so identities compare across versions.
                uuid: record
                    .value("UUID")
                    .filter(|uuid| !is_placeholder_uuid(uuid))
                    .map(|uuid| uuid.to_ascii_uppercase()),
                sku: record.value("SKU Number"),
                family: record.value("Family"),
            });
        }
        2 => data.baseboards.push(Baseboard {
            manufacturer: record.value("Manufacturer"),
            product: record.value("Product Name"),
            version: record.value("Version"),
            serial: record.value("Serial Number"),
        }),
        3 => data.chassis.push(Chassis {
            manufacturer: record.value("Manufacturer"),
            chassis_type: record.value("Type"),
            serial: record.value("Serial Number"),
        }),
        4 => {
            let status = record.text("Status");
            let (populated, active) = status.as_deref().map(processor_status).unwrap_or_default();
            data.processors.push(Processor {
                handle: record.handle,
                socket: record.value("Socket Designation"),
                manufacturer: record.value("Manufacturer"),
                version: record.value("Version"),
                status,
                populated,
                active,
                core_count: record.number("Core Count"),
                core_enabled: record.number("Core Enabled"),
                thread_count: record.number("Thread Count"),
                max_speed_mhz: record.number("Max Speed"),
                current_speed_mhz: record.number("Current Speed"),
                serial: record.value("Serial Number"),
                part_number: record.value("Part Number"),
            });
        }
        16 => data.memory_arrays.push(MemoryArray {
            handle: record.handle,
            location: record.value("Location"),
            usage: record.value("Use"),
            error_correction: record.value("Error Correction Type"),
            maximum_capacity_bytes: record.raw("Maximum Capacity").and_then(parse_size),
            number_of_devices: record.number("Number Of Devices"),
        }),
        17 => {
            let size_bytes = record
                .raw("Size")
                .and_then(parse_size)
                .filter(|&size| size > 0);
            data.memory_devices.push(MemoryDevice {
                handle: record.handle,
                array_handle: record.hex_handle("Array Handle"),
                locator: record.value("Locator"),
                bank_locator: record.value("Bank Locator"),
                populated: size_bytes.is_some(),
                size_bytes,
                form_factor: record.value("Form Factor"),
                memory_type: record.value("Type"),
                speed_mts: record.number("Speed"),
                configured_speed_mts: record
                    .number("Configured Memory Speed")
                    .or_else(|| record.number("Configured Clock Speed")),
                manufacturer: record.value("Manufacturer"),
                serial: record.value("Serial Number"),
                part_number: record.value("Part Number"),
                rank: record.number("Rank"),
            });
        }
        38 => {
            data.ipmi.get_or_insert(IpmiDevice {
                interface_type: record.value("Interface Type"),
                specification_version: record.value("Specification Version"),
            });
        }
        39 => {
            let status = record.text("Status");
            data.power_supplies.push(PowerSupplyRecord {
                location: record.value("Location"),
                name: record.value("Name"),
                manufacturer: record.value("Manufacturer"),
                serial: record.value("Serial Number"),
                model_part_number: record.value("Model Part Number"),
                max_power_watts: record.number("Max Power Capacity"),
                present: status
                    .as_deref()
                    .is_some_and(|status| status.to_ascii_lowercase().starts_with("present")),
                status,
            });
        }
        _ => {}
    }
}

/// All-zero or all-F UUIDs mean "not set".
pub fn is_placeholder_uuid(uuid: &str) -> bool {
    let hex: String = uuid.chars().filter(char::is_ascii_hexdigit).collect();
    hex.is_empty() || hex.chars().all(|c| c == '0') || hex.chars().all(|c| c == 'F' || c == 'f')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("16384 MB"), Some(16 << 30));
        assert_eq!(parse_size("16 GB"), Some(16 << 30));
        assert_eq!(parse_size("2048 kB"), Some(2 << 20));
        assert_eq!(parse_size("No Module Installed"), None);
        assert_eq!(parse_size("Unknown"), None);
    }

    #[test]
    fn idle_processors_count_and_disabled_ones_do_not() {
        assert_eq!(processor_status("Populated, Enabled"), (true, true));
        assert_eq!(processor_status("Populated, Idle"), (true, true));
        assert_eq!(
            processor_status("Populated, Disabled By BIOS"),
            (true, false)
        );
        assert_eq!(processor_status("Unpopulated"), (false, false));
    }

    #[test]
    fn output_without_structures_is_an_error() {
        let output = b"# dmidecode 3.4\nScanning /dev/mem for entry point.\n/dev/mem: No such file or directory\n";
        assert!(parse(output).is_err());
    }

    #[test]
    fn placeholders_are_absent_values() {
        assert_eq!(meaningful("  To Be Filled By O.E.M. "), None);
        assert_eq!(meaningful("Default string"), None);
        assert_eq!(
            meaningful(" Intel(R) Xeon(R) "),
            Some("Intel(R) Xeon(R)".into())
        );
    }
}
