//! Collects the inventory of the machine it runs on, from whatever is
//! there: dmidecode (or the SMBIOS tables in sysfs), lshw, lspci (or
//! `/sys/bus/pci`), `/proc/cpuinfo`, `/proc/meminfo`, `/sys/block`,
//! `/sys/class/net` with ethtool, nvidia-smi and hwmon.
//!
//! Nothing here fails: every part that cannot be read becomes an entry of
//! [`Inventory::missing`] with the reason, and the rest is still collected.
//! Tools are spawned only through [`crate::runner`].
//!
//! Sensors: a minimal hwmon reader lives here for now (`temp*`, `fan*`,
//! `in*`, `curr*`, `power*` inputs with labels, max and crit); it is to be
//! replaced by `parsers::hwmon`, which maps into the same
//! [`SensorReading`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use super::{
    CpuPackage, Dimm, Disk, Gpu, Inventory, LinkState, Nic, PciDevice, PowerSupply, SensorKind,
    SensorReading, collapse_spaces, smbios,
};
use crate::parsers::{dmidecode, lshw, lspci};
use crate::runner::{ExitInfo, RunError, ToolCommand, ToolOutput, run_tool};

/// Where to read from and whether to run tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectOptions {
    /// `/sys`, or a copy of it in tests.
    pub sys_root: PathBuf,
    /// `/proc`, or a copy of it in tests.
    pub proc_root: PathBuf,
    /// `/dev` (for the IPMI device node).
    pub dev_root: PathBuf,
    /// Run external tools (dmidecode, lshw, lspci, ethtool, nvidia-smi).
    /// Without them only the kernel's files are read.
    pub run_tools: bool,
    /// The limit for each tool.
    pub tool_timeout: Duration,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            sys_root: PathBuf::from("/sys"),
            proc_root: PathBuf::from("/proc"),
            dev_root: PathBuf::from("/dev"),
            run_tools: true,
            tool_timeout: Duration::from_secs(120),
        }
    }
}

/// A tool's raw output, kept as evidence (the agent uploads it as an
/// artifact; the orchestrator can parse it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOutput {
    pub tool: String,
    pub command_line: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitInfo,
}

/// An inventory with the raw tool outputs it was built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub inventory: Inventory,
    pub raw_outputs: Vec<RawOutput>,
}

/// The inventory of this machine.
pub fn collect(options: &CollectOptions) -> Inventory {
    collect_detailed(options).inventory
}

/// The inventory of this machine and the raw outputs of the tools run.
pub fn collect_detailed(options: &CollectOptions) -> Collection {
    let mut collector = Collector {
        options,
        inventory: Inventory::empty(Utc::now()),
        raw_outputs: Vec::new(),
    };
    collector.inventory.hostname = read_trimmed(&options.proc_root.join("sys/kernel/hostname"));
    let dmi = collector.read_dmi();
    let lshw = collector.read_lshw();
    collector.read_cpus(dmi.as_ref(), lshw.as_ref());
    collector.read_memory(dmi.as_ref(), lshw.as_ref());
    collector.read_pci();
    collector.read_disks(lshw.as_ref());
    collector.read_nics(lshw.as_ref());
    collector.read_gpus();
    collector.read_sensors();
    collector.read_power_supplies(dmi.as_ref());
    collector.read_bmc(dmi.as_ref());
    if let Some(lshw) = &lshw {
        fill_system_from_lshw(&mut collector.inventory, lshw);
    }
    Collection {
        inventory: collector.inventory,
        raw_outputs: collector.raw_outputs,
    }
}

struct Collector<'a> {
    options: &'a CollectOptions,
    inventory: Inventory,
    raw_outputs: Vec<RawOutput>,
}

