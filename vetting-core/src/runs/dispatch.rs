//! Dispatch: queued runs take a dispatcher slot, first in first out. The
//! cap lives in the database (`dispatcher_slots`), so it holds across
//! orchestrator processes sharing one PostgreSQL.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder,
};

use crate::error::{OrchestratorError, Result, db};
use crate::machine::{Event, RunState};
use crate::model::{Actor, Run};
use crate::runs::EventContext;
use crate::store::entities::{run, slot};

use super::Runs;

impl Runs {
    /// Takes a free slot for `run_id` inside `txn`, or fails with
    /// `NoSlotFree`. Safe across processes: the slot row is claimed with
    /// `UPDATE ... WHERE run_id IS NULL`, retried on a lost race.
    pub(crate) async fn take_slot(&self, txn: &DatabaseTransaction, run_id: &str) -> Result<()> {
        let max = self.core.inner.config.dispatcher.max_in_flight;
        for _ in 0..(max as usize * 4 + 4) {
            let free = slot::Entity::find()
                .filter(slot::Column::RunId.is_null())
                .filter(slot::Column::SlotNo.lt(max as i32))
                .order_by_asc(slot::Column::SlotNo)
                .one(txn)
                .await
                .map_err(db("finding a free slot"))?;
            let Some(free) = free else {
                return Err(OrchestratorError::NoSlotFree { max });
            };
            let taken = slot::Entity::update_many()
                .col_expr(slot::Column::RunId, Expr::value(run_id))
                .filter(slot::Column::SlotNo.eq(free.slot_no))
                .filter(slot::Column::RunId.is_null())
                .exec(txn)
                .await
                .map_err(db("taking a slot"))?;
            if taken.rows_affected == 1 {
                return Ok(());
            }
        }
        Err(OrchestratorError::NoSlotFree { max })
    }

    /// Makes the slot rows match `max_in_flight` and frees any slot whose
    /// run no longer holds one (repair after a hand edit).
    pub(crate) async fn size_slots(&self) -> Result<()> {
        let max = self.core.inner.config.dispatcher.max_in_flight as i32;
        let existing = slot::Entity::find()
            .all(self.core.conn())
            .await
            .map_err(db("reading slots"))?;
        for slot_no in 0..max {
            if !existing.iter().any(|row| row.slot_no == slot_no) {
                let inserted = slot::ActiveModel {
                    slot_no: Set(slot_no),
                    run_id: Set(None),
                }
                .insert(self.core.conn())
                .await;
                if let Err(error) = inserted {
                    // another process inserted it first
                    tracing::debug!(slot_no, error = %error, "slot row already there");
                }
            }
        }
        slot::Entity::delete_many()
            .filter(slot::Column::SlotNo.gte(max))
            .filter(slot::Column::RunId.is_null())
            .exec(self.core.conn())
            .await
            .map_err(db("trimming slots"))?;
        for row in existing {
            if let Some(run_id) = row.run_id {
                let holds = match self.core.run(&run_id).await {
                    Ok(run) => run.state.holds_slot(),
                    Err(_) => false,
                };
                if !holds {
                    slot::Entity::update_many()
                        .col_expr(slot::Column::RunId, Expr::value(Option::<String>::None))
                        .filter(slot::Column::SlotNo.eq(row.slot_no))
                        .filter(slot::Column::RunId.eq(run_id.as_str()))
                        .exec(self.core.conn())
                        .await
                        .map_err(db("repairing a slot"))?;
                }
            }
        }
        Ok(())
    }

    /// Dispatches queued runs, first in first out, while slots are free
    /// and the dispatcher is not paused (`Operator::pause_dispatch`; the
    /// flag is read again inside each dispatch's transaction). Returns the
    /// runs dispatched. Idempotent; safe in several processes.
    pub async fn dispatch(&self) -> Result<Vec<String>> {
        let mut dispatched = Vec::new();
        loop {
            if self.dispatch_paused().await? {
                return Ok(dispatched);
            }
            let queued = run::Entity::find()
                .filter(run::Column::State.eq(RunState::Queued.as_str()))
                .order_by_asc(run::Column::QueuedAtMs)
                .order_by_asc(run::Column::CreatedAtMs)
                .order_by_asc(run::Column::Id)
                .one(self.core.conn())
                .await
                .map_err(db("finding queued runs"))?;
            let Some(next) = queued else {
                return Ok(dispatched);
            };
            match self
                .apply_unless_moved(
                    &next.id,
                    Event::Dispatch,
                    EventContext {
                        actor: Some(Actor("dispatcher".into())),
                        expected_state: Some(RunState::Queued),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(Some(_)) => dispatched.push(next.id),
                // another process dispatched or cancelled it: look again
                Ok(None) => continue,
                Err(OrchestratorError::NoSlotFree { .. } | OrchestratorError::DispatchPaused) => {
                    return Ok(dispatched);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Whether the dispatcher is paused (the flag every process shares).
    pub async fn dispatch_paused(&self) -> Result<bool> {
        Ok(crate::store::dispatcher_state::get(self.core.conn())
            .await
            .map_err(db("reading whether the dispatcher is paused"))?
            .paused)
    }

    /// The runs holding a dispatcher slot now.
    pub async fn slots_in_use(&self) -> Result<Vec<String>> {
        crate::store::slots::in_use(self.core.conn()).await
    }

    /// Whether some run holds a dispatcher slot.
    pub async fn any_run_holds_a_slot(&self) -> Result<bool> {
        crate::store::runs::any_holding_a_slot(self.core.conn()).await
    }

    /// Runs in any of `states`, oldest first (the reconcilers' view: the
    /// few runs that need them, not the whole history).
    pub async fn runs_in_states(&self, states: &[RunState]) -> Result<Vec<Run>> {
        crate::store::runs::in_states(self.core.conn(), states).await
    }
}
