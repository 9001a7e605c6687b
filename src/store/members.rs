//! Consumer instances of a topic: a heartbeat row per instance, so that each
//! can tell how many share the partitions.

use uuid::Uuid;

use super::{Client, StoreError};

const HEARTBEAT: &str = include_str!("../../sql/queries/heartbeat.sql");
const LEAVE: &str = include_str!("../../sql/queries/leave.sql");

/// Renews `instance` for `ttl_ms`; returns how many live instances the topic
/// has, this one included.
pub async fn heartbeat(
    client: &Client,
    topic: &str,
    instance: Uuid,
    ttl_ms: u64,
) -> Result<usize, StoreError> {
    let stmt = client.prepare_cached(HEARTBEAT).await?;
    // Milliseconds as the SQL's float; a TTL beyond u32 (49 days) is capped.
    let ttl = f64::from(u32::try_from(ttl_ms).unwrap_or(u32::MAX));
    let others: i64 = client
        .query_one(&stmt, &[&topic, &instance, &ttl])
        .await?
        .get(0);
    Ok(usize::try_from(others).unwrap_or(0) + 1)
}

/// Removes `instance` (at shutdown), so the others rebalance at once.
pub async fn leave(client: &Client, topic: &str, instance: Uuid) -> Result<(), StoreError> {
    let stmt = client.prepare_cached(LEAVE).await?;
    client.execute(&stmt, &[&topic, &instance]).await?;
    Ok(())
}
