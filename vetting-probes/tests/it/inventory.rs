//! Inventory parsers on the real fixtures (dmidecode, lshw, lspci) with the
//! key facts of EXPECTED.md, the binary SMBIOS reader checked against real
//! dmidecode reading the same tables, and the collector on this machine.

use std::path::Path;

use serde_json::json;
use vetting_probes::inventory::{self, CollectOptions, Inventory, smbios};
use vetting_probes::parsers::{dmidecode, lshw, lspci};
use vetting_probes::runner::{ToolCommand, run_tool};
use vetting_probes::{Status, Thresholds, Tool, parse_and_judge};

use crate::common::{fixture, fixture_names};

fn dmi(name: &str) -> dmidecode::Dmidecode {
    dmidecode::parse(&fixture(&format!("dmidecode/{name}"))).unwrap()
}

/// The facts of a dmidecode dump worth pinning, compactly.
fn dmi_digest(data: &dmidecode::Dmidecode) -> serde_json::Value {
    let system = data.system.clone().unwrap_or_default();
    json!({
        "smbios": data.smbios_version,
        "structures": [data.structure_count, data.declared_structure_count],
        "system": [system.manufacturer, system.product, system.serial, system.uuid],
        "bios": data.bios.as_ref().map(|bios| [&bios.vendor, &bios.version, &bios.release_date]),
        "boards": data.baseboards.iter().map(|board| [&board.manufacturer, &board.product]).collect::<Vec<_>>(),
        "ipmi": data.ipmi.as_ref().and_then(|ipmi| ipmi.interface_type.clone()),
        "summary": data.summary,
        "cpus_not_active": data.processors.iter().filter(|cpu| !cpu.active).fold(
            std::collections::BTreeMap::<String, usize>::new(),
            |mut counts, cpu| {
                *counts.entry(cpu.status.clone().unwrap_or_default()).or_default() += 1;
                counts
            },
        ),
        "cpus": data.processors.iter().filter(|cpu| cpu.active).map(|cpu| {
            format!("{} | {} | {} | {}C/{}T", cpu.socket.as_deref().unwrap_or("-"),
                cpu.version.as_deref().unwrap_or("-"), cpu.status.as_deref().unwrap_or("-"),
                cpu.core_count.unwrap_or(0), cpu.thread_count.unwrap_or(0))
        }).collect::<Vec<_>>(),
        "dimms": data.memory_devices.iter().filter(|dimm| dimm.populated).map(|dimm| {
            format!("{} | {} | {} | {} MT/s | {} | {}", dimm.locator.as_deref().unwrap_or("-"),
                dimm.size_bytes.unwrap_or(0), dimm.memory_type.as_deref().unwrap_or("-"),
                dimm.speed_mts.unwrap_or(0), dimm.part_number.as_deref().unwrap_or("-"),
                dimm.serial.as_deref().unwrap_or("-"))
        }).collect::<Vec<_>>(),
        "psus": data.power_supplies.iter().map(|psu| {
            format!("{} | {} | {} W", psu.location.as_deref().unwrap_or("-"),
                psu.status.as_deref().unwrap_or("-"), psu.max_power_watts.unwrap_or(0))
        }).collect::<Vec<_>>(),
    })
}

#[test]
fn every_dmidecode_fixture_parses_and_passes_with_its_snapshot() {
    let names = fixture_names("dmidecode");
    assert_eq!(names.len(), 6);
    for name in names {
        let report = parse_and_judge(
            Tool::Dmidecode,
            &fixture(&format!("dmidecode/{name}")),
            &Thresholds::default(),
        )
        .unwrap();
        assert_eq!(report.verdict.status, Status::Pass, "{name}");
        assert!(report.verdict.reasons.is_empty(), "{name}");
        let snapshot_name = format!(
            "dmidecode-{}",
            name.trim_end_matches(".txt").trim_end_matches(".out")
        );
        insta::assert_json_snapshot!(snapshot_name, dmi_digest(&dmi(&name)));
    }
}

