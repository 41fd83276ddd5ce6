//! Hosts and their MACs.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use crate::error::{OrchestratorError, Result, db};
use crate::model::{Actor, Host, Mac, NewHost, Run};

use super::{HostEdit, Page, PageRequest, RowError};
use crate::power::PowerSettings;
use crate::store::audit;
use crate::store::entities::{host, host_mac, run, spec_profile};

use super::Operator;

impl Operator {
    /// Registers a host. Its MACs must be free (a removed host's MACs are).
    pub async fn register_host(&self, mut new: NewHost, actor: &Actor) -> Result<Host> {
        let checked = check_new_host(&new)?;
        if let Some(power) = new.power.take() {
            new.power = Some(
                seal_power(power, self.core.key().bytes())
                    .map_err(|message| checked.invalid(&message))?,
            );
        }
        let now = self.core.now_ms();
        let txn = self.core.begin_write("registering a host").await?;
        if name_taken(&txn, &checked.name, None).await? {
            return Err(checked.invalid("a host with this name exists"));
        }
        for mac in &checked.macs {
            if let Some(owner) = mac_owner(&txn, mac).await? {
                return Err(OrchestratorError::MacTaken {
                    mac: mac.to_string(),
                    host: owner.1,
                });
            }
        }
        let inserted = insert_host(&txn, &checked, &new, actor, false, now).await?;
        txn.commit().await.map_err(db("registering a host"))?;
        self.core
            .inner
            .hub
            .publish(crate::events::HubEvent::HostsChanged);
        Ok(inserted)
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
    ///
    /// A profile must exist and power settings must parse
    /// (`power::PowerSettings`, or a driver name that needs no settings:
    /// `wol`, `manual`); at least one MAC must remain.
    pub async fn edit_host(&self, host_id: i64, edit: HostEdit, actor: &Actor) -> Result<Host> {
        let current = self.get_host(host_id).await?;
        let invalid = |message: String| OrchestratorError::InvalidHost {
            name: current.name.clone(),
            message,
        };
        if current.removed_at_ms.is_some() {
            return Err(OrchestratorError::HostNotFound(current.name.clone()));
        }
        let rename = match edit.rename.as_deref().map(str::trim) {
            Some(name) if name != current.name => Some(check_host_name(name)?),
            _ => None,
        };
        let mut add = Vec::new();
        for text in &edit.add_macs {
            let mac = Mac::parse(text).map_err(&invalid)?;
            if !current.macs.contains(&mac) && !add.contains(&mac) {
                add.push(mac);
            }
        }
        let mut remove = Vec::new();
        for text in &edit.remove_macs {
            let mac = Mac::parse(text).map_err(&invalid)?;
            if !current.macs.contains(&mac) {
                return Err(invalid(format!("MAC {mac} is not this host's")));
            }
            if add.contains(&mac) {
                return Err(invalid(format!("MAC {mac} is both added and removed")));
            }
            if !remove.contains(&mac) {
                remove.push(mac);
            }
        }
        let mut macs: Vec<Mac> = current
            .macs
            .iter()
            .filter(|mac| !remove.contains(mac))
            .cloned()
            .chain(add.iter().cloned())
            .collect();
        macs.sort();
        if macs.is_empty() {
            return Err(invalid("at least one MAC address must remain".into()));
        }
        let profile = match edit.spec_profile.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(None),
            Some(name) => {
                if self.get_spec_profile(name).await?.is_none() {
                    return Err(invalid(format!("spec profile `{name}` does not exist")));
                }
                Some(Some(name.to_string()))
            }
        };
        let power = match &edit.power {
            None => None,
            Some(serde_json::Value::Null) => Some(None),
            Some(value) => Some(Some(
                check_power(value, macs.first(), self.core.key().bytes()).map_err(&invalid)?,
            )),
        };
        let macs_change = !add.is_empty() || !remove.is_empty();

        let now = self.core.now_ms();
        let txn = self.core.begin_write("editing a host").await?;
        if macs_change
            && let Some(active) = crate::store::runs::list(&txn, Some(host_id))
                .await?
                .into_iter()
                .find(|run| !run.state.is_terminal())
        {
            return Err(OrchestratorError::HostBusy {
                host: current.name.clone(),
                run_id: active.id,
                state: active.state,
            });
        }
        if let Some(name) = &rename
            && name_taken(&txn, name, Some(host_id)).await?
        {
            return Err(invalid(format!("a host named `{name}` exists")));
        }
        for mac in &add {
            if let Some((_, owner)) = mac_owner(&txn, mac).await? {
                return Err(OrchestratorError::MacTaken {
                    mac: mac.to_string(),
                    host: owner,
                });
            }
        }
        let mut update = host::ActiveModel {
            id: Set(host_id),
            ..Default::default()
        };
        let mut changed = serde_json::Map::new();
        if let Some(name) = &rename {
            update.name = Set(name.clone());
            changed.insert(
                "name".into(),
                serde_json::json!({"from": current.name, "to": name}),
            );
        }
        if let Some(serial) = &edit.serial {
            let serial = clean(Some(serial.clone()));
            changed.insert("serial".into(), serde_json::json!(serial));
            update.serial = Set(serial);
        }
        if let Some(profile) = profile {
            changed.insert("spec_profile".into(), serde_json::json!(profile));
            update.spec_profile = Set(profile);
        }
        if let Some(power) = power {
            // the driver only: the settings may carry an encrypted secret
            changed.insert(
                "power".into(),
                serde_json::json!(power.as_ref().and_then(|p| p.get("driver").cloned())),
            );
            update.power = Set(power.map(|value| value.to_string()));
        }
        // the id alone is not a change
        if rename.is_some()
            || edit.serial.is_some()
            || changed.contains_key("spec_profile")
            || changed.contains_key("power")
        {
            update.update(&txn).await.map_err(db("editing a host"))?;
        }
        if !remove.is_empty() {
            host_mac::Entity::delete_many()
                .filter(host_mac::Column::HostId.eq(host_id))
                .filter(host_mac::Column::Mac.is_in(remove.iter().map(Mac::as_str)))
                .exec(&txn)
                .await
                .map_err(db("editing a host's MACs"))?;
            changed.insert("removed_macs".into(), serde_json::json!(remove));
        }
        for mac in &add {
            host_mac::ActiveModel {
                mac: Set(mac.as_str().to_string()),
                host_id: Set(host_id),
            }
            .insert(&txn)
            .await
            .map_err(db("editing a host's MACs"))?;
        }
        if !add.is_empty() {
            changed.insert("added_macs".into(), serde_json::json!(add));
        }
        audit::record(
            &txn,
            now,
            audit::Entry::new(actor, "edit_host")
                .host(host_id)
                .detail(serde_json::Value::Object(changed)),
        )
        .await?;
        txn.commit().await.map_err(db("editing a host"))?;
        if macs_change {
            self.core
                .inner
                .hub
                .publish(crate::events::HubEvent::HostsChanged);
        }
        self.get_host(host_id).await
    }

