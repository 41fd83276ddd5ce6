//! The hosts and host_macs tables: typed reads.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::error::{OrchestratorError, Result, db};
use crate::model::{Host, Mac};
use crate::store::entities::{host, host_mac};

pub async fn get(conn: &impl ConnectionTrait, host_id: i64) -> Result<Host> {
    let model = crate::store::by_key(host::Entity::find_by_id(host_id), conn)
        .await
        .map_err(db("reading a host"))?
        .ok_or_else(|| OrchestratorError::HostNotFound(host_id.to_string()))?;
    let macs = host_mac::Entity::find()
        .filter(host_mac::Column::HostId.eq(host_id))
        .all(conn)
        .await
        .map_err(db("reading a host"))?
        .into_iter()
        .filter_map(|mac| Mac::parse(&mac.mac).ok())
        .collect();
    Ok(Host::from_entity(model, macs))
}

/// Hosts, registered ones first, by name.
pub async fn list(conn: &impl ConnectionTrait, include_removed: bool) -> Result<Vec<Host>> {
    let mut query = host::Entity::find().order_by_asc(host::Column::Name);
    if !include_removed {
        query = query.filter(host::Column::RemovedAtMs.is_null());
    }
    let hosts = query.all(conn).await.map_err(db("listing hosts"))?;
    let macs = host_mac::Entity::find()
        .all(conn)
        .await
        .map_err(db("listing hosts"))?;
    Ok(hosts
        .into_iter()
        .map(|model| {
            let mut own: Vec<Mac> = macs
                .iter()
                .filter(|mac| mac.host_id == model.id)
                .filter_map(|mac| Mac::parse(&mac.mac).ok())
                .collect();
            own.sort();
            Host::from_entity(model, own)
        })
        .collect())
}

/// The host that owns `mac`, if it is registered.
pub async fn by_mac(conn: &impl ConnectionTrait, mac: &Mac) -> Result<Option<Host>> {
    let Some(entry) =
        crate::store::by_key(host_mac::Entity::find_by_id(mac.as_str().to_string()), conn)
            .await
            .map_err(db("looking up a MAC"))?
    else {
        return Ok(None);
    };
    Ok(Some(get(conn, entry.host_id).await?))
}

/// The select of one page of hosts by name, starting after the name
/// `after`, `limit` rows; registered hosts only unless `include_removed`.
/// The one definition of the page's query (the index test explains it):
/// it reads the index of the hosts' unique names.
pub fn page_select(
    include_removed: bool,
    after: Option<&str>,
    limit: u64,
) -> sea_orm::Select<host::Entity> {
    let mut query = host::Entity::find();
    if !include_removed {
        query = query.filter(host::Column::RemovedAtMs.is_null());
    }
    if let Some(after) = after {
        query = query.filter(host::Column::Name.gt(after));
    }
    query.order_by_asc(host::Column::Name).limit(limit)
}

/// The select of the MACs of `host_ids` (index `host_macs_host`).
pub fn macs_select(host_ids: Vec<i64>) -> sea_orm::Select<host_mac::Entity> {
    host_mac::Entity::find().filter(host_mac::Column::HostId.is_in(host_ids))
}

/// One page of hosts (see [`page_select`]) with their MACs, and whether
/// more follow.
pub async fn page(
    conn: &impl ConnectionTrait,
    include_removed: bool,
    after: Option<&str>,
    limit: u64,
) -> Result<(Vec<Host>, bool)> {
    let mut rows = page_select(include_removed, after, limit + 1)
        .all(conn)
        .await
        .map_err(db("listing a page of hosts"))?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let macs = if rows.is_empty() {
        Vec::new()
    } else {
        macs_select(rows.iter().map(|row| row.id).collect())
            .all(conn)
            .await
            .map_err(db("listing a page of hosts"))?
    };
    let hosts = rows
        .into_iter()
        .map(|model| {
            let mut own: Vec<Mac> = macs
                .iter()
                .filter(|mac| mac.host_id == model.id)
                .filter_map(|mac| Mac::parse(&mac.mac).ok())
                .collect();
            own.sort();
            Host::from_entity(model, own)
        })
        .collect();
    Ok((hosts, more))
}

/// The registered (not removed) host named `name`.
pub async fn by_name(conn: &impl ConnectionTrait, name: &str) -> Result<Host> {
    let model = host::Entity::find()
        .filter(host::Column::Name.eq(name))
        .filter(host::Column::RemovedAtMs.is_null())
        .all(conn)
        .await
        .map_err(db("reading a host by name"))?
        .into_iter()
        .next()
        .ok_or_else(|| OrchestratorError::HostNotFound(name.to_string()))?;
    get(conn, model.id).await
}