#[test]
fn dmidecode_memory_and_cpu_facts_match_expected() {
    // (file, product, total bytes, populated DIMMs, slots, active CPUs)
    let cases = [
        (
            "jc-ubuntu-18.04-vmware-dmidecode.out",
            "VMware Virtual Platform",
            2_147_483_648u64,
            1,
            128,
            1,
        ),
        (
            "netbox-agent-Dell_PowerEdge_M630.txt",
            "PowerEdge M630",
            68_719_476_736,
            8,
            24,
            2,
        ),
        (
            "netbox-agent-HP_BL460c_Gen10.txt",
            "ProLiant BL460c Gen10",
            68_719_476_736,
            4,
            16,
            2,
        ),
        (
            "netbox-agent-HP_DL380p_Gen8.txt",
            "ProLiant DL380p Gen8",
            68_719_476_736,
            10,
            24,
            2,
        ),
        (
            "netbox-agent-QCT_X10E-9N.txt",
            "QuantaMicro X10E-9N",
            34_359_738_368,
            2,
            4,
            1,
        ),
        (
            "netbox-agent-SM_SSG-6028R.txt",
            "SSG-6028R-OSD072P",
            68_719_476_736,
            4,
            16,
            1,
        ),
    ];
    for (name, product, total, dimms, slots, cpus) in cases {
        let data = dmi(name);
        let system = data.system.clone().unwrap();
        assert_eq!(system.product.as_deref(), Some(product), "{name}");
        assert_eq!(data.summary.total_memory_bytes, total, "{name}");
        assert_eq!(data.summary.dimms_populated, dimms, "{name}");
        assert_eq!(data.summary.dimm_slots, slots, "{name}");
        assert_eq!(data.summary.cpus_active, cpus, "{name}");
    }
}

#[test]
fn dmidecode_quirks_of_real_dumps() {
    // VMware: 128 sockets, one enabled, 127 disabled by BIOS; 64 RAM slots
    // plus 64 NVD entries.
    let vmware = dmi("jc-ubuntu-18.04-vmware-dmidecode.out");
    assert_eq!(
        vmware.system.as_ref().unwrap().manufacturer.as_deref(),
        Some("VMware, Inc.")
    );
    assert_eq!(vmware.summary.cpu_sockets, 128);
    let disabled = vmware
        .processors
        .iter()
        .filter(|cpu| cpu.status.as_deref() == Some("Populated, Disabled By BIOS"))
        .count();
    assert_eq!(disabled, 127);
    assert_eq!(
        vmware
            .memory_devices
            .iter()
            .filter(|dimm| dimm
                .locator
                .as_deref()
                .is_some_and(|slot| slot.starts_with("NVD #")))
            .count(),
        64
    );
    let populated: Vec<_> = vmware
        .memory_devices
        .iter()
        .filter(|dimm| dimm.populated)
        .collect();
    assert_eq!(populated[0].locator.as_deref(), Some("RAM slot #0"));
    assert_eq!(
        vmware.memory_arrays[0].maximum_capacity_bytes,
        Some(3 << 30)
    );
    assert_eq!(vmware.memory_arrays[0].number_of_devices, Some(64));

    // HP DL380p Gen8: the second processor is "Populated, Idle" and counts;
    // mixed DIMM sizes; double spaces in locators; no type 2.
    let gen8 = dmi("netbox-agent-HP_DL380p_Gen8.txt");
    assert_eq!(
        gen8.processors[1].status.as_deref(),
        Some("Populated, Idle")
    );
    assert!(gen8.processors.iter().all(|cpu| cpu.active));
    assert_eq!(
        gen8.processors[0].version.as_deref(),
        Some("Intel(R) Xeon(R) CPU E5-2620 0 @ 2.00GHz")
    );
    let sizes: Vec<u64> = gen8
        .memory_devices
        .iter()
        .filter_map(|dimm| dimm.size_bytes)
        .collect();
    assert_eq!(sizes.iter().filter(|&&size| size == 4 << 30).count(), 8);
    assert_eq!(sizes.iter().filter(|&&size| size == 16 << 30).count(), 2);
    assert!(
        gen8.memory_devices
            .iter()
            .any(|dimm| dimm.locator.as_deref() == Some("PROC  1 DIMM  1"))
    );
    assert!(gen8.baseboards.is_empty());
    assert!(gen8.ipmi.is_some());

    // Dell M630: starts with OEM type 218, two boards, <OUT OF SPEC> DDR4.
    let dell = dmi("netbox-agent-Dell_PowerEdge_M630.txt");
    assert_eq!(dell.type_counts.get(&218), Some(&1));
    assert_eq!(dell.baseboards.len(), 2);
    let dell_dimm = dell
        .memory_devices
        .iter()
        .find(|dimm| dimm.populated)
        .unwrap();
    assert_eq!(dell_dimm.memory_type.as_deref(), Some("<OUT OF SPEC>"));
    assert_eq!(dell.processors[0].core_count, Some(14));
    assert_eq!(dell.processors[0].thread_count, Some(28));

    // HP BL460c Gen10: OEM type 194 first; speed in MT/s.
    let gen10 = dmi("netbox-agent-HP_BL460c_Gen10.txt");
    assert_eq!(gen10.type_counts.get(&194), Some(&1));
    assert!(
        gen10
            .memory_devices
            .iter()
            .filter(|dimm| dimm.populated)
            .all(|dimm| dimm.speed_mts == Some(2666))
    );

    // Supermicro: no "N structures occupying" line, SOCKET 1 unpopulated,
    // empty slots named "NO DIMM", two of four PSU records present.
    let supermicro = dmi("netbox-agent-SM_SSG-6028R.txt");
    assert_eq!(supermicro.declared_structure_count, None);
    assert_eq!(supermicro.structure_count, 86);
    assert_eq!(
        supermicro.processors[1].status.as_deref(),
        Some("Unpopulated")
    );
    assert!(
        supermicro
            .memory_devices
            .iter()
            .any(|dimm| !dimm.populated && dimm.locator.as_deref() == Some("NO DIMM"))
    );
    assert_eq!(supermicro.power_supplies.len(), 4);
    assert_eq!(
        supermicro
            .power_supplies
            .iter()
            .filter(|psu| psu.present)
            .count(),
        2
    );
    assert_eq!(supermicro.power_supplies[0].max_power_watts, Some(920));

    // Quanta: "Default string" and "N/A" are no values.
    let quanta = dmi("netbox-agent-QCT_X10E-9N.txt");
    let text = serde_json::to_string(&quanta).unwrap();
    assert!(!text.contains("Default string"));
    assert!(!text.contains("\"N/A\""));
}