impl Collector<'_> {
    fn sys(&self, relative: &str) -> PathBuf {
        self.options.sys_root.join(relative)
    }

    fn add_source(&mut self, source: &str) {
        if !self.inventory.sources.iter().any(|known| known == source) {
            self.inventory.sources.push(source.to_string());
        }
    }

    /// Runs a tool, keeping its output; `Err` carries the reason for the
    /// `missing` list.
    fn run(&mut self, program: &str, args: &[&str]) -> Result<ToolOutput, String> {
        if !self.options.run_tools {
            return Err(format!("{program} not run (tools disabled)"));
        }
        let command = ToolCommand::new(program)
            .args(args.iter().copied())
            .timeout(self.options.tool_timeout);
        match run_tool(&command) {
            Ok(output) => {
                self.raw_outputs.push(RawOutput {
                    tool: program.to_string(),
                    command_line: output.command_line.clone(),
                    stdout: output.stdout.clone(),
                    stderr: output.stderr.clone(),
                    status: output.status,
                });
                Ok(output)
            }
            Err(error @ RunError::NotFound { .. }) => Err(error.to_string()),
            Err(error) => Err(format!("{error}")),
        }
    }

    /// SMBIOS from dmidecode, else from the sysfs tables.
    fn read_dmi(&mut self) -> Option<dmidecode::Dmidecode> {
        let mut reasons = Vec::new();
        match self.run("dmidecode", &[]) {
            Ok(output) => match dmidecode::parse(&output.stdout) {
                Ok(data) => {
                    self.add_source("dmidecode");
                    apply_dmi(&mut self.inventory, &data);
                    return Some(data);
                }
                Err(_) => reasons.push(format!(
                    "dmidecode found no structures ({})",
                    last_line(&output.stdout, &output.stderr)
                )),
            },
            Err(reason) => reasons.push(reason),
        }
        let tables = self.sys("firmware/dmi/tables");
        if !tables.exists() {
            reasons.push(format!("no SMBIOS tables: {} absent", tables.display()));
            self.inventory.add_missing(
                "dmi (system identity, BIOS, DIMMs, CPU sockets, PSUs)",
                reasons.join("; "),
            );
            return None;
        }
        let entry_point = std::fs::read(tables.join("smbios_entry_point"));
        let table = std::fs::read(tables.join("DMI"));
        match (entry_point, table) {
            (Ok(entry_point), Ok(table)) => match smbios::parse_tables(&entry_point, &table) {
                Ok(data) => {
                    self.add_source("sysfs-smbios");
                    apply_dmi(&mut self.inventory, &data);
                    return Some(data);
                }
                Err(error) => reasons.push(format!("{}: {error}", tables.display())),
            },
            (Err(error), _) | (_, Err(error)) => reasons.push(format!(
                "SMBIOS tables in {} unreadable: {error}",
                tables.display()
            )),
        }
        self.inventory.add_missing(
            "dmi (system identity, BIOS, DIMMs, CPU sockets, PSUs)",
            reasons.join("; "),
        );
        None
    }

    fn read_lshw(&mut self) -> Option<lshw::Lshw> {
        match self.run("lshw", &["-json", "-quiet"]) {
            Ok(output) => match lshw::parse(&output.stdout) {
                Ok(data) => {
                    self.add_source("lshw");
                    Some(data)
                }
                Err(error) => {
                    self.inventory.add_missing("lshw", error.to_string());
                    None
                }
            },
            Err(reason) => {
                self.inventory.add_missing("lshw", reason);
                None
            }
        }
    }

    fn read_cpus(&mut self, dmi: Option<&dmidecode::Dmidecode>, lshw: Option<&lshw::Lshw>) {
        let path = self.options.proc_root.join("cpuinfo");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let cpuinfo = parse_cpuinfo(&text);
                let cpus = &mut self.inventory.cpus;
                cpus.model = cpuinfo.model.map(|model| collapse_spaces(&model));
                cpus.sockets = cpuinfo.sockets;
                cpus.cores = cpuinfo.cores;
                cpus.threads = cpuinfo.threads;
                self.add_source("procfs");
            }
            Err(error) => {
                self.inventory
                    .add_missing("cpus", format!("{}: {error}", path.display()));
                if let Some(dmi) = dmi {
                    let cpus = &mut self.inventory.cpus;
                    cpus.sockets = dmi.summary.cpus_active as u32;
                    cpus.cores = dmi.summary.cores_active;
                    cpus.threads = dmi.summary.threads_active;
                }
            }
        }
        let cpus = &mut self.inventory.cpus;
        if cpus.model.is_none() {
            cpus.model = cpus
                .packages
                .iter()
                .find_map(|package| package.model.clone())
                .or_else(|| {
                    lshw.and_then(|lshw| lshw.cpus.iter().find_map(|cpu| cpu.product.clone()))
                        .map(|model| collapse_spaces(&model))
                });
        }
    }

    fn read_memory(&mut self, dmi: Option<&dmidecode::Dmidecode>, lshw: Option<&lshw::Lshw>) {
        let path = self.options.proc_root.join("meminfo");
        match std::fs::read_to_string(&path) {
            Ok(text) => self.inventory.memory.os_visible_bytes = parse_meminfo_total(&text),
            Err(error) => self.inventory.add_missing(
                "memory (kernel view)",
                format!("{}: {error}", path.display()),
            ),
        }
        let memory = &mut self.inventory.memory;
        if dmi.is_some_and(|dmi| dmi.summary.total_memory_bytes > 0) {
            return;
        }
        let lshw_total = lshw.and_then(|lshw| lshw.memory_bytes);
        memory.total_bytes = lshw_total.or(memory.os_visible_bytes).unwrap_or(0);
        let source = if lshw_total.is_some() {
            "lshw"
        } else {
            "/proc/meminfo"
        };
        self.inventory.add_missing(
            "memory dimms",
            format!(
                "no SMBIOS memory devices: slots, sizes and serials unknown; total from {source}"
            ),
        );
    }

    fn read_pci(&mut self) {
        match self.run("lspci", &["-vmm", "-nn", "-D", "-k"]) {
            Ok(output) => match lspci::parse(&output.stdout) {
                Ok(data) => {
                    self.add_source("lspci");
                    self.inventory.pci_devices = data.devices.iter().map(pci_device_from).collect();
                    return;
                }
                Err(error) => self.inventory.add_missing("lspci", error.to_string()),
            },
            Err(reason) => self.inventory.add_missing("pci names (lspci)", reason),
        }
        // Without lspci: ids and drivers from sysfs.
        let root = self.sys("bus/pci/devices");
        let Ok(entries) = std::fs::read_dir(&root) else {
            self.inventory
                .add_missing("pci_devices", format!("{} unreadable", root.display()));
            return;
        };
        let mut devices: Vec<PciDevice> = entries
            .flatten()
            .map(|entry| {
                let path = entry.path();
                let id = |file: &str| {
                    read_trimmed(&path.join(file))
                        .map(|value| value.trim_start_matches("0x").to_ascii_lowercase())
                };
                PciDevice {
                    slot: entry.file_name().to_string_lossy().into_owned(),
                    class_id: id("class").map(|class| class.chars().take(4).collect()),
                    vendor_id: id("vendor"),
                    device_id: id("device"),
                    subsystem_vendor_id: id("subsystem_vendor"),
                    subsystem_device_id: id("subsystem_device"),
                    revision: id("revision"),
                    driver: link_name(&path.join("driver")),
                    ..PciDevice::default()
                }
            })
            .collect();
        devices.sort_by(|a, b| a.slot.cmp(&b.slot));
        self.add_source("sysfs-pci");
        self.inventory.pci_devices = devices;
    }

    fn read_disks(&mut self, lshw: Option<&lshw::Lshw>) {
        let root = self.sys("block");
        let Ok(entries) = std::fs::read_dir(&root) else {
            self.inventory
                .add_missing("disks", format!("{} unreadable", root.display()));
            return;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            const NOT_DISKS: &[&str] = &["loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd"];
            if NOT_DISKS.iter().any(|prefix| name.starts_with(prefix)) {
                continue;
            }
            let path = root.join(&name);
            if !path.join("device").exists() {
                continue;
            }
            let mut disk = read_block_device(&path, &name);
            if disk.serial.is_none()
                && let Some(lshw_disk) = lshw.and_then(|lshw| {
                    lshw.disks.iter().find(|candidate| {
                        candidate.device.as_deref() == Some(&format!("/dev/{name}"))
                    })
                })
            {
                disk.serial = lshw_disk.serial.clone();
            }
            self.inventory.disks.push(disk);
        }
        self.add_source("sysfs-block");
    }

    fn read_nics(&mut self, lshw: Option<&lshw::Lshw>) {
        let root = self.sys("class/net");
        let Ok(entries) = std::fs::read_dir(&root) else {
            self.inventory
                .add_missing("nics", format!("{} unreadable", root.display()));
            return;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut ethtool_missing: Option<String> = None;
        for name in names {
            let path = root.join(&name);
            // Only interfaces backed by a device: no lo, bridges, bonds, veths.
            if name == "lo" || !path.join("device").exists() {
                continue;
            }
            let operstate = read_trimmed(&path.join("operstate")).unwrap_or_default();
            let link = match operstate.as_str() {
                "up" => LinkState::Up,
                "down" | "lowerlayerdown" | "notpresent" | "dormant" => LinkState::Down,
                _ => match read_trimmed(&path.join("carrier")).as_deref() {
                    Some("1") => LinkState::Up,
                    Some("0") => LinkState::Down,
                    _ => LinkState::Unknown,
                },
            };
            let speed_mbps = read_trimmed(&path.join("speed"))
                .and_then(|speed| speed.parse::<i64>().ok())
                .filter(|&speed| speed > 0)
                .map(|speed| speed as u64);
            let device = path.join("device");
            let mut nic = Nic {
                name: name.clone(),
                mac: read_trimmed(&path.join("address")).filter(|mac| !mac.is_empty()),
                driver: link_name(&device.join("driver")),
                pci_slot: std::fs::canonicalize(&device)
                    .ok()
                    .and_then(|resolved| pci_ancestor(&resolved))
                    .map(|(slot, _)| slot),
                supported_speeds_mbps: Vec::new(),
                link,
                speed_mbps: speed_mbps.filter(|_| link == LinkState::Up),
            };
            if ethtool_missing.is_none() {
                match self.run("ethtool", &[&name]) {
                    Ok(output) => {
                        nic.supported_speeds_mbps = parse_ethtool_supported_speeds(
                            &String::from_utf8_lossy(&output.stdout),
                        );
                    }
                    Err(reason) => ethtool_missing = Some(reason),
                }
            }
            if nic.supported_speeds_mbps.is_empty()
                && let Some(capacity) = lshw.and_then(|lshw| {
                    lshw.nics
                        .iter()
                        .find(|candidate| candidate.logical_name.as_deref() == Some(name.as_str()))
                        .and_then(|candidate| candidate.capacity_bps)
                })
            {
                nic.supported_speeds_mbps = vec![capacity / 1_000_000];
            }
            if nic.supported_speeds_mbps.is_empty() {
                self.inventory.add_missing(
                    format!("nic {name} supported speeds"),
                    ethtool_missing
                        .clone()
                        .unwrap_or_else(|| "the driver reports no link modes".to_string()),
                );
            }
            self.inventory.nics.push(nic);
        }
        self.add_source("sysfs-net");
    }

    fn read_gpus(&mut self) {
        let nvidia_on_pci: Vec<PciDevice> = self
            .inventory
            .pci_devices
            .iter()
            .filter(|device| is_gpu(device))
            .cloned()
            .collect();
        let query = "name,serial,uuid,memory.total,pci.bus_id,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max";
        let nvidia_smi = if nvidia_on_pci
            .iter()
            .any(|device| device.vendor_id.as_deref() == Some("10de"))
        {
            Some(self.run(
                "nvidia-smi",
                &[
                    &format!("--query-gpu={query}"),
                    "--format=csv,noheader,nounits",
                ],
            ))
        } else {
            None
        };
        let mut gpus = match nvidia_smi {
            Some(Ok(output)) if output.status.success() => {
                self.add_source("nvidia-smi");
                parse_nvidia_smi_query(&String::from_utf8_lossy(&output.stdout))
            }
            Some(Ok(output)) => {
                self.inventory.add_missing(
                    "gpu details",
                    format!(
                        "`{}` failed with {}: {}",
                        output.command_line,
                        output.status,
                        last_line(&output.stdout, &output.stderr)
                    ),
                );
                Vec::new()
            }
            Some(Err(reason)) => {
                self.inventory.add_missing("gpu details", reason);
                Vec::new()
            }
            None => Vec::new(),
        };
        // GPUs on PCI that the driver tool did not report are still listed.
        for device in nvidia_on_pci {
            let known = gpus.iter().any(|gpu| {
                gpu.pci_slot
                    .as_deref()
                    .is_some_and(|slot| same_pci_slot(slot, &device.slot))
            });
            if !known {
                gpus.push(Gpu {
                    model: device.device.clone().or(device.device_id.clone()),
                    pci_slot: Some(device.slot.clone()),
                    source: "lspci".to_string(),
                    ..Gpu::default()
                });
            }
        }
        self.inventory.gpus = gpus;
    }

    fn read_sensors(&mut self) {
        let root = self.sys("class/hwmon");
        let Ok(entries) = std::fs::read_dir(&root) else {
            self.inventory.add_missing(
                "sensors",
                format!("no hwmon devices: {} absent", root.display()),
            );
            return;
        };
        let mut chips: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        chips.sort();
        for chip in &chips {
            self.inventory.sensors.extend(read_hwmon_chip(chip));
        }
        if self.inventory.sensors.is_empty() {
            self.inventory.add_missing(
                "sensors",
                format!("no hwmon readings under {}", root.display()),
            );
        } else {
            self.add_source("hwmon");
        }
    }

    fn read_power_supplies(&mut self, dmi: Option<&dmidecode::Dmidecode>) {
        let Some(dmi) = dmi else {
            self.inventory.add_missing(
                "psus",
                "no SMBIOS tables (PSUs are also read from the BMC in the PSU stage)",
            );
            return;
        };
        self.inventory.psus = dmi
            .power_supplies
            .iter()
            .filter(|psu| psu.present)
            .enumerate()
            .map(|(index, psu)| PowerSupply {
                name: psu
                    .location
                    .clone()
                    .or(psu.name.clone())
                    .unwrap_or_else(|| format!("PSU {}", index + 1)),
                status: psu.status.clone(),
                watts: psu.max_power_watts,
                manufacturer: psu.manufacturer.clone(),
                model: psu.model_part_number.clone().or(psu.name.clone()),
                serial: psu.serial.clone(),
            })
            .collect();
        if self.inventory.psus.is_empty() {
            self.inventory.add_missing(
                "psus",
                "no SMBIOS power supply records (PSUs are also read from the BMC in the PSU stage)",
            );
        }
    }

    fn read_bmc(&mut self, dmi: Option<&dmidecode::Dmidecode>) {
        let device_node = ["ipmi0", "ipmi/0", "ipmidev/0"]
            .iter()
            .any(|node| self.options.dev_root.join(node).exists());
        let sysfs = self.sys("class/ipmi").exists();
        self.inventory.system.bmc_present =
            dmi.is_some_and(|dmi| dmi.ipmi.is_some()) || device_node || sysfs;
    }
}

