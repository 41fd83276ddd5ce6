//! The dispatcher_state table: one row, whether the dispatcher is paused
//! (by whom, since when). Every process sharing the database reads it.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QuerySelect,
};

use crate::clock::Millis;
use crate::store::entities::dispatcher_state;

/// The id of the one row.
const ROW: i32 = 1;

/// The row as stored (migration 7 inserts it; a missing row reads as not
/// paused).
pub async fn get(conn: &impl ConnectionTrait) -> Result<dispatcher_state::Model, sea_orm::DbErr> {
    Ok(
        crate::store::by_key(dispatcher_state::Entity::find_by_id(ROW), conn)
            .await?
            .unwrap_or(dispatcher_state::Model {
                id: ROW,
                paused: false,
                paused_by: None,
                paused_at_ms: None,
            }),
    )
}

/// Whether the dispatcher is paused, read inside a dispatch's own
/// transaction. On PostgreSQL the row is read `FOR SHARE`, so a pause
/// (an `UPDATE` of the row) waits for dispatches in flight to commit and
/// no dispatch commits after the pause did; on SQLite the dispatch's
/// transaction already holds the write lock.
pub async fn paused_for_dispatch(conn: &impl ConnectionTrait) -> Result<bool, sea_orm::DbErr> {
    let mut select = dispatcher_state::Entity::find().filter(dispatcher_state::Column::Id.eq(ROW));
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        select = select.lock_shared();
    }
    Ok(select
        .all(conn)
        .await?
        .into_iter()
        .next()
        .is_some_and(|row| row.paused))
}

/// Sets the flag (and who set it, when); an unchanged flag keeps its
/// original `by` and `at`. Whether it changed.
pub async fn set_paused(
    conn: &impl ConnectionTrait,
    paused: bool,
    by: &str,
    at_ms: Millis,
) -> Result<bool, sea_orm::DbErr> {
    let (by, at): (Option<String>, Option<Millis>) = if paused {
        (Some(by.to_string()), Some(at_ms))
    } else {
        (None, None)
    };
    let updated = dispatcher_state::Entity::update_many()
        .col_expr(dispatcher_state::Column::Paused, Expr::value(paused))
        .col_expr(dispatcher_state::Column::PausedBy, Expr::value(by))
        .col_expr(dispatcher_state::Column::PausedAtMs, Expr::value(at))
        .filter(dispatcher_state::Column::Id.eq(ROW))
        .filter(dispatcher_state::Column::Paused.eq(!paused))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected == 1)
}
