//! Parser for `lspci -vmm` output, with or without `-nn` (names followed by
//! `[id]`s), tab- or space-separated, with or without PCI domains (`-D`).
//!
//! Every record is kept, in order. Records that repeat another function's
//! bus, device, function and ids under another domain (e.g. `ff:02:05.0`
//! beside `02:05.0`) are kept too, and listed in `notes`. lspci output is
//! inventory: its verdict is always `pass`.

use serde::{Deserialize, Serialize};

use crate::error::text;
use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "lspci";

/// The records of one `lspci -vmm` run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lspci {
    pub devices: Vec<PciRecord>,
    /// Observations about the records (duplicates under another domain).
    pub notes: Vec<String>,
}

/// One PCI function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciRecord {
    /// As printed: `00:1f.2`, `0000:00:1f.2`.
    pub slot: String,
    pub domain: Option<String>,
    pub bus: Option<String>,
    pub device_number: Option<String>,
    pub function: Option<String>,
    pub class: Option<String>,
    pub class_id: Option<String>,
    pub vendor: Option<String>,
    pub vendor_id: Option<String>,
    pub device: Option<String>,
    pub device_id: Option<String>,
    pub subsystem_vendor: Option<String>,
    pub subsystem_vendor_id: Option<String>,
    pub subsystem_device: Option<String>,
    pub subsystem_device_id: Option<String>,
    pub revision: Option<String>,
    pub prog_if: Option<String>,
    pub physical_slot: Option<String>,
    /// With `-k`: the driver in use and the modules that could drive it.
    pub driver: Option<String>,
    pub modules: Vec<String>,
    pub numa_node: Option<String>,
    pub iommu_group: Option<String>,
}

impl PciRecord {
    /// `bus:device.function`, without the domain.
    pub fn bus_address(&self) -> String {
        format!(
            "{}:{}.{}",
            self.bus.as_deref().unwrap_or("?"),
            self.device_number.as_deref().unwrap_or("?"),
            self.function.as_deref().unwrap_or("?")
        )
    }
}

/// Parses `lspci -vmm [-nn] [-D] [-k]` output.
pub fn parse(input: &[u8]) -> Result<Lspci, ParseError> {
    let text = text(TOOL, input)?;
    let mut devices = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !fields.is_empty() {
                devices.push(record(std::mem::take(&mut fields), number)?);
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(ParseError::format(
                TOOL,
                format!(
                    "line {}: expected `Key:<tab>value`, got {line:?}",
                    number + 1
                ),
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ParseError::format(
                TOOL,
                format!("line {}: {key:?} is not an lspci field name", number + 1),
            ));
        }
        fields.push((key.to_string(), value.trim().to_string()));
    }
    if !fields.is_empty() {
        devices.push(record(fields, text.lines().count())?);
    }
    if devices.is_empty() {
        return Err(ParseError::format(TOOL, "no device records"));
    }
    let notes = duplicate_notes(&devices);
    Ok(Lspci { devices, notes })
}

/// lspci output is inventory: it passes, with no reasons.
pub fn verdict(_data: &Lspci, _thresholds: &Thresholds) -> Verdict {
    Verdict::pass()
}

pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let data = parse(input)?;
    let verdict = verdict(&data, thresholds);
    ToolReport::new(Tool::Lspci, &data, verdict)
}

/// `Intel Corporation [8086]` → (`Intel Corporation`, `8086`). Only a
/// trailing bracket of hex digits is an id: `G96GL [Quadro FX 580]` keeps
/// its brackets.
pub fn split_id(value: &str) -> (Option<String>, Option<String>) {
    let value = value.trim();
    if let Some(open) = value
        .rfind(" [")
        .or_else(|| value.starts_with('[').then_some(0))
        && let Some(inner) = value[open..].trim_start().strip_prefix('[')
        && let Some(id) = inner.strip_suffix(']')
        && !id.is_empty()
        && id.len() <= 6
        && id.chars().all(|c| c.is_ascii_hexdigit())
    {
        let name = value[..open].trim();
        let name = (!name.is_empty()).then(|| name.to_string());
        return (name, Some(id.to_ascii_lowercase()));
    }
    ((!value.is_empty()).then(|| value.to_string()), None)
}