/// Maps SMBIOS records into the inventory: system identity, BIOS, board,
/// CPU packages, DIMMs.
pub fn apply_dmi(inventory: &mut Inventory, dmi: &dmidecode::Dmidecode) {
    let system = &mut inventory.system;
    if let Some(record) = &dmi.system {
        system.vendor = record.manufacturer.clone();
        system.product = record.product.clone();
        system.serial = record.serial.clone();
        system.uuid = record.uuid.clone();
    }
    if let Some(bios) = &dmi.bios {
        system.bios_vendor = bios.vendor.clone();
        system.bios_version = bios.version.clone();
        system.bios_date = bios.release_date.clone();
    }
    if let Some(board) = dmi.baseboards.first() {
        system.board_vendor = board.manufacturer.clone();
        system.board_product = board.product.clone();
        system.board_serial = board.serial.clone();
    }
    system.bmc_present |= dmi.ipmi.is_some();
    inventory.cpus.packages = dmi
        .processors
        .iter()
        .filter(|processor| processor.active)
        .enumerate()
        .map(|(index, processor)| CpuPackage {
            socket: processor
                .socket
                .clone()
                .unwrap_or_else(|| format!("socket {index}")),
            model: processor.version.as_deref().map(collapse_spaces),
            cores: processor.core_enabled.or(processor.core_count),
            threads: processor.thread_count,
        })
        .collect();
    if inventory.cpus.sockets == 0 {
        inventory.cpus.sockets = dmi.summary.cpus_active as u32;
        inventory.cpus.cores = dmi.summary.cores_active;
        inventory.cpus.threads = dmi.summary.threads_active;
    }
    let memory = &mut inventory.memory;
    memory.dimms = dmi
        .memory_devices
        .iter()
        .filter(|device| device.populated)
        .enumerate()
        .map(|(index, device)| Dimm {
            slot: device
                .locator
                .clone()
                .unwrap_or_else(|| format!("handle 0x{:04X} ({index})", device.handle)),
            bank: device.bank_locator.clone(),
            size_bytes: device.size_bytes.unwrap_or(0),
            memory_type: device.memory_type.clone(),
            speed_mts: device.speed_mts,
            manufacturer: device.manufacturer.clone(),
            part_number: device.part_number.clone(),
            serial: device.serial.clone(),
        })
        .collect();
    memory.slots_total = u32::try_from(dmi.summary.dimm_slots)
        .ok()
        .filter(|&slots| slots > 0);
    if dmi.summary.total_memory_bytes > 0 {
        memory.total_bytes = dmi.summary.total_memory_bytes;
    }
}

