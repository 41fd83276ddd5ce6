//! Reads the binary SMBIOS tables (`/sys/firmware/dmi/tables/smbios_entry_point`
//! and `DMI`) where dmidecode is absent, into the same shape the dmidecode
//! text parser gives ([`Dmidecode`]). Types 0, 1, 2, 3, 4, 16, 17, 38 and
//! 39 are decoded; every other type is counted. Enumerations are named as
//! dmidecode names them, so both readers agree.
//!
//! Layouts follow the DMTF SMBIOS specification (DSP0134); a structure is a
//! formatted area (`type`, `length`, `handle`, fields) followed by a set of
//! NUL-terminated strings ending in an empty one.

use crate::ParseError;
use crate::parsers::dmidecode::{
    Baseboard, Bios, Chassis, Dmidecode, IpmiDevice, MemoryArray, MemoryDevice, PowerSupplyRecord,
    Processor, SystemRecord, is_placeholder_uuid, meaningful, processor_status,
};

const TOOL: &str = "smbios";

/// What the entry point says about the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    /// `3.0.0` for a 64-bit entry point, `2.8` for a 32-bit one.
    pub version: String,
    pub major: u8,
    pub minor: u8,
    /// The table's length (its maximum size for SMBIOS 3).
    pub table_length: u32,
    /// The table's physical address (unused when the table comes from sysfs).
    pub table_address: u64,
    /// The number of structures, where the entry point says (SMBIOS 2 only).
    pub structure_count: Option<u16>,
}

/// Decodes an `_SM3_`, `_SM_` or legacy `_DMI_` entry point.
pub fn parse_entry_point(bytes: &[u8]) -> Result<EntryPoint, ParseError> {
    if bytes.starts_with(b"_SM3_") {
        if bytes.len() < 0x18 {
            return Err(ParseError::format(
                TOOL,
                "SMBIOS 3 entry point is truncated",
            ));
        }
        let (major, minor, revision) = (bytes[7], bytes[8], bytes[9]);
        return Ok(EntryPoint {
            version: format!("{major}.{minor}.{revision}"),
            major,
            minor,
            table_length: dword(bytes, 0x0C).unwrap_or(0),
            table_address: qword(bytes, 0x10).unwrap_or(0),
            structure_count: None,
        });
    }
    if bytes.starts_with(b"_SM_") {
        if bytes.len() < 0x1F {
            return Err(ParseError::format(
                TOOL,
                "SMBIOS 2 entry point is truncated",
            ));
        }
        let (major, minor) = (bytes[6], bytes[7]);
        return Ok(EntryPoint {
            version: format!("{major}.{minor}"),
            major,
            minor,
            table_length: word(bytes, 0x16).map(u32::from).unwrap_or(0),
            table_address: dword(bytes, 0x18).map(u64::from).unwrap_or(0),
            structure_count: word(bytes, 0x1C),
        });
    }
    if bytes.starts_with(b"_DMI_") {
        if bytes.len() < 0x0F {
            return Err(ParseError::format(
                TOOL,
                "legacy DMI entry point is truncated",
            ));
        }
        let revision = bytes[0x0E];
        let (major, minor) = (revision >> 4, revision & 0x0F);
        return Ok(EntryPoint {
            version: format!("{major}.{minor}"),
            major,
            minor,
            table_length: word(bytes, 0x06).map(u32::from).unwrap_or(0),
            table_address: dword(bytes, 0x08).map(u64::from).unwrap_or(0),
            structure_count: word(bytes, 0x0C),
        });
    }
    Err(ParseError::format(
        TOOL,
        "no SMBIOS entry point anchor (_SM3_, _SM_ or _DMI_)",
    ))
}

/// Decodes an SMBIOS table with the entry point that describes it.
pub fn parse_tables(entry_point: &[u8], table: &[u8]) -> Result<Dmidecode, ParseError> {
    let entry = parse_entry_point(entry_point)?;
    let version = u16::from(entry.major) << 8 | u16::from(entry.minor);
    let mut data = Dmidecode {
        smbios_version: Some(entry.version.clone()),
        declared_structure_count: entry.structure_count.map(usize::from),
        ..Dmidecode::default()
    };
    for structure in Structures::new(table) {
        data.structure_count += 1;
        *data.type_counts.entry(structure.kind).or_default() += 1;
        decode(&structure, version, &mut data);
        if structure.kind == 127 {
            break;
        }
    }
    if data.structure_count == 0 {
        return Err(ParseError::format(
            TOOL,
            "the SMBIOS table holds no structure",
        ));
    }
    data.summarize();
    Ok(data)
}

