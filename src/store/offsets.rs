//! Consumer offsets stored in PostgreSQL (rskafka has no consumer groups): the
//! next offset to read per (topic, partition), written only inside batch
//! transactions by [`super::apply`].

use super::{Client, StoreError};

const LOAD: &str = include_str!("../../sql/queries/load_offset.sql");

/// The next offset to consume on this partition, `None` when nothing was committed.
pub async fn load(client: &Client, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
    let stmt = client.prepare_cached(LOAD).await?;
    let row = client.query_opt(&stmt, &[&topic, &partition]).await?;
    Ok(row.map(|r| r.get(0)))
}