/// Fills the system identity from lshw where SMBIOS gave none.
pub fn fill_system_from_lshw(inventory: &mut Inventory, lshw: &lshw::Lshw) {
    let system = &mut inventory.system;
    let meaningful = |value: &Option<String>| value.as_deref().and_then(dmidecode::meaningful);
    system.vendor = system
        .vendor
        .take()
        .or_else(|| meaningful(&lshw.system.vendor));
    system.product = system
        .product
        .take()
        .or_else(|| meaningful(&lshw.system.product));
    system.serial = system
        .serial
        .take()
        .or_else(|| meaningful(&lshw.system.serial));
    system.uuid = system.uuid.take().or_else(|| {
        meaningful(&lshw.system.uuid).filter(|uuid| !dmidecode::is_placeholder_uuid(uuid))
    });
}

/// An lspci record as an inventory PCI device.
pub fn pci_device_from(record: &lspci::PciRecord) -> PciDevice {
    PciDevice {
        slot: record.slot.clone(),
        class: record.class.clone(),
        vendor: record.vendor.clone(),
        device: record.device.clone(),
        class_id: record.class_id.clone(),
        vendor_id: record.vendor_id.clone(),
        device_id: record.device_id.clone(),
        subsystem_vendor_id: record.subsystem_vendor_id.clone(),
        subsystem_device_id: record.subsystem_device_id.clone(),
        revision: record.revision.clone(),
        driver: record.driver.clone(),
    }
}

