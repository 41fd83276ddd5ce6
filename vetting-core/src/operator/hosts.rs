//! Hosts and their MACs.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use crate::error::{OrchestratorError, Result, db};
use crate::model::{Actor, Host, Mac, NewHost, Run};

use super::{HostEdit, Page, PageRequest};
use crate::store::audit;
use crate::store::entities::{host, host_mac, run};

use super::Operator;

impl Operator {
    /// Registers a host. Its MACs must be free (a removed host's MACs are).
    pub async fn register_host(&self, new: NewHost, actor: &Actor) -> Result<Host> {
        let name = new.name.trim().to_string();
        let invalid = |message: String| OrchestratorError::InvalidHost {
            name: name.clone(),
            message,
        };
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(invalid(
                "the name must be 1 to 128 printable characters".into(),
            ));
        }
        if new.macs.is_empty() {
            return Err(invalid("at least one MAC address is needed".into()));
        }
        let mut macs = Vec::new();
        for text in &new.macs {
            let mac = Mac::parse(text).map_err(invalid)?;
            if !macs.contains(&mac) {
                macs.push(mac);
            }
        }
        let now = self.core.now_ms();
        let txn = self.core.begin_write("registering a host").await?;
        if host::Entity::find()
            .filter(host::Column::Name.eq(name.as_str()))
            .one(&txn)
            .await
            .map_err(db("registering a host"))?
            .is_some()
        {
            return Err(invalid("a host with this name exists".into()));
        }
        for mac in &macs {
            if let Some(taken) =
                crate::store::by_key(host_mac::Entity::find_by_id(mac.as_str().to_string()), &txn)
                    .await
                    .map_err(db("registering a host"))?
            {
                let owner = crate::store::by_key(host::Entity::find_by_id(taken.host_id), &txn)
                    .await
                    .map_err(db("registering a host"))?
                    .map_or_else(|| taken.host_id.to_string(), |owner| owner.name);
                return Err(OrchestratorError::MacTaken {
                    mac: mac.to_string(),
                    host: owner,
                });
            }
        }
        let to_json = |value: &Option<serde_json::Value>| value.as_ref().map(|v| v.to_string());
        let inserted = host::ActiveModel {
            name: Set(name.clone()),
            serial: Set(clean(new.serial.clone())),
            system_uuid: Set(clean(new.system_uuid.clone())),
            spec_profile: Set(clean(new.spec_profile.clone())),
            spec_overrides: Set(to_json(&new.spec_overrides)),
            power: Set(to_json(&new.power)),
            created_at_ms: Set(now),
            removed_at_ms: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(db("registering a host"))?;
        for mac in &macs {
            host_mac::ActiveModel {
                mac: Set(mac.as_str().to_string()),
                host_id: Set(inserted.id),
            }
            .insert(&txn)
            .await
            .map_err(db("registering a host's MAC"))?;
        }
        audit::record(
            &txn,
            now,
            audit::Entry::new(actor, "register_host")
                .host(inserted.id)
                .detail(serde_json::json!({"name": name, "macs": macs})),
        )
        .await?;
        txn.commit().await.map_err(db("registering a host"))?;
        self.core
            .inner
            .hub
            .publish(crate::events::HubEvent::HostsChanged);
        Ok(Host::from_entity(inserted, macs))
    }

    /// Removes a host: its MACs are freed (dnsmasq stops answering them),
    /// its history stays. Refused while it has a run in progress.
    pub async fn remove_host(&self, host_id: i64, actor: &Actor) -> Result<()> {
        let now = self.core.now_ms();
        let txn = self.core.begin_write("removing a host").await?;
        let found = crate::store::by_key(host::Entity::find_by_id(host_id), &txn)
            .await
            .map_err(db("removing a host"))?
            .ok_or_else(|| OrchestratorError::HostNotFound(host_id.to_string()))?;
        let runs = run::Entity::find()
            .filter(run::Column::HostId.eq(host_id))
            .all(&txn)
            .await
            .map_err(db("removing a host"))?;
        for model in runs {
            let run = Run::from_entity(model)?;
            if !run.state.is_terminal() {
                return Err(OrchestratorError::HostBusy {
                    host: found.name.clone(),
                    run_id: run.id,
                    state: run.state,
                });
            }
        }
        host_mac::Entity::delete_many()
            .filter(host_mac::Column::HostId.eq(host_id))
            .exec(&txn)
            .await
            .map_err(db("removing a host"))?;
        host::Entity::update_many()
            .col_expr(host::Column::RemovedAtMs, Expr::value(now))
            .filter(host::Column::Id.eq(host_id))
            .exec(&txn)
            .await
            .map_err(db("removing a host"))?;
        audit::record(
            &txn,
            now,
            audit::Entry::new(actor, "remove_host")
                .host(host_id)
                .detail(serde_json::json!({"name": found.name})),
        )
        .await?;
        txn.commit().await.map_err(db("removing a host"))?;
        self.core
            .inner
            .hub
            .publish(crate::events::HubEvent::HostsChanged);
        Ok(())
    }

    /// Hosts, registered ones first, by name.
    pub async fn list_hosts(&self, include_removed: bool) -> Result<Vec<Host>> {
        crate::store::hosts::list(self.core.conn(), include_removed).await
    }

    pub async fn get_host(&self, host_id: i64) -> Result<Host> {
        crate::store::hosts::get(self.core.conn(), host_id).await
    }

    /// The registered (not removed) host named `name`.
    pub async fn host_by_name(&self, name: &str) -> Result<Host> {
        crate::store::hosts::by_name(self.core.conn(), name).await
    }

    /// Changes a registered host (rename, MACs, serial, profile, power).
    /// The same checks as registering; refused while the host has a run in
    /// progress when its MACs change. Audited with what changed.
    pub async fn edit_host(&self, host_id: i64, edit: HostEdit, actor: &Actor) -> Result<Host> {
        let _ = (host_id, edit, actor);
        todo!("issue 11: edit_host")
    }

    /// Imports hosts from CSV text (header `name,macs,serial,profile,power`;
    /// `macs` separated by spaces or `;`, `power` a driver name or a JSON
    /// object): all rows or none. Every invalid row is named with its line
    /// number (`ImportRejected`): a malformed MAC, a duplicate name or MAC
    /// (within the file or already registered), a missing column.
    pub async fn import_hosts_csv(&self, text: &str, actor: &Actor) -> Result<Vec<Host>> {
        let _ = (text, actor);
        todo!("issue 11: import")
    }

    /// One page of hosts by name (registered ones; `include_removed` adds
    /// the removed), through an index.
    pub async fn list_hosts_page(
        &self,
        include_removed: bool,
        page: PageRequest,
    ) -> Result<Page<Host>> {
        let limit = super::pages::limit_of(&page)?;
        let after = page
            .before
            .as_deref()
            .map(super::pages::parse_host_cursor)
            .transpose()?;
        let (items, more) =
            crate::store::hosts::page(self.core.conn(), include_removed, after.as_deref(), limit)
                .await?;
        let next = match items.last() {
            Some(last) if more => Some(super::pages::host_cursor(&last.name)),
            _ => None,
        };
        Ok(Page { items, next })
    }

    /// The host that owns `mac`, if it is registered.
    pub async fn host_by_mac(&self, mac: &Mac) -> Result<Option<Host>> {
        crate::store::hosts::by_mac(self.core.conn(), mac).await
    }
}

fn clean(value: Option<String>) -> Option<String> {
    value
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}
