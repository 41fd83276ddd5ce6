//! The stages table: typed reads.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::error::{Result, db};
use crate::model::StageRecord;
use crate::store::entities::stage;

pub async fn list(conn: &impl ConnectionTrait, run_id: &str) -> Result<Vec<StageRecord>> {
    Ok(stage::Entity::find()
        .filter(stage::Column::RunId.eq(run_id))
        .order_by_asc(stage::Column::StartedAtMs)
        .all(conn)
        .await
        .map_err(db("reading stages"))?
        .into_iter()
        .map(|model| StageRecord {
            run_id: model.run_id,
            stage: model.stage,
            attempt: model.attempt.max(0) as u32,
            outcome: model.outcome,
            reason: model.reason,
            started_at_ms: model.started_at_ms,
            finished_at_ms: model.finished_at_ms,
        })
        .collect())
}
