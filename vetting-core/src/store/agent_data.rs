//! The agent data tables: sensor samples (`measurements`) as the writer
//! stores them.

use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use vetting_probes::protocol::SensorSample;

use crate::store::entities::measurement;

/// Stores `samples` (run id, sample) in chunks of 100, then 10, then 1
/// rows: three distinct statements for the statement cache, whatever the
/// count.
pub async fn insert_samples(
    conn: &impl ConnectionTrait,
    samples: Vec<(String, SensorSample)>,
) -> Result<(), sea_orm::DbErr> {
    let rows: Vec<measurement::ActiveModel> = samples
        .into_iter()
        .map(|(run_id, sample)| measurement::ActiveModel {
            run_id: Set(run_id),
            stage: Set(sample.stage.map(|s| s.stage.as_str().to_string())),
            attempt: Set(sample.stage.map(|s| s.attempt as i32)),
            seq: Set(Some(sample.seq as i64)),
            name: Set(sample.name),
            value: Set(sample.value),
            unit: Set(sample.unit),
            at_ms: Set(sample.at_ms),
            ..Default::default()
        })
        .collect();
    let mut rest = rows.as_slice();
    while !rest.is_empty() {
        let size = [100, 10, 1]
            .into_iter()
            .find(|size| rest.len() >= *size)
            .unwrap_or(1);
        let (chunk, after) = rest.split_at(size);
        rest = after;
        measurement::Entity::insert_many(chunk.to_vec())
            .exec(conn)
            .await?;
    }
    Ok(())
}