/// A compute GPU on PCI: NVIDIA display-class functions, AMD 3D / other
/// display controllers (not the BMC's VGA).
fn is_gpu(device: &PciDevice) -> bool {
    let class = device.class_id.as_deref().unwrap_or("");
    match device.vendor_id.as_deref() {
        Some("10de") => class.starts_with("03"),
        Some("1002") => class == "0302" || class == "0380",
        _ => false,
    }
}

/// A PCI address in lspci's `-D` spelling: `00000000:3B:00.0` (nvidia-smi)
/// → `0000:3b:00.0`; `3b:00.0` → `0000:3b:00.0`.
pub fn normalize_pci_slot(slot: &str) -> String {
    let lower = slot.trim().to_ascii_lowercase();
    let parts: Vec<&str> = lower.rsplitn(3, ':').collect();
    match parts.as_slice() {
        [function, bus, domain] => {
            format!("{:0>4}:{bus}:{function}", domain.trim_start_matches('0'))
        }
        [function, bus] => format!("0000:{bus}:{function}"),
        _ => lower,
    }
}

fn same_pci_slot(left: &str, right: &str) -> bool {
    normalize_pci_slot(left) == normalize_pci_slot(right)
}

/// Summary of `/proc/cpuinfo`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CpuinfoSummary {
    pub model: Option<String>,
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

