//! Applying a closed batch: decode, then one transaction that reads the
//! stored state, plans, and writes the plan with the offset. Retried while the
//! failure is transient; split in halves while PostgreSQL refuses its data,
//! until the records it refuses are isolated and quarantined as
//! `unprocessable` rejects, so that no record stops its partition. Before each
//! COMMIT, the cache keys of the changed rows ([`super::invalidate`]) are
//! deleted (or queued in the outbox, [`crate::cache::announcements`]); after
//! it: metrics, logs and status.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Transaction;
use tokio::sync::mpsc::{self, UnboundedReceiver};

use super::{
    ConsumerContext, ConsumerError,
    bisect::Bisection,
    decode::{self, Decoded},
    invalidate,
    status::PartitionStatus,
};
use crate::{
    cache::{
        Cache, Epoch,
        announcements::{self, Prepared},
        outbox::OutboxError,
    },
    domain::{event::RejectReason, plan},
    kafka::Record,
    metrics::BatchFigures,
    retry::{self, Backoff, Class},
    store::{
        Client, StoreError,
        write::{self, BatchOutcome, PartitionBatch},
    },
};

/// Attempts of one batch on transient errors before the pipeline restarts.
const BATCH_ATTEMPTS: u32 = 5;

/// Applies `records` (consecutive, in offset order) on top of `committed`;
/// returns the new committed offset (`committed` itself if `records` is empty).
/// A batch that PostgreSQL refuses for its data, or runs out of lock memory
/// for, is split in halves, each applied on its own, down to single records; a
/// single record it still refuses for its data is stored as rejected
/// (`unprocessable`, with the database's message) and the partition goes on.
pub async fn apply_batch(
    ctx: &ConsumerContext,
    status: &Arc<PartitionStatus>,
    records: &[Record],
    mut committed: Option<i64>,
) -> Result<Option<i64>, ConsumerError> {
    let partition = status.partition;
    let mut bisection = Bisection::new(records.len());
    while let Some(range) = bisection.next_range() {
        let batch = PartitionBatch {
            topic: &ctx.kafka_settings.topic,
            partition,
            expected_offset: committed,
            records: &records[range.clone()],
        };
        let outcome = match apply_with_retries(ctx, &batch, None).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let class = retry::classify_outbox(&error);
                if class.splits_batch() && bisection.split(range.clone()) {
                    tracing::warn!(partition, first_offset = batch.records[0].offset,
                        records = range.len(), class = class.as_str(), error = %error,
                        "the database refused this batch; splitting it");
                    continue;
                }
                if class != Class::Data {
                    return Err(error.into());
                }
                let detail = error.to_string();
                tracing::warn!(partition, offset = batch.records[0].offset, error = %detail,
                    "the database refused this record; storing it as unprocessable");
                apply_with_retries(ctx, &batch, Some(&detail)).await?
            }
        };
        committed = Some(outcome.next_offset);
        report_committed(status, &outcome);
    }
    Ok(committed)
}

