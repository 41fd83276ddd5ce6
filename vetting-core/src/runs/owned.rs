//! The orchestrator-owned states: SpecValidate (resolved inside the result
//! that led there) and Reporting (by the report worker), and again after a
//! restart.

use crate::error::{OrchestratorError, Result, internal};
use crate::machine::{Event, RunState};
use crate::runs::EventContext;

use super::Runs;

impl Runs {
    /// Runs `SpecValidate` and `Reporting` when a run is in them (after
    /// the result that led there, and again after a restart).
    pub async fn resolve_owned_states(&self, run_id: &str) -> Result<()> {
        self.resolve_spec_validate(run_id).await?;
        self.resolve_reporting(run_id).await
    }

    /// Runs `SpecValidate` when the run is in it.
    pub(crate) async fn resolve_spec_validate(&self, run_id: &str) -> Result<()> {
        let run = self.core.run(run_id).await?;
        if run.state == RunState::SpecValidate {
            let outcome = self.validate_spec(run_id).await.map_err(internal)?;
            let event = if outcome.critical {
                Event::SpecFailed
            } else {
                Event::SpecPassed
            };
            match self
                .core
                .runs()
                .apply(
                    run_id,
                    event,
                    EventContext {
                        expected_state: Some(RunState::SpecValidate),
                        reason: Some(outcome.summary.clone()),
                        outcome: Some(if outcome.critical { "failed" } else { "passed" }.into()),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) | Err(OrchestratorError::InvalidTransition { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Writes the reports when the run is in `Reporting` (and completes
    /// it), or has ended.
    pub(crate) async fn resolve_reporting(&self, run_id: &str) -> Result<()> {
        let run = self.core.run(run_id).await?;
        if run.state == RunState::Reporting {
            crate::reports::write_reports(&self.core, run_id)
                .await
                .map_err(internal)?;
            match self
                .core
                .runs()
                .apply(
                    run_id,
                    Event::ReportWritten,
                    EventContext {
                        expected_state: Some(RunState::Reporting),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) | Err(OrchestratorError::InvalidTransition { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        let state = self.core.run(run_id).await?.state;
        if state.is_terminal() || state == RunState::FailedHolding {
            // the report with the final state, and the reports of failed,
            // held and cancelled runs
            if let Err(error) = crate::reports::write_reports(&self.core, run_id).await {
                tracing::warn!(run = %run_id, "cannot write the report: {error}");
            }
        }
        Ok(())
    }
}