#[test]
fn dmidecode_maps_into_the_inventory() {
    let mut inventory = Inventory::empty(chrono::Utc::now());
    inventory::apply_dmi(&mut inventory, &dmi("netbox-agent-HP_DL380p_Gen8.txt"));
    assert_eq!(
        inventory.system.product.as_deref(),
        Some("ProLiant DL380p Gen8")
    );
    assert_eq!(
        inventory.system.identity().as_deref(),
        Some("uuid:35353636-3335-5A43-3232-343630335138")
    );
    assert!(inventory.system.bmc_present);
    assert_eq!(inventory.memory.total_bytes, 68_719_476_736);
    assert_eq!(inventory.memory.dimms.len(), 10);
    assert_eq!(inventory.memory.slots_total, Some(24));
    assert_eq!(inventory.cpus.sockets, 2);
    assert_eq!(inventory.cpus.cores, 12);
    assert_eq!(inventory.cpus.packages[1].socket, "Proc 2");
    assert_eq!(
        inventory.cpus.packages[0].model.as_deref(),
        Some("Intel(R) Xeon(R) CPU E5-2620 0 @ 2.00GHz")
    );
    // The serials are masked upstream ("4242"), so DIMMs fall back to... the
    // masked serial: identity is whatever the firmware says, consistently.
    assert!(
        inventory
            .memory
            .dimms
            .iter()
            .all(|dimm| dimm.identity().starts_with("serial:"))
    );
}

