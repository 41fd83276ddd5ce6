//! The audit table: the one writer of audit records (every operator
//! action, boot script and identity record goes through [`record`]) and
//! its reader.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};

use super::StoreError;
use super::entities::audit;
use crate::clock::Millis;
use crate::model::{Actor, AuditRecord};

/// One audit record: who did what to which run or host.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub actor: &'a Actor,
    pub action: &'a str,
    pub run_id: Option<&'a str>,
    pub host_id: Option<i64>,
    /// What the operator acknowledged (an override's finding ids, ...).
    pub acknowledged: Option<String>,
    /// A JSON document with the action's details.
    pub detail: Option<serde_json::Value>,
}

impl<'a> Entry<'a> {
    pub fn new(actor: &'a Actor, action: &'a str) -> Self {
        Entry {
            actor,
            action,
            run_id: None,
            host_id: None,
            acknowledged: None,
            detail: None,
        }
    }

    pub fn run(mut self, run_id: &'a str) -> Self {
        self.run_id = Some(run_id);
        self
    }

    pub fn host(mut self, host_id: i64) -> Self {
        self.host_id = Some(host_id);
        self
    }

    pub fn acknowledged(mut self, acknowledged: Option<String>) -> Self {
        self.acknowledged = acknowledged;
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// Writes `entry` at `at_ms` (inside the caller's transaction, so the
/// record commits with what it records).
pub async fn record(
    db: &impl ConnectionTrait,
    at_ms: Millis,
    entry: Entry<'_>,
) -> Result<(), StoreError> {
    audit::ActiveModel {
        at_ms: Set(at_ms),
        actor: Set(entry.actor.as_str().to_string()),
        action: Set(entry.action.to_string()),
        run_id: Set(entry.run_id.map(str::to_string)),
        host_id: Set(entry.host_id),
        acknowledged: Set(entry.acknowledged),
        detail: Set(entry.detail.map(|detail| detail.to_string())),
        ..Default::default()
    }
    .insert(db)
    .await
    .map_err(StoreError::db("recording an audit record"))?;
    Ok(())
}

/// The audit records, of one run or all, in the order they were written.
pub async fn list(
    db: &impl ConnectionTrait,
    run_id: Option<&str>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut query = audit::Entity::find().order_by_asc(audit::Column::Id);
    if let Some(run_id) = run_id {
        query = query.filter(audit::Column::RunId.eq(run_id));
    }
    Ok(query
        .all(db)
        .await
        .map_err(StoreError::db("reading the audit log"))?
        .into_iter()
        .map(|model| AuditRecord {
            id: model.id,
            at_ms: model.at_ms,
            actor: model.actor,
            action: model.action,
            run_id: model.run_id,
            host_id: model.host_id,
            acknowledged: model.acknowledged,
            detail: model.detail,
        })
        .collect())
}