/// Reads model, sockets (distinct `physical id`), cores (`cpu cores` per
/// socket) and threads (`processor` entries) from `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str) -> CpuinfoSummary {
    let mut summary = CpuinfoSummary::default();
    let mut cores_per_socket: BTreeMap<String, u32> = BTreeMap::new();
    let mut current_socket: Option<String> = None;
    let mut current_cores: Option<u32> = None;
    let mut flush = |socket: &mut Option<String>, cores: &mut Option<u32>| {
        if let Some(count) = cores.take() {
            cores_per_socket.insert(socket.take().unwrap_or_default(), count);
        }
        *socket = None;
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            if line.trim().is_empty() {
                flush(&mut current_socket, &mut current_cores);
            }
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => summary.threads += 1,
            "model name" | "Model" | "cpu model" if summary.model.is_none() => {
                summary.model = Some(value.to_string());
            }
            "physical id" => current_socket = Some(value.to_string()),
            "cpu cores" => current_cores = value.parse().ok(),
            _ => {}
        }
    }
    flush(&mut current_socket, &mut current_cores);
    let sockets: BTreeSet<&String> = cores_per_socket.keys().collect();
    summary.sockets = if summary.threads == 0 {
        0
    } else {
        (sockets.len() as u32).max(1)
    };
    summary.cores = if cores_per_socket.is_empty() {
        summary.threads
    } else {
        cores_per_socket.values().sum()
    };
    summary
}

/// `MemTotal:  24684092 kB` → bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kilobytes.checked_mul(1024)
}

/// The speeds (Mb/s) in ethtool's `Supported link modes:` list.
pub fn parse_ethtool_supported_speeds(text: &str) -> Vec<u64> {
    let mut speeds = BTreeSet::new();
    let mut in_list = false;
    for line in text.lines() {
        let trimmed = line.trim();
        let modes = if let Some(rest) = trimmed.strip_prefix("Supported link modes:") {
            in_list = true;
            rest
        } else if in_list && !trimmed.contains(':') {
            trimmed
        } else {
            in_list = false;
            continue;
        };
        for mode in modes.split_whitespace() {
            let digits: String = mode.chars().take_while(char::is_ascii_digit).collect();
            if mode[digits.len()..].starts_with("base")
                && let Ok(speed) = digits.parse::<u64>()
            {
                speeds.insert(speed);
            }
        }
    }
    speeds.into_iter().collect()
}

/// Rows of `nvidia-smi --query-gpu=name,serial,uuid,memory.total,pci.bus_id,
/// pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,
/// pcie.link.width.max --format=csv,noheader,nounits`.
pub fn parse_nvidia_smi_query(text: &str) -> Vec<Gpu> {
    let value = |field: Option<&str>| {
        field
            .map(str::trim)
            .filter(|field| !field.is_empty() && !field.starts_with('[') && *field != "N/A")
            .map(str::to_string)
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let field = |index: usize| value(fields.get(index).copied());
            let number = |index: usize| field(index).and_then(|text| text.parse::<u32>().ok());
            Gpu {
                model: field(0),
                serial: field(1),
                uuid: field(2),
                memory_bytes: field(3)
                    .and_then(|mebibytes| mebibytes.parse::<u64>().ok())
                    .map(|mebibytes| mebibytes << 20),
                pci_slot: field(4).map(|slot| normalize_pci_slot(&slot)),
                pcie_gen_current: number(5),
                pcie_gen_max: number(6),
                pcie_width_current: number(7),
                pcie_width_max: number(8),
                source: "nvidia-smi".to_string(),
            }
        })
        .collect()
}

/// RAID controller drivers: disks behind them are logical volumes or
/// pass-through disks whose SMART is read through the controller.
const RAID_DRIVERS: &[&str] = &[
    "megaraid_sas",
    "megaraid",
    "hpsa",
    "cciss",
    "smartpqi",
    "aacraid",
    "arcmsr",
    "3w-9xxx",
    "3w-sas",
    "3w-xxxx",
    "mpi3mr",
    "ips",
];

/// Model or vendor strings of logical volumes and hypervisor disks.
const VIRTUAL_DISK_MARKERS: &[&str] = &[
    "LOGICAL VOLUME",
    "PERC",
    "MR9",
    "MEGARAID",
    "RAID",
    "VIRTUAL",
    "AVAGO",
    "SERVERAID",
    "QEMU",
    "VBOX",
    "VMWARE",
];