#[test]
fn lshw_fixture_key_facts_and_snapshot() {
    let bytes = fixture("lshw/lshw2json-nucleus-desktop-lshw.json");
    let report = parse_and_judge(Tool::Lshw, &bytes, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Pass);
    let data = lshw::parse(&bytes).unwrap();
    assert_eq!(data.system.id.as_deref(), Some("nucleus"));
    assert_eq!(data.system.vendor, None);
    assert_eq!(data.system.product, None);
    assert_eq!(data.memory_bytes, Some(8_351_612_928));
    assert!(data.memory_banks.is_empty());
    assert_eq!(data.cpus.len(), 1);
    assert_eq!(
        data.cpus[0].product.as_deref(),
        Some("Intel(R) Core(TM) i7 CPU         870  @ 2.93GHz")
    );
    assert_eq!(data.pci_nodes.len(), 34);
    let disks: Vec<_> = data
        .disks
        .iter()
        .filter(|disk| disk.size_bytes.is_some())
        .collect();
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].product.as_deref(), Some("Hitachi HDS72102"));
    assert_eq!(disks[0].size_bytes, Some(250_000_000_000));
    assert_eq!(disks[0].device.as_deref(), Some("/dev/sda"));
    let dvd = data
        .disks
        .iter()
        .find(|disk| disk.description.as_deref() == Some("DVD reader"))
        .unwrap();
    assert_eq!(dvd.logical_names, ["/dev/cdrom", "/dev/dvd", "/dev/sr0"]);
    assert_eq!(data.nics.len(), 1);
    let nic = &data.nics[0];
    assert_eq!(nic.logical_name.as_deref(), Some("eth1"));
    assert_eq!(
        nic.product.as_deref(),
        Some("NetLink BCM57780 Gigabit Ethernet PCIe")
    );
    assert_eq!(nic.speed_bps, Some(100_000_000));
    assert_eq!(nic.capacity_bps, Some(1_000_000_000));
    assert_eq!(data.displays.len(), 1);
    assert_eq!(
        data.displays[0].product.as_deref(),
        Some("G96GL [Quadro FX 580]")
    );

    let digest = json!({
        "system": data.system,
        "memory_bytes": data.memory_bytes,
        "cpus": data.cpus.iter().map(|cpu| cpu.product.clone()).collect::<Vec<_>>(),
        "disks": data.disks.iter().map(|disk| format!("{} | {} | {} | {}", disk.device.as_deref().unwrap_or("-"),
            disk.product.as_deref().unwrap_or("-"), disk.serial.as_deref().unwrap_or("-"), disk.size_bytes.unwrap_or(0))).collect::<Vec<_>>(),
        "nics": data.nics.iter().map(|nic| format!("{} | {} | {} | size {} | capacity {}", nic.logical_name.as_deref().unwrap_or("-"),
            nic.mac.as_deref().unwrap_or("-"), nic.driver.as_deref().unwrap_or("-"), nic.speed_bps.unwrap_or(0), nic.capacity_bps.unwrap_or(0))).collect::<Vec<_>>(),
        "pci": data.pci_nodes.iter().map(|node| format!("{} {}", node.businfo, node.class.as_deref().unwrap_or("-"))).collect::<Vec<_>>(),
        "node_count": data.node_count,
    });
    insta::assert_json_snapshot!("lshw-nucleus", digest);
}

#[test]
fn lshw_logicalname_string_or_array_and_array_root() {
    let bytes = fixture("lshw/lshw2json-nucleus-desktop-lshw.json");
    let mut wrapped = b"[".to_vec();
    wrapped.extend_from_slice(&bytes);
    wrapped.push(b']');
    assert_eq!(lshw::parse(&wrapped).unwrap(), lshw::parse(&bytes).unwrap());
}

fn lspci_digest(data: &lspci::Lspci) -> serde_json::Value {
    json!({
        "count": data.devices.len(),
        "notes": data.notes,
        "devices": data.devices.iter().map(|device| format!("{} [{}] {} [{}:{}] {}",
            device.slot, device.class_id.as_deref().unwrap_or("-"), device.class.as_deref().unwrap_or("-"),
            device.vendor_id.as_deref().unwrap_or("-"), device.device_id.as_deref().unwrap_or("-"),
            device.device.as_deref().unwrap_or("-"))).collect::<Vec<_>>(),
    })
}

