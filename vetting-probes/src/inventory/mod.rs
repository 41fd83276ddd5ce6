//! Inventory types: what a machine is made of, as read at InventoryCheck,
//! versioned on the wire and in reports.
//!
//! Every component has a stable identity ([`Disk::identity`] and friends:
//! a serial, WWN, UUID or slot) so two runs of the same host can be
//! compared part by part. What could not be read is listed in
//! [`Inventory::missing`] with the reason; an inventory is never refused
//! because a part of it is unreadable.
//!
//! [`collect`] builds the inventory of the machine it runs on.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod collect;
pub mod smbios;

pub use collect::{
    CollectOptions, Collection, CpuinfoSummary, RawOutput, apply_dmi, collect, collect_detailed,
    fill_system_from_lshw, normalize_pci_slot, parse_cpuinfo, parse_ethtool_supported_speeds,
    parse_meminfo_total, parse_nvidia_smi_query, pci_device_from, read_block_device,
};

/// The version of the inventory document. Bump it on any change that an
/// older reader would misread.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything known about one machine's hardware.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub schema_version: u32,
    pub collected_at: DateTime<Utc>,
    /// The host name the kernel reports (not an identity: it is set by the
    /// live image).
    pub hostname: Option<String>,
    pub system: SystemInfo,
    pub cpus: Cpus,
    pub memory: Memory,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub gpus: Vec<Gpu>,
    pub pci_devices: Vec<PciDevice>,
    pub sensors: Vec<SensorReading>,
    pub psus: Vec<PowerSupply>,
    /// The sources that were read (`dmidecode`, `sysfs`, `lspci`, ...).
    pub sources: Vec<String>,
    /// What could not be read, and why.
    pub missing: Vec<Missing>,
}

impl Inventory {
    /// An inventory with nothing in it yet.
    pub fn empty(collected_at: DateTime<Utc>) -> Self {
        Inventory {
            schema_version: SCHEMA_VERSION,
            collected_at,
            hostname: None,
            system: SystemInfo::default(),
            cpus: Cpus::default(),
            memory: Memory::default(),
            disks: Vec::new(),
            nics: Vec::new(),
            gpus: Vec::new(),
            pci_devices: Vec::new(),
            sensors: Vec::new(),
            psus: Vec::new(),
            sources: Vec::new(),
            missing: Vec::new(),
        }
    }

    /// Records that `what` could not be read because of `why`.
    pub fn add_missing(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.missing.push(Missing {
            what: what.into(),
            why: why.into(),
        });
    }
}

/// A part of the inventory that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// What is missing (`dmi`, `sensors`, `gpus`, `nic eth0 supported speeds`).
    pub what: String,
    /// Why (`no SMBIOS tables: /sys/firmware/dmi/tables absent`, `tool
    /// ethtool is not installed`).
    pub why: String,
}

/// The machine itself: identity, firmware and management controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
    pub board_vendor: Option<String>,
    pub board_product: Option<String>,
    pub board_serial: Option<String>,
    /// An IPMI BMC is present (SMBIOS type 38, or an IPMI device node).
    pub bmc_present: bool,
}

impl SystemInfo {
    /// The machine's identity: `uuid:…`, else `serial:…`; `None` when the
    /// firmware gives neither (a VM without DMI tables).
    pub fn identity(&self) -> Option<String> {
        self.uuid
            .as_ref()
            .map(|uuid| format!("uuid:{uuid}"))
            .or_else(|| {
                self.serial
                    .as_ref()
                    .map(|serial| format!("serial:{serial}"))
            })
    }
}

/// The processors, summed over sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpus {
    /// The model name, with runs of spaces collapsed.
    pub model: Option<String>,
    /// Populated sockets (enabled or idle).
    pub sockets: u32,
    /// Physical cores over all sockets.
    pub cores: u32,
    /// Hardware threads over all sockets (logical CPUs).
    pub threads: u32,
    /// One entry per populated socket, where the firmware lists them.
    pub packages: Vec<CpuPackage>,
}

/// One processor package in its socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuPackage {
    pub socket: String,
    pub model: Option<String>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
}

impl CpuPackage {
    pub fn identity(&self) -> String {
        format!("socket:{}", self.socket)
    }
}

/// Installed memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Installed bytes: the sum of the DIMMs where the firmware lists them,
    /// otherwise what the kernel sees.
    pub total_bytes: u64,
    /// What the kernel sees (`MemTotal`), always a little less than installed.
    pub os_visible_bytes: Option<u64>,
    /// Populated DIMM slots only.
    pub dimms: Vec<Dimm>,
    /// Slots the firmware lists, populated or not.
    pub slots_total: Option<u32>,
}

/// One memory module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimm {
    /// The slot (SMBIOS device locator, e.g. `PROC 1 DIMM 2`).
    pub slot: String,
    pub bank: Option<String>,
    pub size_bytes: u64,
    /// `DDR4`, `DDR5`, ...
    #[serde(rename = "type")]
    pub memory_type: Option<String>,
    /// Rated speed in MT/s.
    pub speed_mts: Option<u64>,
    pub manufacturer: Option<String>,
    pub part_number: Option<String>,
    pub serial: Option<String>,
}

impl Dimm {
    /// `serial:…` when the module has a real serial, else `slot:…`.
    pub fn identity(&self) -> String {
        match &self.serial {
            Some(serial) => format!("serial:{serial}"),
            None => format!("slot:{}", self.slot),
        }
    }
}