    /// Imports hosts from CSV text (header `name,macs,serial,profile,power`;
    /// `macs` separated by spaces or `;`, `power` a driver name or a JSON
    /// object): all rows or none. Every invalid row is named with its line
    /// number (`ImportRejected`): a malformed MAC, a duplicate name or MAC
    /// (within the file or already registered), an unknown profile, power
    /// settings that do not parse, a wrong number of columns. The valid
    /// file is inserted in one transaction, each host audited as
    /// registered (`register_host`, with `imported`).
    pub async fn import_hosts_csv(&self, text: &str, actor: &Actor) -> Result<Vec<Host>> {
        let rows = parse_import(text, self.core.key().bytes())?;
        let now = self.core.now_ms();
        let txn = self.core.begin_write("importing hosts").await?;
        // what the file is checked against, read in the write transaction
        let names: std::collections::HashSet<String> = host::Entity::find()
            .all(&txn)
            .await
            .map_err(db("importing hosts"))?
            .into_iter()
            .map(|model| model.name)
            .collect();
        let owners: std::collections::HashMap<String, i64> = host_mac::Entity::find()
            .all(&txn)
            .await
            .map_err(db("importing hosts"))?
            .into_iter()
            .map(|model| (model.mac, model.host_id))
            .collect();
        let profiles: std::collections::HashSet<String> = spec_profile::Entity::find()
            .all(&txn)
            .await
            .map_err(db("importing hosts"))?
            .into_iter()
            .map(|model| model.name)
            .collect();
        let mut errors: Vec<RowError> = Vec::new();
        let mut seen_names: std::collections::HashMap<String, usize> = Default::default();
        let mut seen_macs: std::collections::HashMap<Mac, usize> = Default::default();
        let mut valid: Vec<(NewHost, CheckedHost)> = Vec::new();
        for row in rows {
            let row = match row {
                Ok(row) => row,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            let line = row.line;
            let mut problems: Vec<String> = Vec::new();
            let checked = match check_new_host(&row.host) {
                Ok(checked) => Some(checked),
                Err(OrchestratorError::InvalidHost { message, .. }) => {
                    problems.push(message);
                    None
                }
                Err(other) => {
                    problems.push(other.to_string());
                    None
                }
            };
            if let Some(checked) = &checked {
                if names.contains(&checked.name) {
                    problems.push(format!("a host named `{}` exists", checked.name));
                }
                if let Some(first) = seen_names.get(&checked.name) {
                    problems.push(format!(
                        "the name `{}` is also on line {first}",
                        checked.name
                    ));
                }
                for mac in &checked.macs {
                    if let Some(owner) = owners.get(mac.as_str()) {
                        let owner = crate::store::hosts::get(&txn, *owner)
                            .await
                            .map_or_else(|_| owner.to_string(), |host| host.name);
                        problems.push(format!("MAC {mac} already belongs to host `{owner}`"));
                    }
                    if let Some(first) = seen_macs.get(mac) {
                        problems.push(format!("MAC {mac} is also on line {first}"));
                    }
                }
            }
            if let Some(profile) = &row.host.spec_profile
                && !profiles.contains(profile)
            {
                problems.push(format!("spec profile `{profile}` does not exist"));
            }
            if let Some(power) = &row.power_error {
                problems.push(power.clone());
            }
            if let Some(checked) = checked {
                seen_names.entry(checked.name.clone()).or_insert(line);
                for mac in &checked.macs {
                    seen_macs.entry(mac.clone()).or_insert(line);
                }
                if problems.is_empty() {
                    valid.push((row.host, checked));
                }
            }
            if !problems.is_empty() {
                errors.push(RowError {
                    line,
                    message: problems.join("; "),
                });
            }
        }
        if valid.is_empty() && errors.is_empty() {
            errors.push(RowError {
                line: 1,
                message: "the file has no hosts".into(),
            });
        }
        if !errors.is_empty() {
            // nothing was written: the transaction is rolled back
            return Err(OrchestratorError::ImportRejected {
                rows: capped(errors),
            });
        }
        let mut imported = Vec::with_capacity(valid.len());
        for (new, checked) in &valid {
            imported.push(insert_host(&txn, checked, new, actor, true, now).await?);
        }
        txn.commit().await.map_err(db("importing hosts"))?;
        self.core
            .inner
            .hub
            .publish(crate::events::HubEvent::HostsChanged);
        Ok(imported)
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

/// A new host whose name and MACs passed the checks of registering.
#[derive(Debug, Clone)]
struct CheckedHost {
    name: String,
    macs: Vec<Mac>,
}

impl CheckedHost {
    fn invalid(&self, message: &str) -> OrchestratorError {
        OrchestratorError::InvalidHost {
            name: self.name.clone(),
            message: message.to_string(),
        }
    }
}

/// A host name: 1 to 128 printable characters (trimmed).
fn check_host_name(name: &str) -> Result<String> {
    let name = name.trim().to_string();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(OrchestratorError::InvalidHost {
            name,
            message: "the name must be 1 to 128 printable characters".into(),
        });
    }
    Ok(name)
}

/// The checks of registering that need no database: the name, and at
/// least one MAC, each well formed (duplicates dropped).
fn check_new_host(new: &NewHost) -> Result<CheckedHost> {
    let name = check_host_name(&new.name)?;
    let invalid = |message: String| OrchestratorError::InvalidHost {
        name: name.clone(),
        message,
    };
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
    Ok(CheckedHost { name, macs })
}

/// Whether a host (registered or removed: names stay unique) other than
/// `except` is named `name`.
async fn name_taken(
    conn: &impl sea_orm::ConnectionTrait,
    name: &str,
    except: Option<i64>,
) -> Result<bool> {
    Ok(host::Entity::find()
        .filter(host::Column::Name.eq(name))
        .all(conn)
        .await
        .map_err(db("looking up a host name"))?
        .into_iter()
        .any(|model| Some(model.id) != except))
}

/// The id and name of the host that owns `mac`, if one does.
async fn mac_owner(
    conn: &impl sea_orm::ConnectionTrait,
    mac: &Mac,
) -> Result<Option<(i64, String)>> {
    let Some(taken) =
        crate::store::by_key(host_mac::Entity::find_by_id(mac.as_str().to_string()), conn)
            .await
            .map_err(db("looking up a MAC"))?
    else {
        return Ok(None);
    };
    let owner = crate::store::by_key(host::Entity::find_by_id(taken.host_id), conn)
        .await
        .map_err(db("looking up a MAC"))?
        .map_or_else(|| taken.host_id.to_string(), |owner| owner.name);
    Ok(Some((taken.host_id, owner)))
}

/// Inserts a checked host, its MACs and its audit record
/// (`register_host`, marked `imported` for an import) in the caller's
/// transaction: registering and importing share it.
async fn insert_host(
    txn: &sea_orm::DatabaseTransaction,
    checked: &CheckedHost,
    new: &NewHost,
    actor: &Actor,
    imported: bool,
    now: crate::clock::Millis,
) -> Result<Host> {
    let to_json = |value: &Option<serde_json::Value>| value.as_ref().map(|v| v.to_string());
    let inserted = host::ActiveModel {
        name: Set(checked.name.clone()),
        serial: Set(clean(new.serial.clone())),
        system_uuid: Set(clean(new.system_uuid.clone())),
        spec_profile: Set(clean(new.spec_profile.clone())),
        spec_overrides: Set(to_json(&new.spec_overrides)),
        power: Set(to_json(&new.power)),
        created_at_ms: Set(now),
        removed_at_ms: Set(None),
        ..Default::default()
    }
    .insert(txn)
    .await
    .map_err(db("registering a host"))?;
    for mac in &checked.macs {
        host_mac::ActiveModel {
            mac: Set(mac.as_str().to_string()),
            host_id: Set(inserted.id),
        }
        .insert(txn)
        .await
        .map_err(db("registering a host's MAC"))?;
    }
    let mut detail = serde_json::json!({"name": checked.name, "macs": checked.macs});
    if imported {
        detail["imported"] = serde_json::json!(true);
    }
    audit::record(
        txn,
        now,
        audit::Entry::new(actor, "register_host")
            .host(inserted.id)
            .detail(detail),
    )
    .await?;
    Ok(Host::from_entity(inserted, checked.macs.clone()))
}

/// Power settings as given: a JSON object that parses as
/// [`PowerSettings`], or (as a JSON string, or a CSV cell) the name of a
/// driver that needs no settings: `wol` (the host's first MAC) or
/// `manual`. What is stored.
fn check_power(
    value: &serde_json::Value,
    first_mac: Option<&Mac>,
    key: &[u8; 32],
) -> std::result::Result<serde_json::Value, String> {
    match value {
        serde_json::Value::String(text) => power_from_text(text, first_mac, key),
        serde_json::Value::Object(_) => {
            let sealed = seal_power(value.clone(), key)?;
            serde_json::from_value::<PowerSettings>(sealed.clone())
                .map_err(|error| format!("power settings: {error}"))?;
            Ok(sealed)
        }
        _ => Err("power settings must be a JSON object or a driver name".into()),
    }
}

/// The key under which a BMC password may be given in plain text.
pub const PLAINTEXT_PASSWORD: &str = "password_plaintext";

/// Power settings with a BMC password given in plain text
/// (`password_plaintext`, what `vetting hosts add --power-opt
/// password_plaintext=...` sends) encrypted with the secret key into
/// `password`: the plain text is never stored. Settings without it are
/// returned as they are.
fn seal_power(
    mut value: serde_json::Value,
    key: &[u8; 32],
) -> std::result::Result<serde_json::Value, String> {
    let Some(object) = value.as_object_mut() else {
        return Ok(value);
    };
    let Some(plain) = object.remove(PLAINTEXT_PASSWORD) else {
        return Ok(value);
    };
    let serde_json::Value::String(plain) = plain else {
        return Err(format!(
            "power settings: `{PLAINTEXT_PASSWORD}` must be a string"
        ));
    };
    if object.contains_key("password") {
        return Err(format!(
            "power settings: give `password` (encrypted) or `{PLAINTEXT_PASSWORD}`, not both"
        ));
    }
    let sealed = crate::power::EncryptedSecret::encrypt(&plain, key)
        .map_err(|error| format!("power settings: encrypting the password: {error}"))?;
    let sealed = serde_json::to_value(sealed)
        .map_err(|error| format!("power settings: encrypting the password: {error}"))?;
    object.insert("password".into(), sealed);
    Ok(value)
}

/// A CSV `power` cell (or a driver name): see [`check_power`].
fn power_from_text(
    text: &str,
    first_mac: Option<&Mac>,
    key: &[u8; 32],
) -> std::result::Result<serde_json::Value, String> {
    let text = text.trim();
    if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| format!("power settings are not valid JSON: {error}"))?;
        return check_power(&value, first_mac, key);
    }
    match text {
        "wol" => match first_mac {
            Some(mac) => Ok(serde_json::json!({"driver": "wol", "mac": mac.as_str()})),
            None => Err("power `wol` needs a MAC address".into()),
        },
        "manual" => Ok(serde_json::json!({"driver": "manual"})),
        "ipmi" | "redfish" => Err(format!(
            "power `{text}` needs its settings: give a JSON object ({{\"driver\": \"{text}\", ...}})"
        )),
        other => Err(format!(
            "power `{}` is not a driver: wol, manual, or a JSON object for ipmi and redfish",
            other.chars().take(40).collect::<String>()
        )),
    }
}

