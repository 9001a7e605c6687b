//! The cache outbox (`cache_outbox`): the invalidations of a committed batch
//! that Redis did not acknowledge before its COMMIT, written in the batch
//! transaction so that a crash cannot lose them, and the announcements a
//! consumer commits before such a batch. Why these rows make the cache safe is
//! argued in docs/SPEC.md, section 8; the statements are here, the protocol in
//! [`crate::ingest::invalidate`] and [`crate::outbox`].

use std::time::Duration;

use deadpool_postgres::Transaction;

use super::{At, Client, Step, StoreError};

const INSERT: &str = include_str!("../../sql/queries/outbox_insert.sql");
const HOLD: &str = include_str!("../../sql/queries/outbox_hold.sql");
const COUNT: &str = include_str!("../../sql/queries/outbox_count.sql");
const CLAIM: &str = include_str!("../../sql/queries/outbox_claim.sql");
const DELETE: &str = include_str!("../../sql/queries/outbox_delete.sql");
const DROP_ANNOUNCEMENTS: &str = include_str!("../../sql/queries/outbox_drop_announcements.sql");

/// One outbox row: cache keys and the row versions that made them stale, kept
/// for diagnosis (both empty for an announcement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub keys: Vec<String>,
    pub versions: Vec<i64>,
    /// When the batch that queued it ran (its transaction's start).
    pub created_at: time::OffsetDateTime,
}

/// Inserts a batch's undelivered invalidations in its transaction; returns the row id.
pub async fn insert(
    tx: &Transaction<'_>,
    keys: &[String],
    versions: &[i64],
) -> Result<i64, StoreError> {
    let stmt = tx.prepare_cached(INSERT).await.at(Step::Outbox)?;
    let row = tx
        .query_one(&stmt, &[&keys, &versions])
        .await
        .at(Step::Outbox)?;
    Ok(row.get(0))
}

/// Commits an announcement (a row without keys) on its own; returns its id.
pub async fn announce(client: &Client) -> Result<i64, StoreError> {
    let stmt = client.prepare_cached(INSERT).await.at(Step::Outbox)?;
    let (keys, versions): (Vec<String>, Vec<i64>) = (Vec::new(), Vec::new());
    let row = client
        .query_one(&stmt, &[&keys, &versions])
        .await
        .at(Step::Outbox)?;
    Ok(row.get(0))
}

/// Locks one of `candidates` against deletion until `tx` ends (`FOR KEY
/// SHARE`), skipping rows being delivered; returns the row held, if any.
pub async fn hold(tx: &Transaction<'_>, candidates: &[i64]) -> Result<Option<i64>, StoreError> {
    let stmt = tx.prepare_cached(HOLD).await.at(Step::Outbox)?;
    let row = tx.query_opt(&stmt, &[&candidates]).await.at(Step::Outbox)?;
    Ok(row.map(|r| r.get(0)))
}

/// Deletes the announcements among `ids` that no transaction holds; returns how many.
pub async fn drop_announcements(client: &Client, ids: &[i64]) -> Result<u64, StoreError> {
    let stmt = client
        .prepare_cached(DROP_ANNOUNCEMENTS)
        .await
        .at(Step::Outbox)?;
    client.execute(&stmt, &[&ids]).await.at(Step::Outbox)
}

/// Rows in the outbox.
pub async fn count(client: &Client) -> Result<i64, StoreError> {
    let stmt = client.prepare_cached(COUNT).await.at(Step::Outbox)?;
    Ok(client.query_one(&stmt, &[]).await.at(Step::Outbox)?.get(0))
}

/// Locks up to `limit` rows for delivery, oldest first, skipping rows another
/// transaction holds: rows with keys only when `with_keys` (Redis reachable),
/// and announcements older than `announcement_age`.
pub async fn claim(
    tx: &Transaction<'_>,
    with_keys: bool,
    announcement_age: Duration,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let stmt = tx.prepare_cached(CLAIM).await.at(Step::Outbox)?;
    let age = announcement_age.as_secs_f64();
    let rows = tx
        .query(&stmt, &[&with_keys, &age, &limit])
        .await
        .at(Step::Outbox)?;
    Ok(rows
        .iter()
        .map(|r| OutboxRow {
            id: r.get(0),
            keys: r.get(1),
            versions: r.get(2),
            created_at: r.get(3),
        })
        .collect())
}

/// Deletes delivered rows (claimed by `tx`).
pub async fn delete(tx: &Transaction<'_>, ids: &[i64]) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached(DELETE).await.at(Step::Outbox)?;
    tx.execute(&stmt, &[&ids]).await.at(Step::Outbox)?;
    Ok(())
}
