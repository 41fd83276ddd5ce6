//! Wire types of the agent ↔ orchestrator protocol, version 1. This is the
//! one definition both sides use: the agent ships inside boot images, so a
//! change here is a change of the protocol (bump [`PROTOCOL_VERSION`]).
//!
//! Routes (all under `/api/v1/runs/{run_id}/`, bearer token per run):
//! `hello`, `claim`, `heartbeat`, `log`, `sensor`, `result`, `artifact`,
//! `hold`. Kernel command line parameters for the agent: [`CMDLINE_URL`],
//! [`CMDLINE_RUN`], [`CMDLINE_TOKEN`].
//!
//! Additions read with serde defaults, so either side may be older:
//! - wipe-probe findings: a held Storage result lists what the probe found
//!   ([`StageResult::wipe_findings`], each with a stable [`WipeFinding::id`]);
//!   an operator's override names the ids acknowledged, and they reach the
//!   agent in [`StorageParams::acknowledged_findings`] (claim) and
//!   [`HeartbeatResponse::acknowledged_findings`] (`retry_stage`). An agent
//!   told `override_wipe` without ids acknowledges nothing: it holds again
//!   on whatever it finds.

use serde::{Deserialize, Serialize};

use crate::thresholds::Thresholds;
use crate::verdict::{Reason, Verdict};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Kernel command line parameter: the orchestrator's base URL.
pub const CMDLINE_URL: &str = "vetting.url";
/// Kernel command line parameter: the run id.
pub const CMDLINE_RUN: &str = "vetting.run";
/// Kernel command line parameter: the run token.
pub const CMDLINE_TOKEN: &str = "vetting.token";

/// The testing stages the agent runs, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    InventoryCheck,
    #[serde(rename = "SMART")]
    Smart,
    #[serde(rename = "CPUStress")]
    CpuStress,
    Storage,
    Network,
    #[serde(rename = "GPU")]
    Gpu,
    #[serde(rename = "PSU")]
    Psu,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::InventoryCheck,
        Stage::Smart,
        Stage::CpuStress,
        Stage::Storage,
        Stage::Network,
        Stage::Gpu,
        Stage::Psu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::InventoryCheck => "InventoryCheck",
            Stage::Smart => "SMART",
            Stage::CpuStress => "CPUStress",
            Stage::Storage => "Storage",
            Stage::Network => "Network",
            Stage::Gpu => "GPU",
            Stage::Psu => "PSU",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|stage| stage.as_str() == name)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt of one stage (Storage runs again as attempt 2 after an
/// override).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StageRef {
    pub stage: Stage,
    pub attempt: u32,
}

/// `POST hello`: the agent booted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloRequest {
    pub protocol_version: u32,
    pub agent_version: String,
    /// The addresses of the booted host, for the operator.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The kernel's boot id, so a reboot of the host is recognised.
    #[serde(default)]
    pub boot_id: Option<String>,
}

/// The run's current position, returned by most endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPosition {
    /// The run state's name (`Booting`, `Storage`, `FailedHolding`, ...).
    pub state: String,
    /// The stage the agent should be running, if any.
    pub current: Option<StageRef>,
}

/// `POST claim`: the agent asks for its stage plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub protocol_version: u32,
    pub agent_version: String,
}

/// The stage plan and every parameter the agent needs: durations and
/// thresholds come from the orchestrator's config, so tests run short
/// stages and operators long ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimResponse {
    pub run_id: String,
    pub position: RunPosition,
    pub stages: Vec<Stage>,
    pub params: StageParams,
    pub thresholds: Thresholds,
    /// Seconds between heartbeats while testing.
    pub heartbeat_interval_secs: u64,
    /// Seconds between heartbeats while held (`abort`).
    pub slow_heartbeat_interval_secs: u64,
    /// The next log and sensor sequence numbers the orchestrator expects
    /// (after a restart of the agent, it resumes from these).
    pub next_log_seq: u64,
    pub next_sensor_seq: u64,
}

