//! Verdict thresholds, with the design's defaults. The orchestrator loads
//! its own copy from config and hands the agent the same values in the claim
//! response; both judge with the same rules.

use serde::{Deserialize, Serialize};

/// Every threshold the verdict rules use, grouped by tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub smart: SmartThresholds,
    pub nvme: NvmeThresholds,
    pub scsi: ScsiThresholds,
    pub gpu: GpuThresholds,
    pub sensors: SensorThresholds,
    pub network: NetworkThresholds,
    pub stress: StressThresholds,
}

/// ATA SMART rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmartThresholds {
    /// Attribute 5 (reallocated sectors) raw value at or above which it warns.
    pub reallocated_warn: u64,
    /// Attribute 5 raw value at or above which it fails.
    pub reallocated_fail: u64,
    /// Attributes 197/198 (pending / offline uncorrectable) raw above which it fails.
    pub pending_fail_above: u64,
    /// Attribute 187 (reported uncorrectable) raw above which it fails.
    pub reported_uncorrectable_fail_above: u64,
    /// Attribute 188 (command timeout) raw at or above which it warns ("only if large").
    pub command_timeout_warn: u64,
    /// Attribute 199 (UDMA CRC errors) raw above which it warns. CRC errors
    /// point at the cable or backplane, not at the medium, and a non-zero
    /// count is often history (EXPECTED.md judges the two fixtures with 199
    /// raw 1 and 12, and ICRC entries in the error log, as pass). So the
    /// default is `None`: the count is reported as an informational `pass`
    /// reason and never changes the status. Set a number to warn above it;
    /// growth during the Storage stage is the stronger signal (SMART deltas).
    pub crc_errors_warn_above: Option<u64>,
}

impl Default for SmartThresholds {
    fn default() -> Self {
        SmartThresholds {
            reallocated_warn: 1,
            reallocated_fail: 100,
            pending_fail_above: 0,
            reported_uncorrectable_fail_above: 0,
            command_timeout_warn: 1000,
            crc_errors_warn_above: None,
        }
    }
}

/// NVMe health-log rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NvmeThresholds {
    /// `percentage_used` at or above which it warns.
    pub percentage_used_warn: u64,
    /// `percentage_used` at or above which it fails.
    pub percentage_used_fail: u64,
    /// `media_errors` above which it fails.
    pub media_errors_fail_above: u64,
}

impl Default for NvmeThresholds {
    fn default() -> Self {
        NvmeThresholds {
            percentage_used_warn: 80,
            percentage_used_fail: 100,
            media_errors_fail_above: 0,
        }
    }
}

/// SCSI / SAS rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScsiThresholds {
    pub grown_defects_warn: u64,
    pub grown_defects_fail: u64,
    pub uncorrected_errors_fail_above: u64,
}

impl Default for ScsiThresholds {
    fn default() -> Self {
        ScsiThresholds {
            grown_defects_warn: 1,
            grown_defects_fail: 100,
            uncorrected_errors_fail_above: 0,
        }
    }
}

/// GPU rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuThresholds {
    /// Temperature (°C) at or above which a GPU under load warns.
    pub temperature_warn_c: f64,
    /// ECC uncorrectable errors above which it fails.
    pub ecc_uncorrectable_fail_above: u64,
    /// Expected PCIe link width; when set, a narrower link fails instead of warning.
    pub expected_pcie_width: Option<u32>,
    /// Whether the output was taken under load (then a lower PCIe generation counts).
    pub under_load: bool,
}

impl Default for GpuThresholds {
    fn default() -> Self {
        GpuThresholds {
            temperature_warn_c: 87.0,
            ecc_uncorrectable_fail_above: 0,
            expected_pcie_width: None,
            under_load: false,
        }
    }
}

/// Sensor rules (hwmon, `sensors -j`, thermal sidecar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorThresholds {
    /// Readings at or above this are implausible and ignored (°C).
    pub implausible_temp_c: f64,
    /// Readings at or below this are implausible and ignored (°C).
    pub implausible_low_temp_c: f64,
    /// Fallback limit for a trusted temperature with no max of its own (°C).
    pub default_max_temp_c: f64,
}

impl Default for SensorThresholds {
    fn default() -> Self {
        SensorThresholds {
            implausible_temp_c: 105.0,
            implausible_low_temp_c: 1.0,
            default_max_temp_c: 95.0,
        }
    }
}

/// Network rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkThresholds {
    /// Share of the lower link speed that throughput must reach (0..1).
    pub min_share_of_link: f64,
}

impl Default for NetworkThresholds {
    fn default() -> Self {
        NetworkThresholds {
            min_share_of_link: 0.7,
        }
    }
}

/// CPU / memory stress rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StressThresholds {
    /// CPU temperature (°C) at or above which the stress stage fails.
    pub max_cpu_temp_c: f64,
}

impl Default for StressThresholds {
    fn default() -> Self {
        StressThresholds {
            max_cpu_temp_c: 95.0,
        }
    }
}