#[test]
fn lspci_fixtures_key_facts_and_snapshots() {
    let names_only = lspci::parse(&fixture("lspci/jc-ubuntu-20.10-lspci-mmv.out")).unwrap();
    assert_eq!(names_only.devices.len(), 46);
    assert!(names_only.notes.is_empty());
    let bridges = names_only
        .devices
        .iter()
        .filter(|device| device.class.as_deref() == Some("PCI bridge"))
        .count();
    assert_eq!(bridges, 34);
    let root_ports = names_only
        .devices
        .iter()
        .filter(|device| {
            device.device.as_deref() == Some("PCI Express Root Port")
                && device.vendor.as_deref() == Some("VMware")
        })
        .count();
    assert_eq!(root_ports, 32);
    let vga = names_only
        .devices
        .iter()
        .find(|device| device.slot == "00:0f.0")
        .unwrap();
    assert_eq!(vga.device.as_deref(), Some("SVGA II Adapter"));
    let ethernet = names_only
        .devices
        .iter()
        .find(|device| device.slot == "02:01.0")
        .unwrap();
    assert_eq!(
        ethernet.device.as_deref(),
        Some("82545EM Gigabit Ethernet Controller (Copper)")
    );
    assert_eq!(ethernet.vendor_id, None);

    let with_ids = lspci::parse(&fixture("lspci/jc-ubuntu-20.10-lspci-nnmmv.out")).unwrap();
    assert_eq!(with_ids.devices.len(), 47);
    let last = with_ids.devices.last().unwrap();
    assert_eq!(last.slot, "ff:02:05.0");
    assert_eq!(last.domain.as_deref(), Some("ff"));
    assert_eq!(last.class_id.as_deref(), Some("0106"));
    assert_eq!(with_ids.notes.len(), 1);
    assert!(with_ids.notes[0].contains("ff:02:05.0") && with_ids.notes[0].contains("02:05.0"));
    let ethernet = with_ids
        .devices
        .iter()
        .find(|device| device.slot == "02:01.0")
        .unwrap();
    assert_eq!(ethernet.class_id.as_deref(), Some("0200"));
    assert_eq!(
        (ethernet.vendor_id.as_deref(), ethernet.device_id.as_deref()),
        (Some("8086"), Some("100f"))
    );
    let vga = with_ids
        .devices
        .iter()
        .find(|device| device.slot == "00:0f.0")
        .unwrap();
    assert_eq!(
        (
            vga.class_id.as_deref(),
            vga.vendor_id.as_deref(),
            vga.device_id.as_deref()
        ),
        (Some("0300"), Some("15ad"), Some("0405"))
    );
    // The same 46 devices: names agree record by record.
    for (plain, ided) in names_only.devices.iter().zip(&with_ids.devices) {
        assert_eq!((&plain.slot, &plain.device), (&ided.slot, &ided.device));
    }
    for name in fixture_names("lspci") {
        let report = parse_and_judge(
            Tool::Lspci,
            &fixture(&format!("lspci/{name}")),
            &Thresholds::default(),
        )
        .unwrap();
        assert_eq!(report.verdict.status, Status::Pass);
        let data = lspci::parse(&fixture(&format!("lspci/{name}"))).unwrap();
        insta::assert_json_snapshot!(
            format!("lspci-{}", name.trim_end_matches(".out")),
            lspci_digest(&data)
        );
    }
}

