//! Partition leases: at most one live instance consumes a partition, and the
//! partitions of an instance that died are taken over once its leases expire.
//! Correctness never rests on them alone (offsets have their own
//! compare-and-set); they keep instances from doing the same work twice.

use uuid::Uuid;

use super::{Client, StoreError};

const ACQUIRE: &str = include_str!("../../sql/queries/acquire_lease.sql");
const RELEASE: &str = include_str!("../../sql/queries/release_lease.sql");

/// Takes or renews the lease; true when `owner` holds it for `ttl_ms` from now.
pub async fn acquire(
    client: &Client,
    topic: &str,
    partition: i32,
    owner: Uuid,
    ttl_ms: u64,
) -> Result<bool, StoreError> {
    let stmt = client.prepare_cached(ACQUIRE).await?;
    // Milliseconds as the SQL's float; a TTL beyond u32 (49 days) is capped.
    let ttl = f64::from(u32::try_from(ttl_ms).unwrap_or(u32::MAX));
    Ok(client
        .query_opt(&stmt, &[&topic, &partition, &owner, &ttl])
        .await?
        .is_some())
}

/// Gives the lease up so that another instance can take it at once.
pub async fn release(
    client: &Client,
    topic: &str,
    partition: i32,
    owner: Uuid,
) -> Result<(), StoreError> {
    let stmt = client.prepare_cached(RELEASE).await?;
    client.execute(&stmt, &[&topic, &partition, &owner]).await?;
    Ok(())
}
