//! Partition ownership as session-level advisory locks: the two-key lock
//! (topic key, partition) held on an instance's ownership session
//! ([`super::session`]). The server releases it the moment that session ends,
//! so a killed instance's partitions are free at once. Correctness never rests
//! on it alone (offsets have their own compare-and-set); it keeps instances
//! from doing the same work twice.

use deadpool_postgres::ClientWrapper;

use super::StoreError;

const TRY_OWN: &str = include_str!("../../sql/queries/try_own_partition.sql");
const RELEASE: &str = include_str!("../../sql/queries/release_partition.sql");

/// Takes `partition` for this session without waiting; true when it holds it
/// now. Session locks stack: call it only for a partition not held already.
pub async fn try_own(
    client: &ClientWrapper,
    topic_key: i32,
    partition: i32,
) -> Result<bool, StoreError> {
    let stmt = client.prepare_cached(TRY_OWN).await?;
    Ok(client
        .query_one(&stmt, &[&topic_key, &partition])
        .await?
        .get(0))
}

/// Gives `partition` up so that another instance can take it at once; false
/// when this session did not hold it.
pub async fn release(
    client: &ClientWrapper,
    topic_key: i32,
    partition: i32,
) -> Result<bool, StoreError> {
    let stmt = client.prepare_cached(RELEASE).await?;
    Ok(client
        .query_one(&stmt, &[&topic_key, &partition])
        .await?
        .get(0))
}
