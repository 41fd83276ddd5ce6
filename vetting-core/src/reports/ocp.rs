//! The OCP Test & Validation export of a run: the stream of JSON output
//! artifacts (one object per line) that the OCP TV schema
//! (`../shared/ocp-tv-schema`) describes, built from the same `Report`
//! the JSON and HTML reports are.

use crate::error::Result;
use crate::orchestrator::Orchestrator;

/// The run's OCP TV artifacts, one JSON object per line.
pub async fn ocp_report(orchestrator: &Orchestrator, run_id: &str) -> Result<String> {
    let _ = (orchestrator, run_id);
    todo!("issue 11: OCP export")
}
