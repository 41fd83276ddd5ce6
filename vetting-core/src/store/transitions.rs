//! The transitions table: the log of every transition, read in commit order.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

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
        .map(|model| TransitionRecord {
            id: model.id,
            run_id: model.run_id,
            from: model.from_state,
            to: model.to_state,
            event: model.event,
            actor: model.actor,
            at_ms: model.at_ms,
            detail: model.detail,
        })
        .collect())
}
