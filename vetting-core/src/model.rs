//! Plain domain types: hosts, runs, stages, audit records. The store's
//! entities map onto these; nothing outside `store` sees a sea-orm model.

use serde::{Deserialize, Serialize};

use crate::machine::{Event, HoldReason, RunState, Stage};
use crate::store::entities;
use vetting_probes::protocol::StageRef;

/// Who did something: an operator (by name), the agent, or the orchestrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor(pub String);

impl Actor {
    pub fn operator(name: &str) -> Actor {
        Actor(format!("operator:{name}"))
    }
    pub fn agent() -> Actor {
        Actor("agent".into())
    }
    pub fn orchestrator() -> Actor {
        Actor("orchestrator".into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A MAC address in canonical form (lower-case, colon-separated).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Mac(String);

impl Mac {
    /// Parses `aa:bb:cc:dd:ee:ff`, `AA-BB-...`, `aabb.ccdd.eeff`,
    /// `aabbccddeeff` and URL-encoded colons (`%3A`).
    pub fn parse(text: &str) -> Result<Mac, String> {
        let decoded = text.trim().replace("%3A", ":").replace("%3a", ":");
        let hex: String = decoded
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        let separators_ok = decoded
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '-' | '.'));
        if hex.len() != 12 || !separators_ok || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`{text}` is not a MAC address"));
        }
        let lower = hex.to_ascii_lowercase();
        let parts: Vec<&str> = (0..6)
            .map(|index| &lower[index * 2..index * 2 + 2])
            .collect();
        Ok(Mac(parts.join(":")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an operator registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHost {
    pub name: String,
    pub macs: Vec<String>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub system_uuid: Option<String>,
    /// The spec profile (one per server model) this host refers to.
    #[serde(default)]
    pub spec_profile: Option<String>,
    /// Per-host overrides of the profile (serials, say).
    #[serde(default)]
    pub spec_overrides: Option<serde_json::Value>,
    /// Power settings (WoL, IPMI, Redfish, manual) as stored JSON.
    #[serde(default)]
    pub power: Option<serde_json::Value>,
}

/// A registered host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Host {
    pub id: i64,
    pub name: String,
    pub macs: Vec<Mac>,
    pub serial: Option<String>,
    pub system_uuid: Option<String>,
    pub spec_profile: Option<String>,
    pub spec_overrides: Option<serde_json::Value>,
    pub power: Option<serde_json::Value>,
    pub created_at_ms: i64,
    /// Removed hosts keep their history; their MACs are free again.
    pub removed_at_ms: Option<i64>,
}

impl Host {
    pub(crate) fn from_entity(model: entities::host::Model, macs: Vec<Mac>) -> Host {
        Host {
            id: model.id,
            name: model.name,
            macs,
            serial: model.serial,
            system_uuid: model.system_uuid,
            spec_profile: model.spec_profile,
            spec_overrides: model
                .spec_overrides
                .and_then(|text| serde_json::from_str(&text).ok()),
            power: model
                .power
                .and_then(|text| serde_json::from_str(&text).ok()),
            created_at_ms: model.created_at_ms,
            removed_at_ms: model.removed_at_ms,
        }
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub id: String,
    pub host_id: i64,
    pub state: RunState,
    pub version: i64,
    pub hold_reason: Option<HoldReason>,
    pub failure_reason: Option<String>,
    pub current: Option<StageRef>,
    pub state_deadline_ms: Option<i64>,
    pub heartbeat_deadline_ms: Option<i64>,
    pub last_heartbeat_ms: Option<i64>,
    pub claimed_at_ms: Option<i64>,
    pub hello_at_ms: Option<i64>,
    pub hold_on_failure: bool,
    pub override_flags: Vec<String>,
    /// The wipe-probe finding ids the operator's override acknowledged
    /// (with `override_flags`).
    pub acknowledged_findings: Vec<String>,
    pub queued_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub next_log_seq: i64,
    pub next_sensor_seq: i64,
    pub created_by: String,
}

/// A stored value that does not parse: the database was edited by hand or
/// by a newer binary.
#[derive(Debug, thiserror::Error)]
#[error("run {run_id}: stored {field} `{value}` is not valid")]
pub struct CorruptRow {
    pub run_id: String,
    pub field: &'static str,
    pub value: String,
}

impl Run {
    pub(crate) fn from_entity(model: entities::run::Model) -> Result<Run, CorruptRow> {
        let corrupt = |field: &'static str, value: &str| CorruptRow {
            run_id: model.id.clone(),
            field,
            value: value.to_string(),
        };
        let state = RunState::parse(&model.state).ok_or_else(|| corrupt("state", &model.state))?;
        let hold_reason = match &model.hold_reason {
            Some(text) => {
                Some(HoldReason::parse(text).ok_or_else(|| corrupt("hold_reason", text))?)
            }
            None => None,
        };
        let current = match (&model.current_stage, model.current_attempt) {
            (Some(stage), Some(attempt)) => Some(StageRef {
                stage: Stage::parse(stage).ok_or_else(|| corrupt("current_stage", stage))?,
                attempt: u32::try_from(attempt)
                    .map_err(|_| corrupt("current_attempt", &attempt.to_string()))?,
            }),
            _ => None,
        };
        let override_flags = model
            .override_flags
            .as_deref()
            .map(|text| {
                text.split(',')
                    .filter(|flag| !flag.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let acknowledged_findings = match model.acknowledged_findings.as_deref() {
            Some(text) => serde_json::from_str::<Vec<String>>(text)
                .map_err(|_| corrupt("acknowledged_findings", text))?,
            None => Vec::new(),
        };
        Ok(Run {
            id: model.id,
            host_id: model.host_id,
            state,
            version: model.version,
            hold_reason,
            failure_reason: model.failure_reason,
            current,
            state_deadline_ms: model.state_deadline_ms,
            heartbeat_deadline_ms: model.heartbeat_deadline_ms,
            last_heartbeat_ms: model.last_heartbeat_ms,
            claimed_at_ms: model.claimed_at_ms,
            hello_at_ms: model.hello_at_ms,
            hold_on_failure: model.hold_on_failure,
            override_flags,
            acknowledged_findings,
            queued_at_ms: model.queued_at_ms,
            created_at_ms: model.created_at_ms,
            updated_at_ms: model.updated_at_ms,
            ended_at_ms: model.ended_at_ms,
            next_log_seq: model.next_log_seq,
            next_sensor_seq: model.next_sensor_seq,
            created_by: model.created_by,
        })
    }
}

/// One recorded transition (the persisted log the concurrency tests replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitionRecord {
    pub id: i64,
    pub run_id: String,
    pub from: String,
    pub to: String,
    pub event: String,
    pub actor: String,
    pub at_ms: i64,
    pub detail: Option<String>,
}

/// An operator action as recorded: who, when, what, what was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub run_id: Option<String>,
    pub host_id: Option<i64>,
    pub acknowledged: Option<String>,
    pub detail: Option<String>,
}

/// What a stage row says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StageRecord {
    pub run_id: String,
    pub stage: String,
    pub attempt: u32,
    pub outcome: String,
    pub reason: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// What one applied event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub from: RunState,
    /// The state the event's row led to (`Failed` when the automatic hold
    /// then moved the run on).
    pub to: RunState,
    /// The state the run is in now.
    pub state: RunState,
    pub event: Event,
    /// The effects carried out (or, for `ValidateSpec`, left to the
    /// caller).
    pub effects: Vec<crate::machine::Effect>,
}
