//! The cache outbox and the cache epoch. `cache_outbox_keys` holds the keys
//! whose deletes Redis did not acknowledge before their batch's COMMIT, one
//! row per key, written in the batch transaction so that a crash cannot lose
//! them. `cache_outbox` holds the announcements a consumer commits before such
//! a batch, and at most one *mark*: every cached entry is suspect, and its
//! delivery begins a new epoch (`cache_epoch`). Why these rows make the cache
//! safe is argued in docs/SPEC.md, section 8; the statements are here, with
//! the outbox's error, and the protocol in [`super::announcements`] and
//! [`super::outbox_watch`]. They run on the store's connections and report
//! its errors, labelled [`Step::Outbox`].

use std::time::Duration;

use deadpool_postgres::Transaction;

use crate::store::{At, Client, Step, StoreError};

const LOOK: &str = include_str!("../../sql/queries/outbox_look.sql");
const ANNOUNCE: &str = include_str!("../../sql/queries/outbox_announce.sql");
const HOLD: &str = include_str!("../../sql/queries/outbox_hold.sql");
const QUEUE: &str = include_str!("../../sql/queries/outbox_queue.sql");
const MARK: &str = include_str!("../../sql/queries/outbox_mark.sql");
const CLAIM_MARK: &str = include_str!("../../sql/queries/outbox_claim_mark.sql");
const MARK_READY: &str = include_str!("../../sql/queries/outbox_mark_ready.sql");
const CLEAR: &str = include_str!("../../sql/queries/outbox_clear.sql");
const CLAIM_KEYS: &str = include_str!("../../sql/queries/outbox_claim_keys.sql");
const DELETE_KEYS: &str = include_str!("../../sql/queries/outbox_delete_keys.sql");
const DROP_ANNOUNCEMENTS: &str = include_str!("../../sql/queries/outbox_drop_announcements.sql");
const EXPIRE_ANNOUNCEMENTS: &str =
    include_str!("../../sql/queries/outbox_expire_announcements.sql");
const EPOCH_SHARE: &str = include_str!("../../sql/queries/epoch_share.sql");
const EPOCH_EXCLUSIVE: &str = include_str!("../../sql/queries/epoch_exclusive.sql");
const EPOCH_LOCK_TIMEOUT: &str = include_str!("../../sql/queries/epoch_lock_timeout.sql");
const EPOCH_READ: &str = include_str!("../../sql/queries/epoch_read.sql");
const EPOCH_BEGIN: &str = include_str!("../../sql/queries/epoch_begin.sql");

/// Why a look at the outbox, a delivery or a batch's announcement failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the database did not answer a look at the cache outbox within {0:?}")]
    Late(Duration),
    #[error(
        "the batch's cache invalidations were not acknowledged by Redis and no announcement \
         of them could be held (cache outbox)"
    )]
    Unannounced,
}

impl OutboxError {
    /// The step that failed: the store's, or the outbox.
    pub fn step(&self) -> Step {
        match self {
            OutboxError::Store(e) => e.step(),
            OutboxError::Late(_) | OutboxError::Unannounced => Step::Outbox,
        }
    }
}

/// What an instance's look at the outbox found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// Announcements, the mark and the keys waiting.
    pub rows: i64,
    /// The cache epoch.
    pub epoch: i64,
}

/// Where a batch's undelivered keys went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Into `cache_outbox_keys` (those not waiting already).
    Keys,
    /// Nowhere: the mark covers them (it was pending, or this batch, over
    /// the bound, inserted it).
    Mark,
}

/// Counts the outbox rows and reads the epoch.
pub async fn look(client: &Client) -> Result<Look, StoreError> {
    let stmt = client.prepare_cached(LOOK).await.at(Step::Outbox)?;
    let row = client.query_one(&stmt, &[]).await.at(Step::Outbox)?;
    Ok(Look {
        rows: row.get(0),
        epoch: row.get(1),
    })
}

/// Takes the batch transaction's share of the epoch lock, then reads the
/// epoch (a statement of its own, so that its snapshot follows the lock).
pub async fn share_epoch(tx: &Transaction<'_>) -> Result<i64, StoreError> {
    let lock = tx.prepare_cached(EPOCH_SHARE).await.at(Step::Lock)?;
    tx.execute(&lock, &[]).await.at(Step::Lock)?;
    let read = tx.prepare_cached(EPOCH_READ).await.at(Step::Lock)?;
    Ok(tx.query_one(&read, &[]).await.at(Step::Lock)?.get(0))
}

/// Commits an announcement (a row without keys) on its own; returns its id.
pub async fn announce(client: &Client) -> Result<i64, StoreError> {
    let stmt = client.prepare_cached(ANNOUNCE).await.at(Step::Outbox)?;
    Ok(client.query_one(&stmt, &[]).await.at(Step::Outbox)?.get(0))
}

/// Locks one of `candidates` against deletion until `tx` ends (`FOR KEY
/// SHARE`), skipping rows being deleted; returns the row held, if any.
pub async fn hold(tx: &Transaction<'_>, candidates: &[i64]) -> Result<Option<i64>, StoreError> {
    let stmt = tx.prepare_cached(HOLD).await.at(Step::Outbox)?;
    let row = tx.query_opt(&stmt, &[&candidates]).await.at(Step::Outbox)?;
    Ok(row.map(|r| r.get(0)))
}