/// One structure: its formatted area and its strings.
struct Structure<'a> {
    kind: u8,
    handle: u16,
    formatted: &'a [u8],
    strings: Vec<&'a [u8]>,
}

impl Structure<'_> {
    fn byte(&self, offset: usize) -> Option<u8> {
        self.formatted.get(offset).copied()
    }

    fn word(&self, offset: usize) -> Option<u16> {
        word(self.formatted, offset)
    }

    fn dword(&self, offset: usize) -> Option<u32> {
        dword(self.formatted, offset)
    }

    fn qword(&self, offset: usize) -> Option<u64> {
        qword(self.formatted, offset)
    }

    /// The string the byte at `offset` points to, with placeholders and bad
    /// indexes taken as absent.
    fn string(&self, offset: usize) -> Option<String> {
        let index = usize::from(self.byte(offset)?);
        let bytes = self.strings.get(index.checked_sub(1)?)?;
        meaningful(&String::from_utf8_lossy(bytes))
    }
}

/// Walks the structures of a table, stopping at the first malformed one.
struct Structures<'a> {
    table: &'a [u8],
    offset: usize,
}

impl<'a> Structures<'a> {
    fn new(table: &'a [u8]) -> Self {
        Structures { table, offset: 0 }
    }
}

impl<'a> Iterator for Structures<'a> {
    type Item = Structure<'a>;

    fn next(&mut self) -> Option<Structure<'a>> {
        let start = self.offset;
        let header = self.table.get(start..start.checked_add(4)?)?;
        let length = usize::from(header[1]);
        if length < 4 {
            return None;
        }
        let formatted = self.table.get(start..start + length)?;
        // The string set ends with two NULs (an empty set is just "\0\0").
        let strings_start = start + length;
        let rest = self.table.get(strings_start..)?;
        let end = rest.windows(2).position(|pair| pair == [0, 0])?;
        let strings = if end == 0 {
            Vec::new()
        } else {
            rest[..end].split(|&byte| byte == 0).collect()
        };
        self.offset = strings_start + end + 2;
        Some(Structure {
            kind: header[0],
            handle: u16::from_le_bytes([header[2], header[3]]),
            formatted,
            strings,
        })
    }
}

fn word(bytes: &[u8], offset: usize) -> Option<u16> {
    let slice = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes([slice[0], slice[1]]))
}

