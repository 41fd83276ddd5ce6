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