/// Builds SMBIOS structures and tables for the binary reader's tests.
mod smbios_builder {
    /// One structure: `fields` is the formatted area after the 4-byte header.
    pub fn structure(kind: u8, handle: u16, fields: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut bytes = vec![kind, u8::try_from(fields.len() + 4).unwrap()];
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

    /// A formatted area of `length` bytes (header included) with values
    /// put at their specification offsets.
    pub struct Fields(Vec<u8>);

    impl Fields {
        pub fn new(length: usize) -> Self {
            Fields(vec![0; length - 4])
        }
        pub fn byte(mut self, offset: usize, value: u8) -> Self {
            self.0[offset - 4] = value;
            self
        }
        pub fn word(mut self, offset: usize, value: u16) -> Self {
            self.0[offset - 4..offset - 2].copy_from_slice(&value.to_le_bytes());
            self
        }
        pub fn dword(mut self, offset: usize, value: u32) -> Self {
            self.0[offset - 4..offset].copy_from_slice(&value.to_le_bytes());
            self
        }
        pub fn bytes(mut self, offset: usize, values: &[u8]) -> Self {
            self.0[offset - 4..offset - 4 + values.len()].copy_from_slice(values);
            self
        }
        pub fn done(self) -> Vec<u8> {
            self.0
        }
    }

    fn checksum_byte(bytes: &[u8]) -> u8 {
        0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)))
    }

    /// A valid 32-bit (SMBIOS 2.8) entry point for a table at `address`.
    pub fn entry_point(table: &[u8], structures: u16, address: u32) -> Vec<u8> {
        let mut entry = vec![0u8; 0x1F];
        entry[..4].copy_from_slice(b"_SM_");
        entry[0x05] = 0x1F;
        entry[0x06] = 2;
        entry[0x07] = 8;
        entry[0x08..0x0A].copy_from_slice(&0x100u16.to_le_bytes());
        entry[0x10..0x15].copy_from_slice(b"_DMI_");
        entry[0x16..0x18].copy_from_slice(&u16::try_from(table.len()).unwrap().to_le_bytes());
        entry[0x18..0x1C].copy_from_slice(&address.to_le_bytes());
        entry[0x1C..0x1E].copy_from_slice(&structures.to_le_bytes());
        entry[0x1E] = 0x28;
        entry[0x15] = checksum_byte(&entry[0x10..0x1F]);
        entry[0x04] = checksum_byte(&entry[..0x1F]);
        entry
    }

    /// A server's worth of structures: BIOS, system, board, chassis, three
    /// sockets (enabled, idle, empty), a memory array with three slots (16
    /// GiB, empty, 64 GiB in the extended size field), IPMI, two PSUs (one
    /// absent), an OEM record, end of table.
    pub fn server_table() -> (Vec<u8>, u16) {
        let uuid = [
            0x44, 0x33, 0x22, 0x11, 0x66, 0x55, 0x88, 0x77, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE,
            0xFF, 0x01,
        ];
        let processor = |status: u8| {
            Fields::new(0x2A)
                .byte(0x04, 1)
                .byte(0x05, 3)
                .byte(0x06, 0xB3)
                .byte(0x07, 2)
                .byte(0x10, 3)
                .word(0x12, 100)
                .word(0x14, 4000)
                .word(0x16, 2400)
                .byte(0x18, status)
                .byte(0x19, 0x01)
                .word(0x1A, 0xFFFF)
                .word(0x1C, 0xFFFF)
                .word(0x1E, 0xFFFF)
                .byte(0x23, 8)
                .byte(0x24, 8)
                .byte(0x25, 16)
                .word(0x26, 0x0004)
                .word(0x28, 0xB3)
                .done()
        };
        let dimm = |size: u16, extended_mb: u32, speed: u16| {
            Fields::new(0x28)
                .word(0x04, 0x1000)
                .word(0x06, 0xFFFE)
                .word(0x08, 72)
                .word(0x0A, 64)
                .word(0x0C, size)
                .byte(0x0E, 0x09)
                .byte(0x10, 1)
                .byte(0x11, 2)
                .byte(0x12, 0x1A)
                .word(0x13, 0x0080)
                .word(0x15, speed)
                .byte(0x17, 3)
                .byte(0x18, 4)
                .byte(0x1A, 5)
                .byte(0x1B, 2)
                .dword(0x1C, extended_mb)
                .word(0x20, speed)
                .done()
        };
        let structures: Vec<Vec<u8>> = vec![
            structure(0xC1, 0x0001, &[1, 2, 3, 4, 5], &["OEM stuff"]),
            structure(
                0,
                0x0000,
                &Fields::new(0x18)
                    .byte(0x04, 1)
                    .byte(0x05, 2)
                    .word(0x06, 0xE800)
                    .byte(0x08, 3)
                    .byte(0x09, 0x0F)
                    .bytes(0x0A, &[0x80, 0x98, 0x8B, 0x3F, 0, 0, 0, 0])
                    .byte(0x14, 1)
                    .byte(0x15, 2)
                    .byte(0x16, 0xFF)
                    .byte(0x17, 0xFF)
                    .done(),
                &["Acme BIOS Inc.", "2.19.1", "03/14/2024"],
            ),
            structure(
                1,
                0x0100,
                &Fields::new(0x1B)
                    .byte(0x04, 1)
                    .byte(0x05, 2)
                    .byte(0x07, 3)
                    .bytes(0x08, &uuid)
                    .byte(0x18, 6)
                    .byte(0x19, 4)
                    .byte(0x1A, 5)
                    .done(),
                &[
                    "Acme Servers",
                    "RackMaster 9000",
                    "ACM123456",
                    "SKU-9",
                    "RackMaster",
                ],
            ),
            structure(
                2,
                0x0200,
                &Fields::new(0x0F)
                    .byte(0x04, 1)
                    .byte(0x05, 2)
                    .byte(0x07, 3)
                    .byte(0x09, 0x09)
                    .word(0x0B, 0x0300)
                    .byte(0x0D, 0x0A)
                    .done(),
                &["Acme Boards", "MB-77", "BRD0001"],
            ),
            structure(
                3,
                0x0300,
                &Fields::new(0x0D)
                    .byte(0x04, 1)
                    .byte(0x05, 0x17)
                    .byte(0x07, 2)
                    .byte(0x09, 3)
                    .byte(0x0A, 3)
                    .byte(0x0B, 3)
                    .byte(0x0C, 3)
                    .done(),
                &["Acme Servers", "CHS0001"],
            ),
            structure(
                4,
                0x0400,
                &processor(0x41),
                &[
                    "CPU0",
                    "Intel(R) Corporation",
                    "Intel(R) Xeon(R) Gold 6126 CPU @ 2.60GHz ",
                ],
            ),
            structure(
                4,
                0x0401,
                &processor(0x44),
                &[
                    "CPU1",
                    "Intel(R) Corporation",
                    "Intel(R) Xeon(R) Gold 6126 CPU @ 2.60GHz",
                ],
            ),
            structure(
                4,
                0x0402,
                &processor(0x00),
                &["CPU2", "Intel(R) Corporation", "Not Specified"],
            ),
            structure(
                16,
                0x1000,
                &Fields::new(0x17)
                    .byte(0x04, 3)
                    .byte(0x05, 3)
                    .byte(0x06, 6)
                    .dword(0x07, 256 * 1024 * 1024)
                    .word(0x0B, 0xFFFE)
                    .word(0x0D, 3)
                    .done(),
                &[],
            ),
            structure(
                17,
                0x1100,
                &dimm(16384, 0, 2666),
                &["DIMM A1", "BANK 0", "Samsung", "S3R14L", "M393A2K43BB1-CTD"],
            ),
            structure(
                17,
                0x1101,
                &dimm(0, 0, 0),
                &["NO DIMM", "BANK 1", "NO DIMM", "NO DIMM", "NO DIMM"],
            ),
            structure(
                17,
                0x1102,
                &dimm(0x7FFF, 65536, 3200),
                &[
                    "DIMM B1",
                    "BANK 2",
                    "Micron",
                    "MC9931",
                    "MTA36ASF8G72PZ-3G2",
                ],
            ),
            structure(
                38,
                0x2600,
                &Fields::new(0x12)
                    .byte(0x04, 1)
                    .byte(0x05, 0x20)
                    .byte(0x06, 0x20)
                    .byte(0x07, 0xFF)
                    .dword(0x08, 0x0CA3)
                    .done(),
                &[],
            ),
            structure(
                39,
                0x2700,
                &Fields::new(0x16)
                    .byte(0x04, 1)
                    .byte(0x05, 1)
                    .byte(0x06, 2)
                    .byte(0x07, 3)
                    .byte(0x08, 4)
                    .byte(0x0A, 5)
                    .word(0x0C, 800)
                    .word(0x0E, 0x0183)
                    .word(0x10, 0xFFFF)
                    .word(0x12, 0xFFFF)
                    .word(0x14, 0xFFFF)
                    .done(),
                &["PSU 1", "PWS-801", "Acme Power", "PSU0001", "PWS-801-1R"],
            ),
            structure(
                39,
                0x2701,
                &Fields::new(0x16)
                    .byte(0x04, 1)
                    .byte(0x05, 1)
                    .word(0x0C, 0x8000)
                    .word(0x0E, 0x0000)
                    .word(0x10, 0xFFFF)
                    .word(0x12, 0xFFFF)
                    .word(0x14, 0xFFFF)
                    .done(),
                &["PSU 2"],
            ),
            structure(127, 0xFEFF, &[], &[]),
        ];
        let count = u16::try_from(structures.len()).unwrap();
        (structures.concat(), count)
    }
}

