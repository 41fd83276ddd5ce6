//! Wire types of the agent ↔ orchestrator protocol, version 1. This is the
//! one definition both sides use: the agent ships inside boot images, so a
//! change here is a change of the protocol (bump [`PROTOCOL_VERSION`]).
//!
//! Routes: [`Endpoint`] lists every one (method, path under [`API_PREFIX`],
//! request and response types); the agent's client builds its URLs from
//! it and `vetting-http` mounts exactly it. Kernel command line parameters
//! for the agent: [`CMDLINE_URL`], [`CMDLINE_RUN`], [`CMDLINE_TOKEN`].
//!
//! Additions read with serde defaults, so either side may be older:
//! - wipe-probe findings: a held Storage result lists what the probe found
//!   ([`StageResult::wipe_findings`], each with a stable [`WipeFinding::id`]);
//!   an operator's override names the ids acknowledged, and they reach the
//!   agent in [`StorageParams::acknowledged_findings`] (claim) and
//!   [`HeartbeatResponse::acknowledged_findings`] (`retry_stage`). An agent
//!   told `override_wipe` without ids acknowledges nothing: it holds again
//!   on whatever it finds.
//!
//! Removals that stay version 1: [`HeartbeatRequest`] no longer carries
//! `status` (a free-form text nothing read); a heartbeat that still sends
//! it is accepted and the text dropped, so agents built before keep
//! working and [`PROTOCOL_VERSION`] stays 1.

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

/// Where the agent API lives on the orchestrator's `listen` address:
/// every [`Endpoint::route`] is under it.
pub const API_PREFIX: &str = "/api/v1";

/// The path segment of an [`Endpoint::route`] that stands for the run id.
pub const RUN_ID_SEGMENT: &str = "{run_id}";

/// The HTTP method of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
        }
    }
}

/// Every route of the agent API, the one place its paths are written: the
/// agent's client builds its URLs with [`Endpoint::path_segments`] and
/// `vetting-http` mounts [`Endpoint::route`] for each endpoint it serves
/// (a test checks that it mounts exactly these). Bodies are JSON unless
/// said otherwise; every error answer is an [`ErrorBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST hello`: the agent booted. [`HelloRequest`] → [`RunPosition`].
    Hello,
    /// `POST claim`: the stage plan. [`ClaimRequest`] → [`ClaimResponse`].
    Claim,
    /// `POST heartbeat`: liveness and the control channel.
    /// [`HeartbeatRequest`] → [`HeartbeatResponse`]. Also answered for a
    /// short grace after the run ended, so the agent hears `shutdown`.
    Heartbeat,
    /// `POST log`: [`LogBatch`] → [`BatchAck`].
    Log,
    /// `POST sensor`: [`SensorBatch`] → [`BatchAck`].
    Sensor,
    /// `POST result`: the stage is done. [`StageResult`] →
    /// [`ResultResponse`].
    Result,
    /// `POST artifact?`[`ArtifactQuery`]: a raw tool output as the body
    /// (`application/octet-stream`) → [`StoredArtifact`].
    Artifact,
    /// `POST hold`: a held agent (`abort`, run in `FailedHolding`) asks for
    /// the SSH key the operator logs in with. [`HoldRequest`] →
    /// [`HoldResponse`]. Defined for the hold work (issue 13): the
    /// orchestrator does not serve it yet (404), see [`Endpoint::is_served`].
    Hold,
}

impl Endpoint {
    /// Every endpoint, served or not.
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Hello,
        Endpoint::Claim,
        Endpoint::Heartbeat,
        Endpoint::Log,
        Endpoint::Sensor,
        Endpoint::Result,
        Endpoint::Artifact,
        Endpoint::Hold,
    ];

    /// The endpoint's name: the last segment of its path.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Hello => "hello",
            Endpoint::Claim => "claim",
            Endpoint::Heartbeat => "heartbeat",
            Endpoint::Log => "log",
            Endpoint::Sensor => "sensor",
            Endpoint::Result => "result",
            Endpoint::Artifact => "artifact",
            Endpoint::Hold => "hold",
        }
    }

    pub fn method(self) -> Method {
        Method::Post
    }

    /// The path under [`API_PREFIX`], with [`RUN_ID_SEGMENT`] for the run
    /// (axum's path syntax).
    pub fn route(self) -> &'static str {
        match self {
            Endpoint::Hello => "/runs/{run_id}/hello",
            Endpoint::Claim => "/runs/{run_id}/claim",
            Endpoint::Heartbeat => "/runs/{run_id}/heartbeat",
            Endpoint::Log => "/runs/{run_id}/log",
            Endpoint::Sensor => "/runs/{run_id}/sensor",
            Endpoint::Result => "/runs/{run_id}/result",
            Endpoint::Artifact => "/runs/{run_id}/artifact",
            Endpoint::Hold => "/runs/{run_id}/hold",
        }
    }

    /// Whether a request needs the run's bearer token
    /// (`Authorization: Bearer`, see the token format in core's `tokens`).
    /// Every agent endpoint does; only `/ipxe/{mac}` and the boot files,
    /// which are not agent endpoints, go without.
    pub fn needs_run_token(self) -> bool {
        true
    }

    /// Whether this orchestrator build answers the endpoint. `Hold` is
    /// defined ahead of the hold work and answered 404 until then.
    pub fn is_served(self) -> bool {
        !matches!(self, Endpoint::Hold)
    }

    /// The decoded path segments of the endpoint for `run_id`, from the
    /// root (`api`, `v1`, `runs`, the run id as one segment, the name).
    pub fn path_segments(self, run_id: &str) -> impl Iterator<Item = &str> {
        API_PREFIX
            .split('/')
            .chain(self.route().split('/'))
            .filter(|segment| !segment.is_empty())
            .map(move |segment| {
                if segment == RUN_ID_SEGMENT {
                    run_id
                } else {
                    segment
                }
            })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The testing stages the agent runs, in this order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[serde(from = "HeartbeatWire")]
pub struct HeartbeatRequest {
    /// The stage the agent is running, if any.
    pub current: Option<StageRef>,
}

/// What a heartbeat body may hold: [`HeartbeatRequest`] plus the `status`
/// text that agents before its removal still send (accepted, dropped).
/// Any other field is refused.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct HeartbeatWire {
    current: Option<StageRef>,
    #[serde(rename = "status")]
    _status: Option<serde::de::IgnoredAny>,
}

