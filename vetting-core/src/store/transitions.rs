//! The transitions table: the log of every transition, read in commit order.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};

use crate::error::{Result, db};
use crate::model::TransitionRecord;
use crate::store::entities::transition;

/// The transition log, in commit order (by id).
pub async fn list(
    conn: &impl ConnectionTrait,
    run_id: Option<&str>,
) -> Result<Vec<TransitionRecord>> {
    let mut query = transition::Entity::find().order_by_asc(transition::Column::Id);
    if let Some(run_id) = run_id {
        query = query.filter(transition::Column::RunId.eq(run_id));
    }
    Ok(query
        .all(conn)
        .await
        .map_err(db("reading transitions"))?
        .into_iter()
        .map(record_of)
        .collect())
}

/// A stored transition row as the record the services return.
pub(crate) fn record_of(model: transition::Model) -> TransitionRecord {
    TransitionRecord {
        id: model.id,
        run_id: model.run_id,
        from: model.from_state,
        to: model.to_state,
        event: model.event,
        actor: model.actor,
        at_ms: model.at_ms,
        detail: model.detail,
    }
}

/// Logs one step of a transition; its id.
pub async fn record(
    conn: &impl ConnectionTrait,
    run_id: &str,
    step: crate::machine::Step,
    actor: &crate::model::Actor,
    now: crate::clock::Millis,
    detail: Option<String>,
) -> std::result::Result<i64, sea_orm::DbErr> {
    let recorded = transition::ActiveModel {
        run_id: Set(run_id.to_string()),
        from_state: Set(step.from.as_str().to_string()),
        to_state: Set(step.to.as_str().to_string()),
        event: Set(step.event.as_str().to_string()),
        actor: Set(actor.as_str().to_string()),
        at_ms: Set(now),
        detail: Set(detail),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(recorded.id)
}
