//! Deadlines: every active state has one (power, boot, per stage,
//! heartbeat silence), fired by the injected clock.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::error::{Result, db};
use crate::machine::{Event, RunState};
use crate::model::{Applied, Run};
use crate::runs::EventContext;
use crate::store::entities::run;

use super::Runs;

impl Runs {
    /// Fires every deadline that has passed at `now` (by the injected
    /// clock). Returns the transitions made.
    pub async fn fire_deadlines(&self) -> Result<Vec<Applied>> {
        let now = self.core.now_ms();
        let due = run::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(run::Column::StateDeadlineMs.lte(now))
                    .add(run::Column::HeartbeatDeadlineMs.lte(now)),
            )
            .all(self.core.conn())
            .await
            .map_err(db("finding due deadlines"))?;
        let mut fired = Vec::new();
        for model in due {
            let run = Run::from_entity(model)?;
            if run.state.is_terminal() || run.state == RunState::FailedHolding {
                continue;
            }
            let state_due = run.state_deadline_ms.is_some_and(|at| at <= now);
            let event = match run.state {
                RunState::WaitingWoL => Event::PowerTimeout,
                RunState::Booting if state_due => Event::BootTimeout,
                RunState::Booting => Event::HeartbeatTimeout,
                RunState::SpecValidate => Event::StageTimeout,
                state if state.stage().is_some() && state_due => Event::StageTimeout,
                state if state.stage().is_some() => Event::HeartbeatTimeout,
                _ => continue,
            };
            let reason = match event {
                Event::PowerTimeout => "the power action did not complete in time".to_string(),
                Event::BootTimeout => {
                    "the host did not boot the live image in time (no hello)".to_string()
                }
                Event::HeartbeatTimeout => "the agent fell silent (no heartbeat)".to_string(),
                _ => format!("{} ran past its deadline", run.state),
            };
            if let Some(applied) = self
                .apply_unless_moved(
                    &run.id,
                    event,
                    EventContext {
                        expected_version: Some(run.version),
                        reason: Some(reason),
                        ..Default::default()
                    },
                )
                .await?
            {
                fired.push(applied);
            }
        }
        Ok(fired)
    }
}
