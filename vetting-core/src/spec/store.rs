//! Spec profiles in the database, the spec a host is held to, and
//! `SpecValidate`: the run's latest inventory against the host record's
//! identity and the spec, with the differences stored per run.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use vetting_probes::inventory::Inventory;
use vetting_probes::parsers::dmidecode::{is_placeholder_uuid, meaningful};

use super::{Severity, Spec, SpecDiff, SpecError, diff, identity_diff, parse_spec};
use crate::error::{OrchestratorError, Result, db};
use crate::model::{Actor, Host};
use crate::store::audit;
use crate::store::entities::{host, spec_diff};

/// The message SpecValidate gives when a host has no spec at all.
pub const NO_SPEC_MESSAGE: &str =
    "no expected spec: nothing to compare; Storage will not run destructive tests";

/// A named spec profile (one per server model), as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpecProfile {
    pub name: String,
    /// The YAML or JSON text, comments and all.
    pub text: String,
    pub updated_at_ms: i64,
}

impl SpecProfile {
    /// The parsed spec.
    pub fn spec(&self) -> Result<Spec, SpecError> {
        parse_spec(&self.text)
    }
}

/// What SpecValidate found for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecOutcome {
    /// A critical difference: the run fails SpecValidate.
    pub critical: bool,
    /// Identity first, then the spec, matches (`info`) included.
    pub diffs: Vec<SpecDiff>,
    /// One line for the stage's reason.
    pub summary: String,
}

/// A profile name: 1 to 128 printable characters, no surrounding spaces.
pub(crate) fn check_profile_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || name.trim() != name
        || name.chars().any(char::is_control)
    {
        return Err(OrchestratorError::BadRequest(format!(
            "spec profile name `{name}`: use 1 to 128 printable characters without surrounding \
             spaces"
        )));
    }
    Ok(())
}

impl crate::runs::Runs {
    /// SpecValidate: checks the run's latest inventory against the host
    /// record's identity and the host's spec, stores the differences
    /// (replacing earlier ones of the run) and says whether one is
    /// critical. A host without a serial and UUID gets the inventory's as
    /// its identity (audited as `orchestrator`).
    pub async fn validate_spec(&self, run_id: &str) -> Result<SpecOutcome> {
        let run = self.core.run(run_id).await?;
        let mut host = self.core.host(run.host_id).await?;
        let mut diffs = Vec::new();
        let inventory: Option<Inventory> =
            match self.core.operator().latest_inventory_json(run_id).await? {
                None => {
                    diffs.push(SpecDiff::new(
                        Severity::Critical,
                        "inventory",
                        None,
                        None,
                        "no inventory was stored for this run: the machine cannot be checked",
                    ));
                    None
                }
                Some((attempt, text)) => match serde_json::from_str::<Inventory>(&text) {
                    Ok(parsed) => Some(parsed),
                    Err(error) => {
                        diffs.push(SpecDiff::new(
                            Severity::Critical,
                            "inventory",
                            None,
                            None,
                            format!(
                                "the inventory of InventoryCheck attempt {attempt} cannot be read: \
                             {error}"
                            ),
                        ));
                        None
                    }
                },
            };
        let spec = match self.core.operator().host_spec(&host).await {
            Ok(spec) => spec,
            Err(error) => {
                diffs.push(SpecDiff::new(
                    Severity::Critical,
                    "spec",
                    None,
                    None,
                    format!("the expected spec cannot be used: {error}"),
                ));
                None
            }
        };
        let spec_diffs = match (&spec, &inventory) {
            (Some(spec), Some(inventory)) => diff(spec, inventory),
            _ => Vec::new(),
        };
        if let Some(inventory) = &inventory {
            let has_identity = host.serial.is_some() || host.system_uuid.is_some();
            let spec_identity_failed = spec_diffs.iter().any(|diff| {
                diff.severity == Severity::Critical && diff.path.starts_with("system.")
            });
            if !has_identity && !spec_identity_failed {
                match self.record_identity(&host, run_id, inventory).await? {
                    Some(recorded) => diffs.push(recorded),
                    None => {
                        // another process recorded it first: check against that
                        host = self.core.host(run.host_id).await?;
                    }
                }
            }
            diffs.extend(identity_diff(
                host.serial.as_deref(),
                host.system_uuid.as_deref(),
                inventory,
            ));
        }
        if spec.is_none() && !diffs.iter().any(|diff| diff.path == "spec") {
            diffs.push(SpecDiff::new(
                Severity::Info,
                "spec",
                None,
                None,
                NO_SPEC_MESSAGE,
            ));
        }
        diffs.extend(spec_diffs);
        self.store_spec_diffs(run_id, &diffs).await?;
        let critical = diffs.iter().any(|diff| diff.severity == Severity::Critical);
        let summary = summarize(&diffs, spec.is_some());
        Ok(SpecOutcome {
            critical,
            diffs,
            summary,
        })
    }