fn dword(bytes: &[u8], offset: usize) -> Option<u32> {
    let slice = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

fn qword(bytes: &[u8], offset: usize) -> Option<u64> {
    let low = dword(bytes, offset)?;
    let high = dword(bytes, offset.checked_add(4)?)?;
    Some(u64::from(high) << 32 | u64::from(low))
}

fn name_in(table: &[&str], code: u8, first: u8) -> Option<String> {
    let index = usize::from(code.checked_sub(first)?);
    table.get(index).map(|name| (*name).to_string())
}

const CHASSIS_TYPES: &[&str] = &[
    "Other",
    "Unknown",
    "Desktop",
    "Low Profile Desktop",
    "Pizza Box",
    "Mini Tower",
    "Tower",
    "Portable",
    "Laptop",
    "Notebook",
    "Hand Held",
    "Docking Station",
    "All In One",
    "Sub Notebook",
    "Space-saving",
    "Lunch Box",
    "Main Server Chassis",
    "Expansion Chassis",
    "Sub Chassis",
    "Bus Expansion Chassis",
    "Peripheral Chassis",
    "RAID Chassis",
    "Rack Mount Chassis",
    "Sealed-case PC",
    "Multi-system",
    "CompactPCI",
    "AdvancedTCA",
    "Blade",
    "Blade Enclosing",
    "Tablet",
    "Convertible",
    "Detachable",
    "IoT Gateway",
    "Embedded PC",
    "Mini PC",
    "Stick PC",
];

const PROCESSOR_STATES: &[&str] = &[
    "Unknown",
    "Enabled",
    "Disabled By User",
    "Disabled By BIOS",
    "Idle",
];

const ARRAY_LOCATIONS: &[&str] = &[
    "Other",
    "Unknown",
    "System Board Or Motherboard",
    "ISA Add-on Card",
    "EISA Add-on Card",
    "PCI Add-on Card",
    "MCA Add-on Card",
    "PCMCIA Add-on Card",
    "Proprietary Add-on Card",
    "NuBus",
];

const ARRAY_USES: &[&str] = &[
    "Other",
    "Unknown",
    "System Memory",
    "Video Memory",
    "Flash Memory",
    "Non-volatile RAM",
    "Cache Memory",
];

const ERROR_CORRECTION_TYPES: &[&str] = &[
    "Other",
    "Unknown",
    "None",
    "Parity",
    "Single-bit ECC",
    "Multi-bit ECC",
    "CRC",
];

const FORM_FACTORS: &[&str] = &[
    "Other",
    "Unknown",
    "SIMM",
    "SIP",
    "Chip",
    "DIP",
    "ZIP",
    "Proprietary Card",
    "DIMM",
    "TSOP",
    "Row Of Chips",
    "RIMM",
    "SODIMM",
    "SRIMM",
    "FB-DIMM",
    "Die",
];

const MEMORY_TYPES: &[&str] = &[
    "Other",
    "Unknown",
    "DRAM",
    "EDRAM",
    "VRAM",
    "SRAM",
    "RAM",
    "ROM",
    "Flash",
    "EEPROM",
    "FEPROM",
    "EPROM",
    "CDRAM",
    "3DRAM",
    "SDRAM",
    "SGRAM",
    "RDRAM",
    "DDR",
    "DDR2",
    "DDR2 FB-DIMM",
    "Reserved",
    "Reserved",
    "Reserved",
    "DDR3",
    "FBD2",
    "DDR4",
    "LPDDR",
    "LPDDR2",
    "LPDDR3",
    "LPDDR4",
    "Logical non-volatile device",
    "HBM",
    "HBM2",
    "DDR5",
    "LPDDR5",
    "HBM3",
];

const IPMI_INTERFACES: &[&str] = &[
    "Unknown",
    "KCS (Keyboard Control Style)",
    "SMIC (Server Management Interface Chip)",
    "BT (Block Transfer)",
    "SSIF (SMBus System Interface)",
];

const POWER_SUPPLY_STATES: &[&str] = &["Other", "Unknown", "OK", "Non-critical", "Critical"];

/// Drops "Unknown"/"Other" enumeration names the way the text parser drops
/// placeholders.
fn known(name: Option<String>) -> Option<String> {
    name.and_then(|name| meaningful(&name))
}

/// Formats the system UUID as dmidecode does: since SMBIOS 2.6 the first
/// three fields are little-endian.
fn format_uuid(bytes: &[u8], version: u16) -> Option<String> {
    let b: [u8; 16] = bytes.try_into().ok()?;
    let text = if version >= 0x0206 {
        format!(
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            b[3],
            b[2],
            b[1],
            b[0],
            b[5],
            b[4],
            b[7],
            b[6],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    } else {
        format!(
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6],
            b[7],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    };
    (!is_placeholder_uuid(&text)).then_some(text)
}

/// Type 17 size in bytes; `None` for an empty slot or an unknown size.
fn memory_device_size(structure: &Structure<'_>) -> Option<u64> {
    let size = structure.word(0x0C)?;
    match size {
        0 | 0xFFFF => None,
        0x7FFF => structure
            .dword(0x1C)
            .map(|megabytes| u64::from(megabytes & 0x7FFF_FFFF) << 20)
            .filter(|&bytes| bytes > 0),
        _ if size & 0x8000 != 0 => Some(u64::from(size & 0x7FFF) << 10),
        _ => Some(u64::from(size) << 20),
    }
}

/// Type 17 speed in MT/s (the extended field for 0xFFFF).
fn memory_speed(structure: &Structure<'_>, offset: usize, extended: usize) -> Option<u64> {
    match structure.word(offset)? {
        0 => None,
        0xFFFF => structure
            .dword(extended)
            .map(|speed| u64::from(speed & 0x7FFF_FFFF))
            .filter(|&speed| speed > 0),
        speed => Some(u64::from(speed)),
    }
}

fn decode(structure: &Structure<'_>, version: u16, data: &mut Dmidecode) {
    let s = structure;
    match s.kind {
        0 if s.formatted.len() >= 0x12 => {
            data.bios.get_or_insert(Bios {
                vendor: s.string(0x04),
                version: s.string(0x05),
                release_date: s.string(0x08),
            });
        }
        1 if s.formatted.len() >= 0x08 => {
            data.system.get_or_insert(SystemRecord {
                manufacturer: s.string(0x04),
                product: s.string(0x05),
                version: s.string(0x06),
                serial: s.string(0x07),
                uuid: s
                    .formatted
                    .get(0x08..0x18)
                    .and_then(|bytes| format_uuid(bytes, version)),
                sku: s.string(0x19),
                family: s.string(0x1A),
            });
        }
        2 if s.formatted.len() >= 0x08 => data.baseboards.push(Baseboard {
            manufacturer: s.string(0x04),
            product: s.string(0x05),
            version: s.string(0x06),
            serial: s.string(0x07),
        }),
        3 if s.formatted.len() >= 0x09 => data.chassis.push(Chassis {
            manufacturer: s.string(0x04),
            chassis_type: known(
                s.byte(0x05)
                    .and_then(|code| name_in(CHASSIS_TYPES, code & 0x7F, 1)),
            ),
            serial: s.string(0x07),
        }),
        4 if s.formatted.len() >= 0x1A => {
            let status_byte = s.byte(0x18).unwrap_or(0);
            let status = if status_byte & 0x40 != 0 {
                let state = match status_byte & 0x07 {
                    7 => "Other".to_string(),
                    code => name_in(PROCESSOR_STATES, code, 0)
                        .unwrap_or_else(|| "<OUT OF SPEC>".to_string()),
                };
                format!("Populated, {state}")
            } else {
                "Unpopulated".to_string()
            };
            let (populated, active) = processor_status(&status);
            let count = |short: usize, long: usize| -> Option<u32> {
                match s.byte(short)? {
                    0 => None,
                    0xFF => s.word(long).map(u32::from).or(Some(0xFF)),
                    value => Some(u32::from(value)),
                }
            };
            let speed = |offset: usize| s.word(offset).filter(|&mhz| mhz > 0).map(u32::from);
            data.processors.push(Processor {
                handle: s.handle,
                socket: s.string(0x04),
                manufacturer: s.string(0x07),
                version: s.string(0x10),
                status: Some(status),
                populated,
                active,
                core_count: count(0x23, 0x2A),
                core_enabled: count(0x24, 0x2C),
                thread_count: count(0x25, 0x2E),
                max_speed_mhz: speed(0x14),
                current_speed_mhz: speed(0x16),
                serial: s.string(0x20),
                part_number: s.string(0x22),
            });
        }
        16 if s.formatted.len() >= 0x0F => {
            let capacity = match s.dword(0x07) {
                Some(0x8000_0000) => s.qword(0x0F),
                Some(kilobytes) => Some(u64::from(kilobytes) << 10),
                None => None,
            };
            data.memory_arrays.push(MemoryArray {
                handle: s.handle,
                location: known(
                    s.byte(0x04)
                        .and_then(|code| name_in(ARRAY_LOCATIONS, code, 1)),
                ),
                usage: known(s.byte(0x05).and_then(|code| name_in(ARRAY_USES, code, 1))),
                error_correction: known(
                    s.byte(0x06)
                        .and_then(|code| name_in(ERROR_CORRECTION_TYPES, code, 1)),
                ),
                maximum_capacity_bytes: capacity,
                number_of_devices: s.word(0x0D).map(u32::from),
            });
        }
        17 if s.formatted.len() >= 0x15 => {
            let size_bytes = memory_device_size(s);
            data.memory_devices.push(MemoryDevice {
                handle: s.handle,
                array_handle: s.word(0x04),
                locator: s.string(0x10),
                bank_locator: s.string(0x11),
                populated: size_bytes.is_some(),
                size_bytes,
                form_factor: known(s.byte(0x0E).and_then(|code| name_in(FORM_FACTORS, code, 1))),
                memory_type: known(s.byte(0x12).and_then(|code| name_in(MEMORY_TYPES, code, 1))),
                speed_mts: memory_speed(s, 0x15, 0x54),
                configured_speed_mts: memory_speed(s, 0x20, 0x58),
                manufacturer: s.string(0x17),
                serial: s.string(0x18),
                part_number: s.string(0x1A),
                rank: s
                    .byte(0x1B)
                    .map(|rank| u32::from(rank & 0x0F))
                    .filter(|&rank| rank > 0),
            });
        }
        38 if s.formatted.len() >= 0x06 => {
            data.ipmi.get_or_insert(IpmiDevice {
                interface_type: s
                    .byte(0x04)
                    .and_then(|code| name_in(IPMI_INTERFACES, code, 0)),
                specification_version: s
                    .byte(0x05)
                    .map(|revision| format!("{}.{}", revision >> 4, revision & 0x0F)),
            });
        }
        39 if s.formatted.len() >= 0x10 => {
            let characteristics = s.word(0x0E).unwrap_or(0);
            let present = characteristics & 0x0002 != 0;
            let status = if present {
                let state = name_in(
                    POWER_SUPPLY_STATES,
                    ((characteristics >> 7) & 0x07) as u8,
                    1,
                )
                .unwrap_or_else(|| "<OUT OF SPEC>".to_string());
                format!("Present, {state}")
            } else {
                "Not Present".to_string()
            };
            data.power_supplies.push(PowerSupplyRecord {
                location: s.string(0x05),
                name: s.string(0x06),
                manufacturer: s.string(0x07),
                serial: s.string(0x08),
                model_part_number: s.string(0x0A),
                max_power_watts: s.word(0x0C).filter(|&watts| watts != 0x8000).map(u64::from),
                status: Some(status),
                present,
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A structure: formatted area (type, length and handle are filled in)
    /// and its strings.
    fn structure(kind: u8, handle: u16, fields: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut bytes = vec![kind, (fields.len() + 4) as u8];
        bytes.extend_from_slice(&handle.to_le_bytes());
        bytes.extend_from_slice(fields);
        for string in strings {
            bytes.extend_from_slice(string.as_bytes());
            bytes.push(0);
        }
        if strings.is_empty() {
            bytes.push(0);
        }
        bytes.push(0);
        bytes
    }

    fn entry_point_v3(table_length: u32) -> Vec<u8> {
        let mut entry = b"_SM3_".to_vec();
        entry.extend_from_slice(&[0, 0x18, 3, 2, 0, 1, 0]);
        entry.extend_from_slice(&table_length.to_le_bytes());
        entry.extend_from_slice(&0u64.to_le_bytes());
        entry
    }

    #[test]
    fn decodes_system_and_memory_and_stops_on_truncation() {
        let mut system = vec![1, 2, 3, 4];
        system.extend_from_slice(&[
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD,
            0xEE, 0xFF,
        ]);
        system.extend_from_slice(&[6, 0, 0]);
        let mut dimm = vec![0u8; 0x28 - 4];
        dimm[0x0C - 4..0x0E - 4].copy_from_slice(&16384u16.to_le_bytes());
        dimm[0x0E - 4] = 0x09; // DIMM
        dimm[0x10 - 4] = 1;
        dimm[0x12 - 4] = 0x1A; // DDR4
        dimm[0x15 - 4..0x17 - 4].copy_from_slice(&2666u16.to_le_bytes());
        dimm[0x18 - 4] = 2;
        let mut table = structure(
            1,
            0x100,
            &system,
            &["Acme", "Box 9", "Not Specified", "SN1"],
        );
        table.extend(structure(17, 0x1100, &dimm, &["DIMM A1", "S-42"]));
        table.extend(structure(127, 0xFFFF, &[], &[]));
        let data = parse_tables(&entry_point_v3(table.len() as u32), &table).unwrap();
        let system = data.system.clone().unwrap();
        assert_eq!(system.product.as_deref(), Some("Box 9"));
        assert_eq!(system.version, None);
        assert_eq!(
            system.uuid.as_deref(),
            Some("00112233-4455-6677-8899-AABBCCDDEEFF")
        );
        assert_eq!(data.summary.total_memory_bytes, 16 << 30);
        assert_eq!(data.memory_devices[0].memory_type.as_deref(), Some("DDR4"));
        assert_eq!(data.memory_devices[0].speed_mts, Some(2666));
        assert_eq!(data.smbios_version.as_deref(), Some("3.2.0"));
        for cut in 0..table.len() {
            let _ = parse_tables(&entry_point_v3(cut as u32), &table[..cut]);
        }
    }

    #[test]
    fn entry_point_garbage_is_an_error() {
        assert!(parse_entry_point(b"").is_err());
        assert!(parse_entry_point(b"_SM_").is_err());
        assert!(parse_entry_point(b"nothing here at all, no anchor").is_err());
    }
}
