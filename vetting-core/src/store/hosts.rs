//! The hosts and host_macs tables: typed reads.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

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