/// Per-stage parameters handed to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct StageParams {
    pub smart: SmartParams,
    pub cpu_stress: CpuStressParams,
    pub storage: StorageParams,
    pub network: NetworkParams,
    pub gpu: GpuParams,
    /// What the expected spec says is there, so a stage whose tool is
    /// missing fails instead of skipping when the part should exist.
    pub expected: ExpectedParts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmartParams {
    /// Run `smartctl -t short` and wait for it (bounded by `self_test_timeout_secs`).
    pub run_short_self_test: bool,
    pub self_test_timeout_secs: u64,
}

impl Default for SmartParams {
    fn default() -> Self {
        SmartParams {
            run_short_self_test: true,
            self_test_timeout_secs: 600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuStressParams {
    pub duration_secs: u64,
    /// Share of available memory the memory stressor uses (0..1).
    pub memory_share: f64,
}

impl Default for CpuStressParams {
    fn default() -> Self {
        CpuStressParams {
            duration_secs: 600,
            memory_share: 0.7,
        }
    }
}

/// A disk the spec expects: the device allowlist is derived from these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ExpectedDisk {
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub model: Option<String>,
    pub size_bytes: Option<u64>,
    /// How many disks of this model and size (when matched by model/size).
    pub count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageParams {
    /// The device allowlist. Empty: nothing destructive runs.
    pub expected_disks: Vec<ExpectedDisk>,
    /// Time budget per disk for the surface test.
    pub max_secs_per_disk: u64,
    /// Share of an SSD/NVMe's capacity that fio verifies (0..1).
    pub ssd_verify_share: f64,
    /// How many blocks the wipe probe samples across each disk.
    pub wipe_probe_samples: u32,
    /// Set by the operator's override: this attempt follows a wipe-probe
    /// hold. What may be written is [`Self::acknowledged_findings`].
    pub override_wipe: bool,
    /// The [`WipeFinding::id`]s the operator acknowledged: a disk with a
    /// finding not in this list is not written (the stage holds again).
    pub acknowledged_findings: Vec<String>,
}

impl Default for StorageParams {
    fn default() -> Self {
        StorageParams {
            expected_disks: Vec::new(),
            max_secs_per_disk: 4 * 3600,
            ssd_verify_share: 0.05,
            wipe_probe_samples: 256,
            override_wipe: false,
            acknowledged_findings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkParams {
    /// The orchestrator's iperf3 server for this run (host, port). None:
    /// the orchestrator has no iperf3; the stage is skipped with that reason.
    pub iperf_host: Option<String>,
    pub iperf_port: Option<u16>,
    pub duration_secs: u64,
}

impl Default for NetworkParams {
    fn default() -> Self {
        NetworkParams {
            iperf_host: None,
            iperf_port: None,
            duration_secs: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuParams {
    pub burn_secs: u64,
}

impl Default for GpuParams {
    fn default() -> Self {
        GpuParams { burn_secs: 300 }
    }
}

/// Counts from the expected spec, for "skipped unless the part is expected".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ExpectedParts {
    pub gpus: u32,
    pub psus: u32,
    pub nics: u32,
    pub disks: u32,
}

/// `POST heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The stage the agent is running, if any.
    pub current: Option<StageRef>,
    /// A short free-form status for the operator ("badblocks 42%").
    pub status: Option<String>,
}

/// The control channel of the heartbeat response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Keep running the current stage.
    Continue,
    /// Kill any tool still running and power off.
    Shutdown,
    /// Stop testing, kill the running tool's process group, keep the host
    /// up for the operator and heartbeat slowly.
    Abort,
    /// Run the given stage again, with `override_flags` armed.
    RetryStage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub cmd: Command,
    pub position: RunPosition,
    /// For `retry_stage`: e.g. `["override_wipe"]`.
    #[serde(default)]
    pub override_flags: Vec<String>,
    /// For `retry_stage` after an override: the [`WipeFinding::id`]s the
    /// operator acknowledged.
    #[serde(default)]
    pub acknowledged_findings: Vec<String>,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Agent,
    Stdout,
    Stderr,
}

/// One log line. `seq` counts every line the agent emitted in this run,
/// from 0, without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub seq: u64,
    pub at_ms: i64,
    pub stage: Option<StageRef>,
    pub stream: LogStream,
    pub text: String,
}

/// `POST log`: lines in sequence order. A retry resends the same lines;
/// the orchestrator keeps each `seq` once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    pub lines: Vec<LogLine>,
}

/// One sensor reading (thermal sidecar, throughput, power).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSample {
    pub seq: u64,
    pub at_ms: i64,
    pub stage: Option<StageRef>,
    /// e.g. `coretemp/Package id 0`.
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// `POST sensor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorBatch {
    pub samples: Vec<SensorSample>,
}

/// The answer to a log or sensor batch: everything up to and including
/// `acked_through` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    /// The next sequence number the orchestrator expects.
    pub next_seq: u64,
    /// How many of the batch's items were new.
    pub stored: u64,
}

/// How a stage ended, as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Warned,
    Failed,
    Skipped,
    Held,
}

/// A raw tool output the stage uploaded, named in its result so the
/// orchestrator can re-judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    /// The artifact's name as uploaded (e.g. `smartctl-sda.json`).
    pub name: String,
    /// The tool whose output it is (a [`crate::Tool`] name), if it is one.
    pub tool: Option<String>,
    /// What the output is about (a disk, a GPU).
    #[serde(default)]
    pub subject: Option<String>,
}

