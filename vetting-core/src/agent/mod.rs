//! The agent service: what each agent endpoint does, without HTTP.
//! Authentication (`auth`: one function told which endpoint it serves),
//! the session (hello, claim, heartbeat answers: `session`), the writer
//! that groups agent writes (`writer`), artifacts (`artifacts`) and
//! stage results (`results`) with their evidence (`evidence`), which
//! the orchestrator re-judges with the verdict rules of `vetting-probes`.

mod artifacts;
mod auth;
pub mod evidence;
mod results;
mod session;
mod writer;

pub use artifacts::{ArtifactFile, valid_artifact_name};
pub use auth::AuthenticatedRun;
pub(crate) use results::write_stage_data;
pub use results::{
    InventoryRows, MAX_MEASUREMENTS, MAX_VERDICT_REASONS, MAX_WIPE_FINDINGS, StageData,
};
pub use session::{check_protocol_version, command_for, plain_address, position_of};
pub use writer::{AGENT_WRITE_QUEUE, AgentWriteFailure, AgentWriter};

use crate::orchestrator::Orchestrator;

/// The agent service of an orchestrator (`Orchestrator::agent`).
#[derive(Debug, Clone)]
pub struct Agent {
    pub(crate) core: Orchestrator,
}

impl Orchestrator {
    /// The agent service: authentication, session, writer, artifacts,
    /// results.
    pub fn agent(&self) -> Agent {
        Agent { core: self.clone() }
    }
}
