//! The dispatcher_slots table.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::error::{Result, db};
use crate::store::entities::slot;

/// The runs holding a dispatcher slot now.
pub async fn in_use(conn: &impl ConnectionTrait) -> Result<Vec<String>> {
    Ok(slot::Entity::find()
        .filter(slot::Column::RunId.is_not_null())
        .all(conn)
        .await
        .map_err(db("reading slots"))?
        .into_iter()
        .filter_map(|row| row.run_id)
        .collect())
}

/// Frees the slot `run_id` holds, if any.
pub async fn free(
    conn: &impl ConnectionTrait,
    run_id: &str,
) -> std::result::Result<(), sea_orm::DbErr> {
    slot::Entity::update_many()
        .col_expr(slot::Column::RunId, Expr::value(Option::<String>::None))
        .filter(slot::Column::RunId.eq(run_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// How many dispatcher slots there are (the configured cap) and how many
/// a run holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotUsage {
    pub total: u32,
    pub in_use: u32,
}

/// The slot rows, counted (a handful of rows).
pub async fn usage(conn: &impl ConnectionTrait) -> Result<SlotUsage> {
    let rows = slot::Entity::find()
        .all(conn)
        .await
        .map_err(db("reading slots"))?;
    Ok(SlotUsage {
        total: u32::try_from(rows.len()).unwrap_or(u32::MAX),
        in_use: u32::try_from(rows.iter().filter(|row| row.run_id.is_some()).count())
            .unwrap_or(u32::MAX),
    })
}