/// Reads one `/sys/block/NAME` entry (`path`): what the inventory knows of
/// a disk, and what the Storage stage reads again right before it probes
/// or writes the disk.
pub fn read_block_device(path: &Path, name: &str) -> Disk {
    let device = path.join("device");
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let resolved_text = resolved.to_string_lossy().into_owned();
    let controller_driver = pci_ancestor(&resolved).and_then(|(_, driver)| driver);
    let transport = transport_from_path(&resolved_text, name);
    let model = read_trimmed(&device.join("model")).filter(|model| !model.is_empty());
    let vendor = read_trimmed(&device.join("vendor"))
        .filter(|vendor| !vendor.is_empty() && !vendor.starts_with("0x"));
    let serial = [path.join("serial"), device.join("serial")]
        .iter()
        .find_map(|file| read_trimmed(file).filter(|serial| !serial.is_empty()))
        .or_else(|| {
            std::fs::read(device.join("vpd_pg80"))
                .ok()
                .and_then(|page| vpd_serial(&page))
        });
    let wwn = [path.join("wwid"), device.join("wwid")]
        .iter()
        .find_map(|file| read_trimmed(file).filter(|wwid| !wwid.is_empty()));
    let behind_raid = controller_driver
        .as_deref()
        .is_some_and(|driver| RAID_DRIVERS.contains(&driver));
    let label = format!(
        "{} {}",
        vendor.as_deref().unwrap_or(""),
        model.as_deref().unwrap_or("")
    )
    .to_ascii_uppercase();
    let is_virtual = transport.as_deref() == Some("virtio")
        || VIRTUAL_DISK_MARKERS
            .iter()
            .any(|marker| label.contains(marker));
    Disk {
        name: name.to_string(),
        model: model.map(|model| collapse_spaces(&model)),
        vendor,
        serial,
        wwn,
        size_bytes: read_trimmed(&path.join("size"))
            .and_then(|sectors| sectors.parse::<u64>().ok())
            .map_or(0, |sectors| sectors.saturating_mul(512)),
        rotational: read_trimmed(&path.join("queue/rotational")).map(|flag| flag == "1"),
        transport,
        removable: read_trimmed(&path.join("removable")).is_some_and(|flag| flag == "1"),
        behind_raid,
        is_virtual,
        controller_driver,
    }
}

/// The transport, from the device's place in the sysfs tree.
fn transport_from_path(resolved: &str, name: &str) -> Option<String> {
    let transport = if name.starts_with("nvme") || resolved.contains("/nvme") {
        "nvme"
    } else if resolved.contains("/usb") {
        "usb"
    } else if resolved.contains("/virtio") {
        "virtio"
    } else if resolved.contains("/mmc") {
        "mmc"
    } else if resolved.contains("/end_device-")
        || resolved.contains("/sas_")
        || (resolved.contains("/port-") && resolved.contains("/expander-"))
    {
        "sas"
    } else if resolved.contains("/rport-") {
        "fc"
    } else if resolved.contains("/session") {
        "iscsi"
    } else if resolved.contains("/ata") {
        "sata"
    } else if resolved.contains("/host") {
        "scsi"
    } else if resolved.contains("/xen") || resolved.contains("/vbd-") {
        "xen"
    } else if resolved.contains("/VMBUS") || resolved.contains("/vmbus") {
        "hyperv"
    } else {
        return None;
    };
    Some(transport.to_string())
}

/// The nearest PCI function above a sysfs path, with its driver.
fn pci_ancestor(resolved: &Path) -> Option<(String, Option<String>)> {
    resolved.ancestors().find_map(|ancestor| {
        let name = ancestor.file_name()?.to_str()?;
        is_pci_address(name).then(|| (name.to_string(), link_name(&ancestor.join("driver"))))
    })
}