/// One data row of an import file, parsed (not yet checked against the
/// database).
struct ImportRow {
    line: usize,
    host: NewHost,
    /// Why the `power` cell was refused, if it was.
    power_error: Option<String>,
}

/// The columns of an import file, in order.
const IMPORT_COLUMNS: [&str; 5] = ["name", "macs", "serial", "profile", "power"];
/// The most invalid rows an import names.
const IMPORT_ERRORS_SHOWN: usize = 100;

/// Parses an import file: the header must be [`IMPORT_COLUMNS`]; each row
/// is a host or the reason it is not (a wrong number of columns, text
/// that is not CSV).
fn parse_import(
    text: &str,
    key: &[u8; 32],
) -> Result<Vec<std::result::Result<ImportRow, RowError>>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|error| OrchestratorError::ImportRejected {
            rows: vec![RowError {
                line: 1,
                message: format!("the header cannot be read: {error}"),
            }],
        })?;
    let names: Vec<String> = header
        .iter()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    if names != IMPORT_COLUMNS {
        return Err(OrchestratorError::ImportRejected {
            rows: vec![RowError {
                line: 1,
                message: format!(
                    "the header must be `{}`, not `{}`",
                    IMPORT_COLUMNS.join(","),
                    names.join(",").chars().take(200).collect::<String>()
                ),
            }],
        });
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let line = error
                    .position()
                    .map_or(0, |position| position.line() as usize);
                rows.push(Err(RowError {
                    line,
                    message: format!("not CSV: {error}"),
                }));
                continue;
            }
        };
        let line = record
            .position()
            .map_or(0, |position| position.line() as usize);
        if record.len() != IMPORT_COLUMNS.len() {
            rows.push(Err(RowError {
                line,
                message: format!(
                    "{} columns, expected {} ({})",
                    record.len(),
                    IMPORT_COLUMNS.len(),
                    IMPORT_COLUMNS.join(",")
                ),
            }));
            continue;
        }
        let cell = |index: usize| record.get(index).unwrap_or_default().to_string();
        let macs: Vec<String> = cell(1)
            .split(|c: char| c == ';' || c.is_whitespace())
            .filter(|mac| !mac.is_empty())
            .map(str::to_string)
            .collect();
        let first_mac = macs.first().and_then(|mac| Mac::parse(mac).ok());
        let (power, power_error) = match cell(4).as_str() {
            "" => (None, None),
            text => match power_from_text(text, first_mac.as_ref(), key) {
                Ok(value) => (Some(value), None),
                Err(error) => (None, Some(error)),
            },
        };
        rows.push(Ok(ImportRow {
            line,
            host: NewHost {
                name: cell(0),
                macs,
                serial: clean(Some(cell(2))),
                spec_profile: clean(Some(cell(3))),
                power,
                ..Default::default()
            },
            power_error,
        }));
    }
    Ok(rows)
}

/// At most [`IMPORT_ERRORS_SHOWN`] row errors, the rest counted.
fn capped(mut errors: Vec<RowError>) -> Vec<RowError> {
    if errors.len() > IMPORT_ERRORS_SHOWN {
        let more = errors.len() - IMPORT_ERRORS_SHOWN;
        let line = errors[IMPORT_ERRORS_SHOWN].line;
        errors.truncate(IMPORT_ERRORS_SHOWN);
        errors.push(RowError {
            line,
            message: format!("and {more} more invalid rows"),
        });
    }
    errors
}

fn clean(value: Option<String>) -> Option<String> {
    value
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}