/// Queues `keys` in `tx`, each once, while at most `max_keys` wait; past
/// that, or with the mark already pending, the mark stands for them.
pub async fn queue(
    tx: &Transaction<'_>,
    keys: &mut [String],
    max_keys: i64,
) -> Result<Queued, StoreError> {
    keys.sort_unstable();
    let stmt = tx.prepare_cached(QUEUE).await.at(Step::Outbox)?;
    let row = tx
        .query_one(&stmt, &[&&*keys, &max_keys])
        .await
        .at(Step::Outbox)?;
    let (marked, fits): (bool, bool) = (row.get(0), row.get(1));
    if marked {
        return Ok(Queued::Mark);
    }
    if fits {
        return Ok(Queued::Keys);
    }
    mark(tx).await?;
    Ok(Queued::Mark)
}

/// Inserts the mark unless one is pending (in a batch transaction, or on
/// its own).
pub async fn mark(client: &impl deadpool_postgres::GenericClient) -> Result<(), StoreError> {
    let stmt = client.prepare_cached(MARK).await.at(Step::Outbox)?;
    client.execute(&stmt, &[]).await.at(Step::Outbox)?;
    Ok(())
}

/// For the delivery of the mark, once it is older than `age`: waits for
/// the batches in flight and keeps new ones out (the exclusive epoch lock),
/// then locks the pending mark. False when there is none old enough (then
/// no lock was waited for), when the batches in flight did not end within
/// the lock timeout, or when another instance is delivering it.
pub async fn claim_mark(tx: &Transaction<'_>, age: Duration) -> Result<bool, StoreError> {
    let age = age.as_secs_f64();
    let ready = tx.prepare_cached(MARK_READY).await.at(Step::Outbox)?;
    if !tx
        .query_one(&ready, &[&age])
        .await
        .at(Step::Outbox)?
        .get::<_, bool>(0)
    {
        return Ok(false);
    }
    let timeout = tx
        .prepare_cached(EPOCH_LOCK_TIMEOUT)
        .await
        .at(Step::Outbox)?;
    tx.execute(&timeout, &[]).await.at(Step::Outbox)?;
    let lock = tx.prepare_cached(EPOCH_EXCLUSIVE).await.at(Step::Outbox)?;
    match tx.execute(&lock, &[]).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            return Ok(false);
        }
        Err(cause) => {
            return Err(StoreError::Db {
                step: Step::Outbox,
                cause,
            });
        }
    }
    let stmt = tx.prepare_cached(CLAIM_MARK).await.at(Step::Outbox)?;
    Ok(tx
        .query_opt(&stmt, &[&age])
        .await
        .at(Step::Outbox)?
        .is_some())
}

/// Begins `epoch` and deletes the mark and every waiting key, in the
/// delivering transaction (after [`claim_mark`]).
pub async fn begin_epoch(tx: &Transaction<'_>, epoch: i64) -> Result<(), StoreError> {
    let begin = tx.prepare_cached(EPOCH_BEGIN).await.at(Step::Outbox)?;
    tx.execute(&begin, &[&epoch]).await.at(Step::Outbox)?;
    let clear = tx.prepare_cached(CLEAR).await.at(Step::Outbox)?;
    tx.execute(&clear, &[]).await.at(Step::Outbox)?;
    Ok(())
}

/// Locks up to `limit` waiting keys for one delivery, skipping those another
/// transaction holds.
pub async fn claim_keys(tx: &Transaction<'_>, limit: i64) -> Result<Vec<String>, StoreError> {
    let stmt = tx.prepare_cached(CLAIM_KEYS).await.at(Step::Outbox)?;
    let rows = tx.query(&stmt, &[&limit]).await.at(Step::Outbox)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes delivered keys (claimed by `tx`).
pub async fn delete_keys(tx: &Transaction<'_>, keys: &[String]) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached(DELETE_KEYS).await.at(Step::Outbox)?;
    tx.execute(&stmt, &[&keys]).await.at(Step::Outbox)?;
    Ok(())
}

/// Reads the epoch outside a batch (the delivery of keys).
pub async fn epoch(tx: &Transaction<'_>) -> Result<i64, StoreError> {
    let read = tx.prepare_cached(EPOCH_READ).await.at(Step::Outbox)?;
    Ok(tx.query_one(&read, &[]).await.at(Step::Outbox)?.get(0))
}

/// Deletes the announcements among `ids` that no transaction holds; returns how many.
pub async fn drop_announcements(client: &Client, ids: &[i64]) -> Result<u64, StoreError> {
    let stmt = client
        .prepare_cached(DROP_ANNOUNCEMENTS)
        .await
        .at(Step::Outbox)?;
    client.execute(&stmt, &[&ids]).await.at(Step::Outbox)
}

/// Deletes announcements older than `age` that no transaction holds, once
/// neither keys nor the mark wait; returns how many.
pub async fn expire_announcements(client: &Client, age: Duration) -> Result<u64, StoreError> {
    let stmt = client
        .prepare_cached(EXPIRE_ANNOUNCEMENTS)
        .await
        .at(Step::Outbox)?;
    client
        .execute(&stmt, &[&age.as_secs_f64()])
        .await
        .at(Step::Outbox)
}