#[test]
fn smbios_tables_read_like_dmidecode_reads_them() {
    let (table, count) = smbios_builder::server_table();
    // dmidecode's dump format: the entry point (pointing at offset 0x20),
    // padded to 0x20 bytes, then the table.
    let mut dump = smbios_builder::entry_point(&table, count, 0x20);
    dump.resize(0x20, 0);
    dump.extend_from_slice(&table);
    let directory = tempfile::tempdir().unwrap();
    let dump_path = directory.path().join("smbios.bin");
    std::fs::write(&dump_path, &dump).unwrap();
    let output = run_tool(
        &ToolCommand::new("dmidecode")
            .arg("--from-dump")
            .arg(dump_path.to_str().unwrap()),
    )
    .unwrap()
    .into_success()
    .unwrap();

    let mut from_text = dmidecode::parse(&output.stdout).unwrap();
    let from_binary =
        smbios::parse_tables(&smbios_builder::entry_point(&table, count, 0xF0000), &table).unwrap();
    assert!(from_text.dmidecode_version.is_some());
    from_text.dmidecode_version = None;
    assert_eq!(
        from_text,
        from_binary,
        "dmidecode said:\n{}",
        output.stdout_lossy()
    );

    // And the facts themselves.
    let system = from_binary.system.clone().unwrap();
    assert_eq!(system.product.as_deref(), Some("RackMaster 9000"));
    assert_eq!(system.version, None);
    assert_eq!(
        system.uuid.as_deref(),
        Some("11223344-5566-7788-99AA-BBCCDDEEFF01")
    );
    assert_eq!(from_binary.summary.total_memory_bytes, 80 << 30);
    assert_eq!(from_binary.summary.dimms_populated, 2);
    assert_eq!(from_binary.summary.cpus_active, 2);
    assert_eq!(
        from_binary.processors[1].status.as_deref(),
        Some("Populated, Idle")
    );
    assert_eq!(from_binary.memory_devices[2].speed_mts, Some(3200));
    assert_eq!(from_binary.type_counts.get(&0xC1), Some(&1));
}

