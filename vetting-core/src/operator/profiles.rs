//! Spec profiles: stored as the operator wrote them, validated first,
//! audited; the spec a host is held to and the differences a run found.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::error::{OrchestratorError, Result, db};
use crate::model::{Actor, Host};
use crate::spec::store::{SpecProfile, check_profile_name};
use crate::spec::{Severity, Spec, SpecDiff, effective_spec, parse_spec};
use crate::store::audit;
use crate::store::entities::{host, inventory, spec_diff, spec_profile};

use super::Operator;

impl Operator {
    /// Stores (creates or replaces) a spec profile after validating it;
    /// returns the parsed spec. An invalid spec is refused with a message
    /// that names the key (`BadRequest`).
    pub async fn put_spec_profile(&self, name: &str, text: &str, actor: &Actor) -> Result<Spec> {
        check_profile_name(name)?;
        let spec = parse_spec(text).map_err(|error| {
            OrchestratorError::BadRequest(format!("spec profile `{name}`: {error}"))
        })?;
        let now = self.core.now_ms();
        let txn = self.core.begin_write("storing a spec profile").await?;
        let existed =
            crate::store::by_key(spec_profile::Entity::find_by_id(name.to_string()), &txn)
                .await
                .map_err(db("storing a spec profile"))?
                .is_some();
        spec_profile::Entity::insert(spec_profile::ActiveModel {
            name: Set(name.to_string()),
            spec: Set(text.to_string()),
            updated_at_ms: Set(now),
        })
        .on_conflict(
            OnConflict::column(spec_profile::Column::Name)
                .update_columns([
                    spec_profile::Column::Spec,
                    spec_profile::Column::UpdatedAtMs,
                ])
                .to_owned(),
        )
        .exec(&txn)
        .await
        .map_err(db("storing a spec profile"))?;
        audit::record(
            &txn,
            now,
            audit::Entry::new(actor, "put_spec_profile")
                .detail(serde_json::json!({"name": name, "replaced": existed})),
        )
        .await?;
        txn.commit().await.map_err(db("storing a spec profile"))?;
        Ok(spec)
    }

    /// A spec profile as stored, if it exists.
    pub async fn get_spec_profile(&self, name: &str) -> Result<Option<SpecProfile>> {
        Ok(crate::store::by_key(
            spec_profile::Entity::find_by_id(name.to_string()),
            self.core.store().db(),
        )
        .await
        .map_err(db("reading a spec profile"))?
        .map(|model| SpecProfile {
            name: model.name,
            text: model.spec,
            updated_at_ms: model.updated_at_ms,
        }))
    }

    /// Every spec profile, by name.
    pub async fn list_spec_profiles(&self) -> Result<Vec<SpecProfile>> {
        Ok(spec_profile::Entity::find()
            .order_by_asc(spec_profile::Column::Name)
            .all(self.core.store().db())
            .await
            .map_err(db("listing spec profiles"))?
            .into_iter()
            .map(|model| SpecProfile {
                name: model.name,
                text: model.spec,
                updated_at_ms: model.updated_at_ms,
            })
            .collect())
    }

    /// Deletes a spec profile; refused while a registered host refers to it.
    pub async fn delete_spec_profile(&self, name: &str, actor: &Actor) -> Result<()> {
        let now = self.core.now_ms();
        let txn = self.core.begin_write("deleting a spec profile").await?;
        let users: Vec<String> = host::Entity::find()
            .filter(host::Column::SpecProfile.eq(name))
            .filter(host::Column::RemovedAtMs.is_null())
            .all(&txn)
            .await
            .map_err(db("deleting a spec profile"))?
            .into_iter()
            .map(|model| model.name)
            .collect();
        if !users.is_empty() {
            return Err(OrchestratorError::BadRequest(format!(
                "spec profile `{name}` is used by host(s) {}",
                users.join(", ")
            )));
        }
        let deleted = spec_profile::Entity::delete_by_id(name.to_string())
            .exec(&txn)
            .await
            .map_err(db("deleting a spec profile"))?;
        if deleted.rows_affected == 0 {
            return Err(OrchestratorError::BadRequest(format!(
                "spec profile `{name}` does not exist"
            )));
        }
        audit::record(
            &txn,
            now,
            audit::Entry::new(actor, "delete_spec_profile")
                .detail(serde_json::json!({"name": name})),
        )
        .await?;
        txn.commit().await.map_err(db("deleting a spec profile"))?;
        Ok(())
    }

    /// The spec `host` is held to: its profile with its overrides merged
    /// over it. `None` when it has neither. A profile that does not exist
    /// or does not parse is an error (`BadRequest`, naming it).
    pub async fn host_spec(&self, host: &Host) -> Result<Option<Spec>> {
        let profile = match &host.spec_profile {
            Some(name) => {
                let stored = self.get_spec_profile(name).await?.ok_or_else(|| {
                    OrchestratorError::BadRequest(format!(
                        "host `{}` refers to spec profile `{name}`, which does not exist",
                        host.name
                    ))
                })?;
                Some(stored.spec().map_err(|error| {
                    OrchestratorError::BadRequest(format!("spec profile `{name}`: {error}"))
                })?)
            }
            None => None,
        };
        effective_spec(profile.as_ref(), host.spec_overrides.as_ref()).map_err(|error| {
            OrchestratorError::BadRequest(format!("host `{}`: {error}", host.name))
        })
    }

    /// The latest inventory stored for a run (the highest InventoryCheck
    /// attempt), as its attempt and JSON text.
    pub async fn latest_inventory_json(&self, run_id: &str) -> Result<Option<(u32, String)>> {
        Ok(inventory::Entity::find()
            .filter(inventory::Column::RunId.eq(run_id))
            .order_by_desc(inventory::Column::Attempt)
            .one(self.core.store().db())
            .await
            .map_err(db("reading an inventory"))?
            .map(|model| (model.attempt.max(0) as u32, model.inventory)))
    }

    /// The differences SpecValidate stored for a run, in the order found.
    pub async fn spec_diffs(&self, run_id: &str) -> Result<Vec<SpecDiff>> {
        spec_diff::Entity::find()
            .filter(spec_diff::Column::RunId.eq(run_id))
            .order_by_asc(spec_diff::Column::Id)
            .all(self.core.store().db())
            .await
            .map_err(db("reading spec differences"))?
            .into_iter()
            .map(|model| {
                let severity = Severity::parse(&model.severity).ok_or_else(|| {
                    OrchestratorError::Corrupt(crate::model::CorruptRow {
                        run_id: run_id.to_string(),
                        field: "spec_diffs.severity",
                        value: model.severity.clone(),
                    })
                })?;
                Ok(SpecDiff {
                    path: model.path,
                    expected: model.expected,
                    actual: model.actual,
                    severity,
                    message: model.message,
                })
            })
            .collect()
    }
}