/// One batch transaction, retried with backoff while the error is transient.
/// With `quarantine`, every record is stored as rejected with that detail.
/// Fails with the store's error, or when the batch could hold no
/// announcement to commit its undelivered invalidations with.
async fn apply_with_retries(
    ctx: &ConsumerContext,
    batch: &PartitionBatch<'_>,
    quarantine: Option<&str>,
) -> Result<BatchOutcome, OutboxError> {
    let mut backoff = Backoff::new(Duration::from_secs(2));
    let mut attempt = 1;
    let mut announced = false;
    loop {
        let started = std::time::Instant::now();
        let decoded = match quarantine {
            None => decode::decode_all(batch.records),
            Some(detail) => decode::reject_all(batch.records, RejectReason::Unprocessable, detail),
        };
        tracing::trace!(partition = batch.partition, took = ?started.elapsed(), "decoded");
        let result = match ctx.store.client().await {
            Ok(mut client) => apply_invalidating(ctx, &mut client, batch, decoded).await,
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(Attempt::Committed(outcome)) => Ok(outcome),
            // A fresh announcement that could not be held is a transient failure.
            Ok(Attempt::NeedsAnnouncement) if announced => Err(OutboxError::Unannounced),
            Ok(Attempt::NeedsAnnouncement) => {
                match announcements::announce(&ctx.announcements, &ctx.store).await {
                    Ok(()) => {
                        announced = true;
                        continue;
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        };
        announced = false;
        match result {
            Ok(outcome) => {
                let took = started.elapsed();
                ctx.metrics
                    .batch_applied(&figures(batch.partition, &outcome, took));
                return Ok(outcome);
            }
            Err(e) => {
                let class = retry::classify_outbox(&e);
                ctx.metrics.batch_failed(e.step().as_str(), class.as_str());
                if !class.is_retriable() || attempt >= BATCH_ATTEMPTS {
                    return Err(e);
                }
                let delay = backoff.next_delay();
                tracing::warn!(partition = batch.partition, attempt, error = %e, ?delay, "batch failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// One batch transaction as the service runs it: the writes with the
/// cache deletes beside them ([`write_all`]), then whatever
/// Redis did not acknowledge goes to the outbox
/// ([`announcements::before_commit`]), commit.
async fn apply_invalidating(
    ctx: &ConsumerContext,
    client: &mut Client,
    batch: &PartitionBatch<'_>,
    decoded: Vec<Decoded>,
) -> Result<Attempt, StoreError> {
    let started = std::time::Instant::now();
    let (tx, plan, epoch) = begin_and_plan(client, batch, decoded).await?;
    let Written {
        mut outcome,
        deletes,
    } = write_all(Some(&ctx.cache), &tx, batch, &plan, epoch).await?;
    let written = started.elapsed();
    let prepared = match deletes {
        Deletes::Acknowledged => Prepared::Delivered,
        Deletes::Nothing => Prepared::NothingToDelete,
        Deletes::Unacknowledged => {
            let keys = invalidate::stale_keys(epoch, &outcome.touched);
            announcements::before_commit(&ctx.announcements, &tx, keys).await?
        }
    };
    if prepared == Prepared::Unannounced {
        if let Err(e) = tx.rollback().await {
            tracing::debug!(error = %e, "rollback failed; the connection drops the transaction");
        }
        return Ok(Attempt::NeedsAnnouncement);
    }
    write::commit(tx).await?;
    outcome.invalidated_before_commit =
        matches!(prepared, Prepared::Delivered | Prepared::NothingToDelete);
    tracing::debug!(partition = batch.partition, ?written, committed = ?started.elapsed(),
        "batch transaction");
    ctx.faults.maybe_abort_after_commit();
    announcements::on_committed(&ctx.announcements, &ctx.metrics, client, prepared).await;
    Ok(Attempt::Committed(outcome))
}

/// What one try of a batch transaction came to.
#[derive(Debug)]
enum Attempt {
    Committed(BatchOutcome),
    /// Rolled back: Redis did not acknowledge the deletes, and no
    /// announcement was old enough to queue them with; announce, then try
    /// again ([`announcements::announce`]).
    NeedsAnnouncement,
}

/// A batch's writes, not committed yet, and what Redis made of its deletes.
#[derive(Debug)]
struct Written {
    outcome: BatchOutcome,
    deletes: Deletes,
}

/// Whether Redis acknowledged a batch's deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deletes {
    /// No key to delete (no row changed, or no cache).
    Nothing,
    /// Every set of keys.
    Acknowledged,
    /// Not all: the batch's keys go to the outbox.
    Unacknowledged,
}

/// One batch transaction without the cache (benchmarks and tests): lock and
/// read the stored state of the batch's movements, plan the decoded records
/// against it, write the plan and the offset, commit.
pub async fn apply_once(
    client: &mut Client,
    batch: &PartitionBatch<'_>,
    decoded: Vec<Decoded>,
) -> Result<BatchOutcome, StoreError> {
    let (tx, plan, epoch) = begin_and_plan(client, batch, decoded).await?;
    let Written { outcome, .. } = write_all(None, &tx, batch, &plan, epoch).await?;
    write::commit(tx).await?;
    Ok(outcome)
}

/// Writes `plan` and moves the offset in `tx`, in the order of
/// [`crate::store::write`]: movements, offset, then the stock in its parts,
/// whose rows batches of every partition share and which are therefore
/// locked last. With a cache, the keys (in `epoch`) of the rows each step
/// changed, and therefore locked, go to Redis to be deleted ([`delete_keys`])
/// while the next step runs; only the COMMIT waits for them. The rule is
/// docs/SPEC.md section 8's: a key is deleted after its row is locked and
/// before the COMMIT.
async fn write_all(
    cache: Option<&Cache>,
    tx: &Transaction<'_>,
    batch: &PartitionBatch<'_>,
    plan: &plan::Plan,
    epoch: Epoch,
) -> Result<Written, StoreError> {
    let (keys, sent) = mpsc::unbounded_channel();
    let writes = async move {
        // Owned here, so that the deletes end when the writes do, even on an error.
        let keys = keys;
        // The keys are only made with a cache to send them to
        // (`apply_once`, of the benchmarks and tests, makes none).
        let hand_over = |touched: &dyn Fn() -> Vec<String>| {
            if cache.is_some() {
                let touched = touched();
                if !touched.is_empty() {
                    // The receiver lives until the writes end: this cannot fail.
                    let _ = keys.send(touched);
                }
            }
        };
        let movements = write::write_movements(tx, batch, plan).await?;
        hand_over(&|| invalidate::movement_keys(epoch, &movements));
        write::write_offset(tx, batch).await?;
        let mut stock = write::StockWritten::default();
        for part in write::stock_parts(plan) {
            let written = write::write_stock_part(tx, part).await?;
            hand_over(&|| invalidate::stock_keys(epoch, &written.touched));
            stock.extend(written);
        }
        Ok::<_, StoreError>((movements, stock))
    };
    let (written, deletes) = tokio::join!(writes, delete_keys(cache, epoch, sent));
    let (movements, stock) = written?;
    Ok(Written {
        outcome: write::outcome(batch, plan, movements, stock),
        deletes,
    })
}

/// Deletes each set of keys [`write_all`] hands over, in the order they
/// come, until its writes end. After a set that Redis did not acknowledge,
/// the rest are not sent (the batch queues all of its keys in the outbox
/// then), so that an outage costs one timeout per batch, not one per step.
/// Acknowledged when Redis acknowledged every set, with `epoch`'s marker in
/// place; Nothing when no set came.
async fn delete_keys(
    cache: Option<&Cache>,
    epoch: Epoch,
    mut sets: UnboundedReceiver<Vec<String>>,
) -> Deletes {
    let mut deletes = Deletes::Nothing;
    while let Some(keys) = sets.recv().await {
        if deletes == Deletes::Unacknowledged {
            continue;
        }
        if let Some(cache) = cache {
            deletes = if cache.invalidate(epoch, keys).await {
                Deletes::Acknowledged
            } else {
                Deletes::Unacknowledged
            };
        }
    }
    deletes
}

/// Opens the batch transaction: reads the cache epoch under its share lock,
/// locks and reads the stored state of the batch's movements, and plans the
/// decoded records against that state.
async fn begin_and_plan<'c>(
    client: &'c mut Client,
    batch: &PartitionBatch<'_>,
    decoded: Vec<Decoded>,
) -> Result<(Transaction<'c>, plan::Plan, Epoch), StoreError> {
    debug_assert_eq!(decoded.len(), batch.records.len());
    let movement_ids = plan::movement_ids(&decoded);
    let (tx, stored, epoch) = write::begin(client, &movement_ids).await?;
    let plan = plan::plan(decoded, &stored);
    Ok((tx, plan, Epoch(epoch)))
}

/// The plain figures the metrics record for one committed batch.
fn figures(partition: i32, outcome: &BatchOutcome, took: Duration) -> BatchFigures {
    BatchFigures {
        partition,
        consumed: outcome.consumed,
        applied: outcome.applied,
        duplicates: outcome.duplicates,
        rejected: outcome
            .rejected
            .iter()
            .map(|(reason, n)| (reason.as_str(), *n))
            .collect(),
        negative_stock: outcome.negative_stock,
        oldest_emitted_at: outcome.oldest_emitted_at,
        oldest_record_at: outcome.oldest_record_at,
        invalidated_before_commit: outcome.invalidated_before_commit,
        took,
    }
}

/// Everything that follows a commit: logs and status (the cache keys were
/// invalidated, or queued in the outbox, before it).
fn report_committed(status: &PartitionStatus, outcome: &BatchOutcome) {
    let partition = status.partition;
    for (offset, reason, detail) in &outcome.rejections {
        tracing::info!(partition, offset, reason = reason.as_str(), detail = %detail, "rejected event");
    }
    tracing::debug!(
        partition,
        consumed = outcome.consumed,
        applied = outcome.applied,
        duplicates = outcome.duplicates,
        rejected = outcome.rejections.len(),
        next_offset = outcome.next_offset,
        "committed batch"
    );
    status.committed_now(outcome.next_offset);
}