#[test]
fn collector_reads_smbios_tables_from_sysfs_when_dmidecode_is_not_run() {
    let (table, count) = smbios_builder::server_table();
    let sys = tempfile::tempdir().unwrap();
    let tables = sys.path().join("firmware/dmi/tables");
    std::fs::create_dir_all(&tables).unwrap();
    std::fs::write(
        tables.join("smbios_entry_point"),
        smbios_builder::entry_point(&table, count, 0x7AB0_9000),
    )
    .unwrap();
    std::fs::write(tables.join("DMI"), &table).unwrap();
    let options = CollectOptions {
        sys_root: sys.path().to_path_buf(),
        run_tools: false,
        ..CollectOptions::default()
    };
    let inventory = inventory::collect(&options);
    assert!(
        inventory
            .sources
            .iter()
            .any(|source| source == "sysfs-smbios")
    );
    assert_eq!(inventory.system.vendor.as_deref(), Some("Acme Servers"));
    assert_eq!(inventory.system.serial.as_deref(), Some("ACM123456"));
    assert_eq!(inventory.system.bios_version.as_deref(), Some("2.19.1"));
    assert_eq!(inventory.system.board_product.as_deref(), Some("MB-77"));
    assert!(inventory.system.bmc_present);
    assert_eq!(inventory.memory.total_bytes, 80 << 30);
    let slots: Vec<_> = inventory
        .memory
        .dimms
        .iter()
        .map(|dimm| (dimm.slot.as_str(), dimm.identity()))
        .collect();
    assert_eq!(
        slots,
        [
            ("DIMM A1", "serial:S3R14L".to_string()),
            ("DIMM B1", "serial:MC9931".to_string())
        ]
    );
    assert_eq!(inventory.cpus.packages.len(), 2);
    assert_eq!(inventory.psus.len(), 1);
    assert_eq!(inventory.psus[0].watts, Some(800));
    assert_eq!(inventory.psus[0].identity(), "serial:PSU0001");
    assert!(
        !inventory
            .missing
            .iter()
            .any(|missing| missing.what.starts_with("dmi"))
    );
    // This fake /sys has nothing else: each absent part is listed.
    for what in ["disks", "nics", "sensors"] {
        assert!(
            inventory.missing.iter().any(|missing| missing.what == what),
            "{what} not in {:?}",
            inventory.missing
        );
    }
}

#[test]
fn collector_on_this_machine_succeeds_and_lists_what_is_missing() {
    let collection = inventory::collect_detailed(&CollectOptions::default());
    let inventory = &collection.inventory;
    assert_eq!(inventory.schema_version, inventory::SCHEMA_VERSION);
    // What every Linux machine has.
    assert!(inventory.cpus.threads >= 1);
    assert!(inventory.cpus.sockets >= 1);
    assert!(inventory.cpus.model.is_some());
    assert!(inventory.memory.total_bytes > 0);
    assert!(
        inventory
            .memory
            .os_visible_bytes
            .is_some_and(|bytes| bytes > 0)
    );
    assert!(!inventory.pci_devices.is_empty() || !Path::new("/sys/bus/pci/devices").exists());
    for disk in &inventory.disks {
        assert!(disk.size_bytes > 0, "{disk:?}");
        assert!(!disk.name.starts_with("loop") && !disk.name.starts_with("zram"));
    }
    for nic in &inventory.nics {
        assert_ne!(nic.name, "lo");
    }
    // What this machine lacks is named with a reason, never silently empty.
    let missing = |what: &str| {
        inventory
            .missing
            .iter()
            .any(|missing| missing.what.starts_with(what) && !missing.why.is_empty())
    };
    if !Path::new("/sys/firmware/dmi/tables").exists() {
        assert!(missing("dmi"), "{:?}", inventory.missing);
        assert!(missing("memory dimms"));
        assert!(missing("psus"));
    }
    if !Path::new("/sys/class/hwmon").exists() {
        assert!(missing("sensors"));
        assert!(inventory.sensors.is_empty());
    }
    // Raw outputs are kept for the tools that ran (dmidecode, lshw, lspci).
    assert!(collection.raw_outputs.iter().any(|raw| raw.tool == "lspci"));
    // The document round-trips.
    let json = serde_json::to_string(inventory).unwrap();
    let back: Inventory = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, inventory);
}
