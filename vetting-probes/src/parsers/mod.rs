//! One parser per tool, each in its own module, and the dispatch from a tool
//! name to its parser and verdict rules (the agent's own measurements, whose
//! documents are tools too, are judged in [`crate::verdicts`]).
//!
//! Every module offers `report(input, thresholds) -> Result<ToolReport,
//! ParseError>`: it parses the raw bytes (never panicking on bad input),
//! normalizes them into typed data, and judges them. The verdict is read
//! from the parsed output, never from an exit code alone.

use serde::{Deserialize, Serialize};

use crate::{ParseError, Thresholds, Verdict, verdicts};

pub mod badblocks;
pub mod blkid;
pub mod dcgmi;
pub mod dmidecode;
pub mod fio;
pub mod gpu_burn;
pub mod hwmon;
pub mod iperf3;
pub mod ipmitool;
pub mod lsblk;
pub mod lshw;
pub mod lspci;
pub mod memtester;
pub mod nvidia_smi;
pub mod nvme;
pub mod sensors;
mod shared;
pub mod smartctl;
pub mod stress_ng;
pub mod wipefs;

/// A tool whose saved output vetting can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    Lshw,
    Dmidecode,
    Lspci,
    Smartctl,
    Nvme,
    Sensors,
    NvidiaSmi,
    Ipmitool,
    StressNg,
    Fio,
    Badblocks,
    Memtester,
    Iperf3,
    Dcgmi,
    GpuBurn,
    Wipefs,
    Blkid,
    Lsblk,
    /// EDAC memory-error counters before and after CPUStress
    /// ([`crate::verdicts::cpu`]).
    Edac,
    /// The CPUs' thermal throttle counters before and after CPUStress.
    CpuThrottle,
    /// The thermal sidecar's peaks during CPUStress.
    ThermalSidecar,
    /// An interface's error and drop counters before and after Network
    /// ([`crate::verdicts::network`]).
    NetCounters,
    /// A disk's smartctl outputs before and after Storage
    /// ([`crate::verdicts::storage`]).
    SmartGrowth,
}

impl Tool {
    pub const ALL: [Tool; 23] = [
        Tool::Lshw,
        Tool::Dmidecode,
        Tool::Lspci,
        Tool::Smartctl,
        Tool::Nvme,
        Tool::Sensors,
        Tool::NvidiaSmi,
        Tool::Ipmitool,
        Tool::StressNg,
        Tool::Fio,
        Tool::Badblocks,
        Tool::Memtester,
        Tool::Iperf3,
        Tool::Dcgmi,
        Tool::GpuBurn,
        Tool::Wipefs,
        Tool::Blkid,
        Tool::Lsblk,
        Tool::Edac,
        Tool::CpuThrottle,
        Tool::ThermalSidecar,
        Tool::NetCounters,
        Tool::SmartGrowth,
    ];

    /// The name used on the command line and in artifacts.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Lshw => "lshw",
            Tool::Dmidecode => "dmidecode",
            Tool::Lspci => "lspci",
            Tool::Smartctl => "smartctl",
            Tool::Nvme => "nvme",
            Tool::Sensors => "sensors",
            Tool::NvidiaSmi => "nvidia-smi",
            Tool::Ipmitool => "ipmitool",
            Tool::StressNg => "stress-ng",
            Tool::Fio => "fio",
            Tool::Badblocks => "badblocks",
            Tool::Memtester => "memtester",
            Tool::Iperf3 => "iperf3",
            Tool::Dcgmi => "dcgmi",
            Tool::GpuBurn => "gpu-burn",
            Tool::Wipefs => "wipefs",
            Tool::Blkid => "blkid",
            Tool::Lsblk => "lsblk",
            Tool::Edac => "edac",
            Tool::CpuThrottle => "cpu-throttle",
            Tool::ThermalSidecar => "thermal-sidecar",
            Tool::NetCounters => "net-counters",
            Tool::SmartGrowth => "smart-growth",
        }
    }

    /// Looks a tool up by its name.
    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|tool| tool.name() == name)
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed and judged tool output: what `vetting-agent parse` prints and
/// what the orchestrator recomputes from an uploaded artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolReport {
    pub tool: Tool,
    pub data: serde_json::Value,
    pub verdict: Verdict,
}

impl ToolReport {
    /// Builds a report from typed data.
    pub fn new<T: Serialize>(tool: Tool, data: &T, verdict: Verdict) -> Result<Self, ParseError> {
        let data = serde_json::to_value(data).map_err(|source| ParseError::Json {
            tool: tool.name(),
            source,
        })?;
        Ok(ToolReport {
            tool,
            data,
            verdict,
        })
    }
}

/// Parses `input` as the output of `tool` and judges it.
pub fn parse_and_judge(
    tool: Tool,
    input: &[u8],
    thresholds: &Thresholds,
) -> Result<ToolReport, ParseError> {
    match tool {
        Tool::Lshw => lshw::report(input, thresholds),
        Tool::Dmidecode => dmidecode::report(input, thresholds),
        Tool::Lspci => lspci::report(input, thresholds),
        Tool::Smartctl => smartctl::report(input, thresholds),
        Tool::Nvme => nvme::report(input, thresholds),
        Tool::Sensors => sensors::report(input, thresholds),
        Tool::NvidiaSmi => nvidia_smi::report(input, thresholds),
        Tool::Ipmitool => ipmitool::report(input, thresholds),
        Tool::StressNg => stress_ng::report(input, thresholds),
        Tool::Fio => fio::report(input, thresholds),
        Tool::Badblocks => badblocks::report(input, thresholds),
        Tool::Memtester => memtester::report(input, thresholds),
        Tool::Iperf3 => iperf3::report(input, thresholds),
        Tool::Dcgmi => dcgmi::report(input, thresholds),
        Tool::GpuBurn => gpu_burn::report(input, thresholds),
        Tool::Wipefs => wipefs::report(input, thresholds),
        Tool::Blkid => blkid::report(input, thresholds),
        Tool::Lsblk => lsblk::report(input, thresholds),
        Tool::Edac => verdicts::cpu::edac_report(input, thresholds),
        Tool::CpuThrottle => verdicts::cpu::throttle_report(input, thresholds),
        Tool::ThermalSidecar => verdicts::cpu::sidecar_report(input, thresholds),
        Tool::NetCounters => verdicts::network::counters_report(input, thresholds),
        Tool::SmartGrowth => verdicts::storage::growth_report(input, thresholds),
    }
}