/// `POST result`: the stage is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageResult {
    pub stage: Stage,
    pub attempt: u32,
    pub outcome: Outcome,
    /// The agent's own verdict (the orchestrator re-judges the artifacts).
    pub verdict: Verdict,
    /// For `held`: `wipe_signatures` or `unexpected_data`.
    #[serde(default)]
    pub hold_reason: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<ArtifactRef>,
    /// InventoryCheck carries the inventory.
    #[serde(default)]
    pub inventory: Option<serde_json::Value>,
    /// Measurements of the stage as name → value (e.g. `iperf3.rx_bps`).
    #[serde(default)]
    pub measurements: Vec<Measurement>,
    /// Storage: what the wipe probe found (a held result lists every
    /// finding, so that an override can name the ones it acknowledges).
    #[serde(default)]
    pub wipe_findings: Vec<WipeFinding>,
}

/// One thing the wipe probe found on one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WipeFinding {
    /// Stable across attempts and boots where the disk has a serial or
    /// WWN: `wwn:0x5000c500a1b2c3d4/gpt@0x200`,
    /// `serial:S3Z1NB0K/unexpected_data@0x100000` (see [`wipe_finding_id`]).
    pub id: String,
    /// The kernel name at the time (`sdb`).
    pub disk: String,
    /// A signature type (`gpt`, `ext4`, `LVM2_member`) or
    /// [`FINDING_UNEXPECTED_DATA`].
    pub kind: String,
    /// Byte offset on the disk, where known.
    #[serde(default)]
    pub offset: Option<u64>,
    /// What it means, for the operator.
    pub message: String,
}

/// The kind of a finding of data without a known signature.
pub const FINDING_UNEXPECTED_DATA: &str = "unexpected_data";

/// The longest [`WipeFinding::id`] either side accepts.
pub const MAX_FINDING_ID_LEN: usize = 256;

/// The stable id of a finding: the disk's identity (`wwn:…`, else
/// `serial:…`, else `name:…`), the kind and the offset, with anything but
/// printable ASCII replaced by `_` and cut at [`MAX_FINDING_ID_LEN`].
pub fn wipe_finding_id(disk_identity: &str, kind: &str, offset: Option<u64>) -> String {
    let offset = offset.map_or_else(|| "unknown".to_string(), |offset| format!("0x{offset:x}"));
    format!("{disk_identity}/{kind}@{offset}")
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(MAX_FINDING_ID_LEN)
        .collect()
}

/// One summary measurement of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurement {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// The answer to a result: where the run goes next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultResponse {
    pub position: RunPosition,
    /// What the orchestrator decided for the stage (its verdict counts).
    pub verdict: Verdict,
    pub cmd: Command,
}

/// `POST hold` (answered while `FailedHolding`): the SSH key the agent
/// authorizes so the operator can log in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldResponse {
    pub authorized_key: String,
}

/// The JSON body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The run's position, for a 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<RunPosition>,
}

/// A reason built from the protocol's side (re-exported for agents).
pub type VerdictReason = Reason;
