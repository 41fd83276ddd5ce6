//! The api_tokens table: typed queries of the operator's API tokens.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};

use crate::clock::Millis;
use crate::store::entities::api_token;

/// The token named `name` that is not revoked (at most one: index
/// `api_tokens_live_name`).
pub async fn live_by_name(
    conn: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<api_token::Model>, sea_orm::DbErr> {
    Ok(api_token::Entity::find()
        .filter(api_token::Column::Name.eq(name))
        .filter(api_token::Column::RevokedAtMs.is_null())
        .all(conn)
        .await?
        .into_iter()
        .next())
}

/// A token by id (the per-request check of a cached verification).
pub async fn by_id(
    conn: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<api_token::Model>, sea_orm::DbErr> {
    crate::store::by_key(api_token::Entity::find_by_id(id), conn).await
}

/// Every token, revoked ones included, by name then age.
pub async fn list(conn: &impl ConnectionTrait) -> Result<Vec<api_token::Model>, sea_orm::DbErr> {
    api_token::Entity::find()
        .order_by_asc(api_token::Column::Name)
        .order_by_asc(api_token::Column::Id)
        .all(conn)
        .await
}

/// A new token row.
pub async fn insert(
    conn: &impl ConnectionTrait,
    name: &str,
    role: &str,
    token_hash: String,
    created_by: &str,
    now: Millis,
) -> Result<api_token::Model, sea_orm::DbErr> {
    api_token::ActiveModel {
        name: Set(name.to_string()),
        role: Set(role.to_string()),
        token_hash: Set(token_hash),
        created_at_ms: Set(now),
        created_by: Set(created_by.to_string()),
        last_used_at_ms: Set(None),
        revoked_at_ms: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await
}

/// Revokes the live token `id`; whether it was live.
pub async fn revoke(
    conn: &impl ConnectionTrait,
    id: i64,
    now: Millis,
) -> Result<bool, sea_orm::DbErr> {
    let updated = api_token::Entity::update_many()
        .col_expr(api_token::Column::RevokedAtMs, Expr::value(now))
        .filter(api_token::Column::Id.eq(id))
        .filter(api_token::Column::RevokedAtMs.is_null())
        .exec(conn)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Records that token `id` was used at `now`.
pub async fn touch(
    conn: &impl ConnectionTrait,
    id: i64,
    now: Millis,
) -> Result<(), sea_orm::DbErr> {
    api_token::Entity::update_many()
        .col_expr(api_token::Column::LastUsedAtMs, Expr::value(now))
        .filter(api_token::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}
