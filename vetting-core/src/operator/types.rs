//! The operator service's own types: roles and API tokens, pages and
//! filters, host edits and imports, the dispatcher's status, metrics.
//! Frontends (CLI, operator API, web UI) speak these; the operator API
//! serialises them as its documented JSON shapes.

use serde::{Deserialize, Serialize};

use crate::machine::RunState;
use crate::model::Actor;

/// What a user or API token may do. Ordered: each role may do everything
/// the roles before it may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Starts, cancels, overrides, releases, retries stages.
    Operator,
    /// Everything: hosts, profiles, tokens, dispatch, hold keys.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling, once authenticated: a named API token (or user) and
/// its role. `actor()` is what the audit records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Principal {
    /// `token:NAME`, `user:NAME`, or `local:USER` for the CLI on the
    /// local database.
    pub name: String,
    pub role: Role,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor(self.name.clone())
    }
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub created_at_ms: i64,
    pub created_by: String,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// A token just created: its secret is shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: ApiToken,
    /// `vtk1.NAME.SECRET`; stored only as a hash.
    pub secret: String,
}

/// One page of a list: at most `limit` items, and the cursor of the next
/// page (`None` on the last one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Which page to read: `before` is the `next` cursor of the previous page
/// (opaque to callers), `limit` between 1 and [`PageRequest::MAX_LIMIT`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PageRequest {
    pub limit: Option<u32>,
    pub before: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 1000;
}

/// Which runs to list (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunFilter {
    pub state: Option<RunState>,
    pub host_id: Option<i64>,
}

/// A change to a registered host; `None` leaves a field as it is, an
/// empty string clears it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostEdit {
    #[serde(default)]
    pub rename: Option<String>,
    #[serde(default)]
    pub add_macs: Vec<String>,
    #[serde(default)]
    pub remove_macs: Vec<String>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub spec_profile: Option<String>,
    /// Power settings as stored JSON; `Some(Value::Null)` clears them.
    #[serde(default)]
    pub power: Option<serde_json::Value>,
}

/// One refused row of an import: its line number (1 is the header) and
/// what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RowError {
    pub line: usize,
    pub message: String,
}

/// Whether the dispatcher starts new runs, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DispatchStatus {
    pub paused: bool,
    pub paused_by: Option<String>,
    pub paused_at_ms: Option<i64>,
    pub slots_total: u32,
    pub slots_in_use: u32,
    /// Runs waiting in `Queued`.
    pub queued: u64,
}

/// What `/metrics` exports from the database.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Runs per state (every state, zero included).
    pub runs_by_state: Vec<(RunState, u64)>,
    pub queued: u64,
    pub slots_total: u32,
    pub slots_in_use: u32,
    /// Failed stage attempts per stage name, all time.
    pub stage_failures: Vec<(String, u64)>,
}