/// A block device (a disk, or a RAID controller's virtual disk).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name: `sda`, `nvme0n1`, `vda`.
    pub name: String,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub size_bytes: u64,
    /// Spinning disk; `None` where the kernel does not say.
    pub rotational: Option<bool>,
    /// `sata`, `sas`, `nvme`, `usb`, `virtio`, `scsi`, `fc`, `iscsi`, `mmc`.
    pub transport: Option<String>,
    pub removable: bool,
    /// The disk sits behind a hardware RAID controller (SMART must be read
    /// through the controller).
    pub behind_raid: bool,
    /// Not a physical drive: a RAID logical volume or a hypervisor's disk.
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    /// The controller's driver (`ahci`, `megaraid_sas`, `nvme`, `virtio_blk`).
    pub controller_driver: Option<String>,
}

impl Disk {
    /// `wwn:…`, else `serial:…`, else `name:…` (a kernel name is not stable
    /// across boots, so it is the last resort).
    pub fn identity(&self) -> String {
        if let Some(wwn) = &self.wwn {
            format!("wwn:{wwn}")
        } else if let Some(serial) = &self.serial {
            format!("serial:{serial}")
        } else {
            format!("name:{}", self.name)
        }
    }
}

/// Whether a network link is up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Down,
    #[default]
    Unknown,
}

/// A physical network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: Option<String>,
    pub driver: Option<String>,
    /// The PCI slot of the NIC function, where it is a PCI device.
    pub pci_slot: Option<String>,
    /// Speeds the NIC supports, in Mb/s, lowest first (from ethtool, or
    /// lshw's capacity where ethtool is absent).
    pub supported_speeds_mbps: Vec<u64>,
    pub link: LinkState,
    /// The negotiated speed in Mb/s, when the link is up.
    pub speed_mbps: Option<u64>,
}

impl Nic {
    /// `mac:…`, else `name:…`.
    pub fn identity(&self) -> String {
        match &self.mac {
            Some(mac) => format!("mac:{mac}"),
            None => format!("name:{}", self.name),
        }
    }

    /// The fastest supported speed, in Mb/s.
    pub fn max_supported_mbps(&self) -> Option<u64> {
        self.supported_speeds_mbps.iter().copied().max()
    }
}

/// A GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub model: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub memory_bytes: Option<u64>,
    pub pci_slot: Option<String>,
    pub pcie_gen_current: Option<u32>,
    pub pcie_gen_max: Option<u32>,
    pub pcie_width_current: Option<u32>,
    pub pcie_width_max: Option<u32>,
    /// Where the facts came from: `nvidia-smi`, or `lspci` alone (driver
    /// tools absent).
    pub source: String,
}

impl Gpu {
    /// `uuid:…`, else `serial:…`, else `pci:…`.
    pub fn identity(&self) -> String {
        if let Some(uuid) = &self.uuid {
            format!("uuid:{uuid}")
        } else if let Some(serial) = &self.serial {
            format!("serial:{serial}")
        } else {
            format!("pci:{}", self.pci_slot.as_deref().unwrap_or("unknown"))
        }
    }
}

/// A PCI function, as `lspci -vmm -nn` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// `[domain:]bus:device.function` as lspci prints it.
    pub slot: String,
    pub class: Option<String>,
    pub vendor: Option<String>,
    pub device: Option<String>,
    pub class_id: Option<String>,
    pub vendor_id: Option<String>,
    pub device_id: Option<String>,
    pub subsystem_vendor_id: Option<String>,
    pub subsystem_device_id: Option<String>,
    pub revision: Option<String>,
    pub driver: Option<String>,
}

impl PciDevice {
    pub fn identity(&self) -> String {
        format!("pci:{}", self.slot)
    }
}

/// What a sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    Temperature,
    Fan,
    Voltage,
    Current,
    Power,
    Other,
}

/// One sensor reading: the shared shape that hwmon, `sensors -j`, IPMI and
/// the thermal sidecar map into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// The chip or source (`coretemp-isa-0000`, `nvme-pci-0200`, `bmc`).
    pub chip: String,
    /// The sensor's label (`Package id 0`, `Composite`, `fan1`).
    pub label: String,
    pub kind: SensorKind,
    pub value: f64,
    /// `°C`, `RPM`, `V`, `A`, `W`.
    pub unit: String,
    pub max: Option<f64>,
    pub crit: Option<f64>,
}

impl SensorReading {
    pub fn identity(&self) -> String {
        format!("{}/{}", self.chip, self.label)
    }
}

/// A power supply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerSupply {
    pub name: String,
    /// As the source says it (`Present, OK`, `Not Present`, `ok`).
    pub status: Option<String>,
    /// Rated (or, from a BMC, measured) watts.
    pub watts: Option<u64>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
}

impl PowerSupply {
    pub fn identity(&self) -> String {
        match &self.serial {
            Some(serial) => format!("serial:{serial}"),
            None => format!("name:{}", self.name),
        }
    }
}

/// Collapses runs of whitespace and trims (`"Intel(R) Core(TM) i7 CPU
/// 870  @ 2.93GHz"` → single spaces).
pub fn collapse_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_prefer_the_most_stable_key() {
        let mut disk = Disk {
            name: "sda".into(),
            ..Disk::default()
        };
        assert_eq!(disk.identity(), "name:sda");
        disk.serial = Some("S1".into());
        assert_eq!(disk.identity(), "serial:S1");
        disk.wwn = Some("0x5000".into());
        assert_eq!(disk.identity(), "wwn:0x5000");
        let dimm = Dimm {
            slot: "A1".into(),
            ..Dimm::default()
        };
        assert_eq!(dimm.identity(), "slot:A1");
    }

    #[test]
    fn disk_serializes_virtual_under_its_plain_name() {
        let json = serde_json::to_value(Disk::default()).unwrap();
        assert_eq!(json["virtual"], false);
        assert_eq!(json["behind_raid"], false);
    }
}