impl From<HeartbeatWire> for HeartbeatRequest {
    fn from(wire: HeartbeatWire) -> Self {
        HeartbeatRequest {
            current: wire.current,
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// The query of `POST artifact` ([`Endpoint::Artifact`]): what the body
/// is. The orchestrator takes an artifact only for the run's current
/// stage attempt, so `stage` and `attempt` are required there; they are
/// optional here only so that their absence is answered with a message
/// saying so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ArtifactQuery {
    /// A file name: letters, digits, `.`, `_`, `-` (1-128, not starting
    /// with `.`).
    pub name: String,
    /// The tool whose output it is (a [`crate::Tool`] name): the
    /// orchestrator re-judges it with that tool's verdict rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What the output is about (a disk, a GPU). Informational: what the
    /// orchestrator keeps is the [`ArtifactRef::subject`] of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl ArtifactQuery {
    /// The upload of `name` for the stage attempt `stage`.
    pub fn for_stage(
        name: impl Into<String>,
        tool: Option<String>,
        stage: StageRef,
        subject: Option<String>,
    ) -> Self {
        ArtifactQuery {
            name: name.into(),
            tool,
            stage: Some(stage.stage),
            attempt: Some(stage.attempt),
            subject,
        }
    }

    /// The stage attempt it names, when it names both.
    pub fn stage_ref(&self) -> Option<StageRef> {
        Some(StageRef {
            stage: self.stage?,
            attempt: self.attempt?,
        })
    }
}

/// The answer to `POST artifact`: what was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifact {
    pub name: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the body as stored.
    pub sha256: String,
}

/// `POST hold` ([`Endpoint::Hold`], not served yet): a held agent asks
/// for the key to authorize. No fields yet; later ones come with serde
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {}

/// The answer to `POST hold` (while `FailedHolding`): the SSH key the
/// agent authorizes so the operator can log in, as an `authorized_keys`
/// line.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths_are_the_prefix_and_route_with_the_run_id_as_one_segment() {
        for endpoint in Endpoint::ALL {
            let segments: Vec<&str> = endpoint.path_segments("r/1").collect();
            assert_eq!(
                segments,
                ["api", "v1", "runs", "r/1", endpoint.as_str()],
                "{endpoint}"
            );
            assert_eq!(
                format!("{API_PREFIX}{}", endpoint.route()),
                format!("/api/v1/runs/{{run_id}}/{endpoint}")
            );
        }
        let served: Vec<Endpoint> = Endpoint::ALL
            .into_iter()
            .filter(|endpoint| endpoint.is_served())
            .collect();
        assert!(!served.contains(&Endpoint::Hold));
        assert_eq!(served.len(), Endpoint::ALL.len() - 1);
    }

    #[test]
    fn a_heartbeat_with_the_removed_status_is_read_and_other_fields_are_refused() {
        let current = Some(StageRef {
            stage: Stage::Storage,
            attempt: 2,
        });
        let old: HeartbeatRequest = serde_json::from_str(
            r#"{"current":{"stage":"Storage","attempt":2},"status":"running Storage"}"#,
        )
        .unwrap();
        assert_eq!(old, HeartbeatRequest { current });
        let empty: HeartbeatRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, HeartbeatRequest::default());
        let error = serde_json::from_str::<HeartbeatRequest>(r#"{"curent":null}"#).unwrap_err();
        assert!(error.to_string().contains("curent"), "{error}");
        // what this build sends has no status
        let sent = serde_json::to_value(HeartbeatRequest { current }).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"current": {"stage": "Storage", "attempt": 2}})
        );
    }
}