    /// Records the inventory's serial and UUID as the host's identity when
    /// it has none (compare-and-set: only while both are still empty).
    /// `Ok(None)` when another process got there first.
    async fn record_identity(
        &self,
        host_record: &Host,
        run_id: &str,
        inventory: &Inventory,
    ) -> Result<Option<SpecDiff>> {
        let serial = inventory.system.serial.as_deref().and_then(meaningful);
        let uuid = inventory
            .system
            .uuid
            .as_deref()
            .and_then(meaningful)
            .filter(|uuid| !is_placeholder_uuid(uuid));
        if serial.is_none() && uuid.is_none() {
            return Ok(Some(SpecDiff::new(
                Severity::Info,
                "identity",
                None,
                None,
                "the machine reports no serial or UUID: no identity recorded for the host",
            )));
        }
        let now = self.core.now_ms();
        let txn = self.core.begin_write("recording a host's identity").await?;
        let updated = host::Entity::update_many()
            .col_expr(host::Column::Serial, Expr::value(serial.clone()))
            .col_expr(host::Column::SystemUuid, Expr::value(uuid.clone()))
            .filter(host::Column::Id.eq(host_record.id))
            .filter(host::Column::Serial.is_null())
            .filter(host::Column::SystemUuid.is_null())
            .exec(&txn)
            .await
            .map_err(db("recording a host's identity"))?;
        if updated.rows_affected != 1 {
            txn.rollback()
                .await
                .map_err(db("recording a host's identity"))?;
            return Ok(None);
        }
        audit::record(
            &txn,
            now,
            audit::Entry::new(&Actor::orchestrator(), "record_identity")
                .run(run_id)
                .host(host_record.id)
                .detail(serde_json::json!({"serial": serial, "uuid": uuid})),
        )
        .await?;
        txn.commit()
            .await
            .map_err(db("recording a host's identity"))?;
        let shown = [
            serial.as_ref().map(|serial| format!("serial {serial}")),
            uuid.as_ref().map(|uuid| format!("UUID {uuid}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        Ok(Some(SpecDiff::new(
            Severity::Info,
            "identity",
            None,
            Some(shown.clone()),
            format!(
                "first inventory of host `{}`: {shown} recorded as its identity",
                host_record.name
            ),
        )))
    }

    async fn store_spec_diffs(&self, run_id: &str, diffs: &[SpecDiff]) -> Result<()> {
        let txn = self.core.begin_write("storing spec differences").await?;
        spec_diff::Entity::delete_many()
            .filter(spec_diff::Column::RunId.eq(run_id))
            .exec(&txn)
            .await
            .map_err(db("storing spec differences"))?;
        if !diffs.is_empty() {
            spec_diff::Entity::insert_many(diffs.iter().map(|diff| spec_diff::ActiveModel {
                run_id: Set(run_id.to_string()),
                path: Set(diff.path.clone()),
                expected: Set(diff.expected.clone()),
                actual: Set(diff.actual.clone()),
                severity: Set(diff.severity.as_str().to_string()),
                message: Set(diff.message.clone()),
                ..Default::default()
            }))
            .exec(&txn)
            .await
            .map_err(db("storing spec differences"))?;
        }
        txn.commit().await.map_err(db("storing spec differences"))?;
        Ok(())
    }
}

/// One line for the stage's reason: the critical differences, or that the
/// machine matches (with the warnings).
fn summarize(diffs: &[SpecDiff], has_spec: bool) -> String {
    let messages = |severity: Severity| -> Vec<&str> {
        diffs
            .iter()
            .filter(|diff| diff.severity == severity)
            .map(|diff| diff.message.as_str())
            .collect()
    };
    let critical = messages(Severity::Critical);
    let warnings = messages(Severity::Warning);
    let text = if !critical.is_empty() {
        format!(
            "{} critical difference{}: {}",
            critical.len(),
            if critical.len() == 1 { "" } else { "s" },
            critical.join("; ")
        )
    } else {
        let head = if has_spec {
            "the machine matches the expected spec".to_string()
        } else {
            NO_SPEC_MESSAGE.to_string()
        };
        if warnings.is_empty() {
            head
        } else {
            format!(
                "{head}; {} warning{}: {}",
                warnings.len(),
                if warnings.len() == 1 { "" } else { "s" },
                warnings.join("; ")
            )
        }
    };
    truncate(&text, 2000)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