/// `0000:00:1f.2`.
fn is_pci_address(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() == 12
        && bytes[4] == b':'
        && bytes[7] == b':'
        && bytes[10] == b'.'
        && name
            .chars()
            .enumerate()
            .all(|(index, c)| matches!(index, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// The serial in a SCSI VPD page 0x80 (unit serial number).
fn vpd_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let length = usize::from(page[3]);
    let serial = page.get(4..4 + length)?;
    let serial = String::from_utf8_lossy(serial).trim().to_string();
    (!serial.is_empty()).then_some(serial)
}

/// Reads one hwmon chip directory (minimal reader; see the module docs).
fn read_hwmon_chip(chip: &Path) -> Vec<SensorReading> {
    let chip_name = read_trimmed(&chip.join("name")).unwrap_or_else(|| {
        chip.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let Ok(entries) = std::fs::read_dir(chip) else {
        return Vec::new();
    };
    let mut inputs: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_suffix("_input").map(str::to_string)
        })
        .collect();
    inputs.sort();
    inputs
        .into_iter()
        .filter_map(|sensor| {
            let prefix: String = sensor
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            let (kind, unit, scale) = match prefix.as_str() {
                "temp" => (SensorKind::Temperature, "°C", 1000.0),
                "fan" => (SensorKind::Fan, "RPM", 1.0),
                "in" => (SensorKind::Voltage, "V", 1000.0),
                "curr" => (SensorKind::Current, "A", 1000.0),
                "power" => (SensorKind::Power, "W", 1_000_000.0),
                _ => return None,
            };
            let number = |suffix: &str| {
                read_trimmed(&chip.join(format!("{sensor}_{suffix}")))
                    .and_then(|value| value.parse::<f64>().ok())
                    .map(|value| value / scale)
            };
            Some(SensorReading {
                chip: chip_name.clone(),
                label: read_trimmed(&chip.join(format!("{sensor}_label")))
                    .unwrap_or_else(|| sensor.clone()),
                kind,
                value: number("input")?,
                unit: unit.to_string(),
                max: number("max"),
                crit: number("crit"),
            })
        })
        .collect()
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// The file name a symlink points to (`…/drivers/ahci` → `ahci`).
fn link_name(path: &Path) -> Option<String> {
    std::fs::read_link(path).ok().and_then(|target| {
        target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    })
}

/// The last non-empty line of stderr, else of stdout, for reasons.
fn last_line(stdout: &[u8], stderr: &[u8]) -> String {
    let pick = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(|line| line.trim().to_string())
    };
    pick(stderr)
        .or_else(|| pick(stdout))
        .unwrap_or_else(|| "no output".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_counts_sockets_cores_and_threads() {
        let mut text = String::new();
        for (processor, socket) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
            text.push_str(&format!(
                "processor\t: {processor}\nmodel name\t: Intel(R) Xeon(R)  Gold\nphysical id\t: {socket}\ncpu cores\t: 1\n\n"
            ));
        }
        let summary = parse_cpuinfo(&text);
        assert_eq!(summary.threads, 4);
        assert_eq!(summary.sockets, 2);
        assert_eq!(summary.cores, 2);
    }

    #[test]
    fn ethtool_speeds_span_continuation_lines() {
        let text = "Settings for eth0:\n\tSupported ports: [ TP ]\n\tSupported link modes:   10baseT/Half 10baseT/Full\n\t                        100baseT/Full\n\t                        1000baseT/Full 25000baseCR/Full\n\tSupported pause frame use: No\n\tAdvertised link modes:  40000baseSR4/Full\n";
        assert_eq!(
            parse_ethtool_supported_speeds(text),
            vec![10, 100, 1000, 25000]
        );
        assert!(
            parse_ethtool_supported_speeds("\tSupported link modes:   Not reported\n").is_empty()
        );
    }

    #[test]
    fn nvidia_smi_query_rows() {
        // Row 1 was captured from the collector's query on an H100 (driver
        // 580.159.04); row 2 is written from a T4's documented fields.
        let gpus = parse_nvidia_smi_query(
            "NVIDIA H100 80GB HBM3, 1752724006483, GPU-d05bc7ec-b45c-1ac3-d8dd-3285d3ec762f, 81559, 00000000:00:06.0, 5, 5, 16, 16\nTesla T4, [N/A], GPU-def, 15360, 00000000:00:1E.0, 3, 3, 8, 16\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(
            gpus[0].identity(),
            "uuid:GPU-d05bc7ec-b45c-1ac3-d8dd-3285d3ec762f"
        );
        assert_eq!(gpus[0].memory_bytes, Some(81559 << 20));
        assert_eq!(gpus[0].pci_slot.as_deref(), Some("0000:00:06.0"));
        assert_eq!(
            (gpus[0].pcie_gen_current, gpus[0].pcie_width_max),
            (Some(5), Some(16))
        );
        assert_eq!(gpus[1].serial, None);
        assert_eq!(gpus[1].pcie_width_current, Some(8));
        assert_eq!(gpus[1].pci_slot.as_deref(), Some("0000:00:1e.0"));
        assert!(same_pci_slot("00000000:0A:00.0", "0000:0a:00.0"));
    }

    #[test]
    fn transports_from_sysfs_paths() {
        let cases = [
            (
                "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
                "sda",
                "sata",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda",
                "vda",
                "virtio",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1",
                "nvme0n1",
                "nvme",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
                "sdb",
                "usb",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:01.0/0000:02:00.0/host0/port-0:0/end_device-0:0/target0:0:0/0:0:0:0/block/sda",
                "sda",
                "sas",
            ),
        ];
        for (path, name, expected) in cases {
            assert_eq!(
                transport_from_path(path, name).as_deref(),
                Some(expected),
                "{path}"
            );
        }
        assert_eq!(
            pci_ancestor(Path::new("/nonexistent/pci0000:00/0000:00:1f.2/ata1/host0")),
            Some(("0000:00:1f.2".to_string(), None))
        );
    }

    #[test]
    fn vpd_page_80_serial() {
        let mut page = vec![0, 0x80, 0, 8];
        page.extend_from_slice(b"  ZA1234");
        assert_eq!(vpd_serial(&page).as_deref(), Some("ZA1234"));
        assert_eq!(vpd_serial(&[0, 0x83, 0, 0]), None);
    }
}
