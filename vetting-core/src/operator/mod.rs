//! The operator service: what the web UI, the CLI and the operator API
//! call, and nothing below it. Hosts and their MACs (`hosts`), spec
//! profiles (`profiles`), run actions (start one or many, cancel,
//! override, release) and the reads behind them (`runs`). Every action
//! names its actor and leaves an audit record.

use crate::orchestrator::Orchestrator;

pub(crate) mod access;
mod dispatch;
mod hosts;
mod pages;
mod profiles;
mod runs;
mod types;
mod views;

pub use types::{
    ApiToken, CreatedToken, DispatchStatus, HostEdit, Page, PageRequest, Principal, Role, RowError,
    RunFilter, RunMetrics,
};
pub use views::RunLogs;

/// The operator service of an orchestrator (`Orchestrator::operator`).
#[derive(Debug, Clone)]
pub struct Operator {
    pub(crate) core: Orchestrator,
}

impl Orchestrator {
    /// The operator service: hosts, profiles, run actions, audit.
    pub fn operator(&self) -> Operator {
        Operator { core: self.clone() }
    }
}