fn record(fields: Vec<(String, String)>, line: usize) -> Result<PciRecord, ParseError> {
    let mut record = PciRecord::default();
    let mut slot = None;
    for (key, value) in fields {
        let (name, id) = split_id(&value);
        match key.as_str() {
            "Slot" => slot = Some(value),
            "Class" => (record.class, record.class_id) = (name, id),
            "Vendor" => (record.vendor, record.vendor_id) = (name, id),
            "Device" => (record.device, record.device_id) = (name, id),
            "SVendor" => (record.subsystem_vendor, record.subsystem_vendor_id) = (name, id),
            "SDevice" => (record.subsystem_device, record.subsystem_device_id) = (name, id),
            "Rev" => record.revision = Some(value),
            "ProgIf" => record.prog_if = Some(value),
            "PhySlot" => record.physical_slot = Some(value),
            "Driver" => record.driver = Some(value),
            "Module" => record.modules.push(value),
            "NUMANode" => record.numa_node = Some(value),
            "IOMMUGroup" => record.iommu_group = Some(value),
            _ => {}
        }
    }
    let Some(slot) = slot.filter(|slot| !slot.is_empty()) else {
        return Err(ParseError::format(
            TOOL,
            format!("the record ending at line {line} has no Slot"),
        ));
    };
    let (device_part, function) = match slot.rsplit_once('.') {
        Some((device, function)) => (device, Some(function.to_string())),
        None => (slot.as_str(), None),
    };
    let mut parts = device_part.rsplit(':');
    record.device_number = parts.next().map(str::to_string);
    record.bus = parts.next().map(str::to_string);
    record.domain = parts.next().map(str::to_string);
    record.function = function;
    record.slot = slot;
    Ok(record)
}

/// Notes records that repeat an earlier function's bus address and ids
/// under another domain.
fn duplicate_notes(devices: &[PciRecord]) -> Vec<String> {
    // Per bus address and ids, the first record of each of the first two
    // domains seen: the earliest record under another domain than a later
    // one's is always one of those two. One pass, so a hostile output of
    // many records costs linear time, not quadratic.
    type Key<'a> = (
        String,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let mut first: std::collections::HashMap<Key<'_>, Vec<&PciRecord>> =
        std::collections::HashMap::new();
    let mut notes = Vec::new();
    for later in devices {
        let key = (
            later.bus_address(),
            later.vendor_id.as_deref(),
            later.device_id.as_deref(),
            later.vendor.as_deref(),
            later.device.as_deref(),
        );
        let seen = first.entry(key).or_default();
        if let Some(earlier) = seen.iter().find(|earlier| earlier.domain != later.domain) {
            notes.push(format!(
                "{} repeats {} (same bus address and ids in another PCI domain): likely a duplicate record",
                later.slot, earlier.slot
            ));
        }
        if seen.len() < 2 && seen.iter().all(|earlier| earlier.domain != later.domain) {
            seen.push(later);
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_split_only_from_a_trailing_hex_bracket() {
        assert_eq!(
            split_id("Intel Corporation [8086]"),
            (Some("Intel Corporation".into()), Some("8086".into()))
        );
        assert_eq!(
            split_id("G96GL [Quadro FX 580]"),
            (Some("G96GL [Quadro FX 580]".into()), None)
        );
        assert_eq!(
            split_id("G96GL [Quadro FX 580] [0659]"),
            (Some("G96GL [Quadro FX 580]".into()), Some("0659".into()))
        );
        assert_eq!(split_id("Host bridge"), (Some("Host bridge".into()), None));
    }

    #[test]
    fn slots_with_and_without_domain() {
        let data = parse(b"Slot:\t0000:3b:00.1\nClass:\tEthernet controller [0200]\n\nSlot: 02:05.0\nClass: SATA controller\n").unwrap();
        assert_eq!(data.devices[0].domain.as_deref(), Some("0000"));
        assert_eq!(data.devices[0].bus.as_deref(), Some("3b"));
        assert_eq!(data.devices[0].function.as_deref(), Some("1"));
        assert_eq!(data.devices[1].domain, None);
        assert_eq!(data.devices[1].class_id, None);
    }
    #[test]
    fn a_repeat_names_the_earliest_record_of_another_domain() {
        let record = |domain: Option<&str>, slot: &str| PciRecord {
            slot: slot.into(),
            domain: domain.map(str::to_string),
            bus: Some("02".into()),
            device_number: Some("05".into()),
            function: Some("0".into()),
            vendor_id: Some("8086".into()),
            device_id: Some("2021".into()),
            ..Default::default()
        };
        let devices = vec![
            record(None, "02:05.0"),
            record(None, "02:05.0 again"),
            record(Some("ff"), "ff:02:05.0"),
            record(Some("ee"), "ee:02:05.0"),
            record(None, "02:05.0 third"),
        ];
        assert_eq!(
            duplicate_notes(&devices)
                .iter()
                .map(|note| note.split(" (").next().unwrap_or_default().to_string())
                .collect::<Vec<_>>(),
            [
                "ff:02:05.0 repeats 02:05.0",
                "ee:02:05.0 repeats 02:05.0",
                "02:05.0 third repeats ff:02:05.0",
            ]
        );
    }
}
