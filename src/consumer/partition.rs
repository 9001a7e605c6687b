//! One partition's consumer: load the committed offset, start a fetcher, close
//! batches, apply each in one transaction, then invalidate the cache. Any
//! failure restarts the pipeline from the offset committed in PostgreSQL,
//! which is what makes a crash at any instant harmless. The partition is only
//! consumed while this instance holds its lease.

use std::{sync::Arc, time::Duration};

use rskafka::client::partition::OffsetAt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ConsumerContext, ConsumerError, batcher, fetcher, lease, status::PartitionStatus};
use crate::{
    kafka::{self, KafkaError},
    retry::{self, Backoff},
    store::{
        self,
        apply::{BatchOutcome, PartitionBatch},
    },
};

/// Longest pause between two restarts of a failing pipeline.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);
/// Retries of one batch on retriable errors before the pipeline restarts.
const BATCH_ATTEMPTS: u32 = 5;

/// Consumes `partition` whenever this instance holds its lease, until `shutdown`.
pub async fn run(
    ctx: Arc<ConsumerContext>,
    status: Arc<PartitionStatus>,
    shutdown: CancellationToken,
) {
    let partition = status.partition;
    while let Some(owned) = lease::acquire(&ctx, &status, &shutdown).await {
        let keeper = tokio::spawn(lease::keep(Arc::clone(&ctx), partition, owned.clone()));
        if consume(&ctx, &status, &owned).await == Stopped::Fatal {
            // Keep the partition (and the lease) stopped: the error needs an operator.
            owned.cancelled().await;
        }
        owned.cancel();
        let lost = keeper.await.unwrap_or(false);
        status.set_handle(None);
        if !lost {
            // Shutdown or handed back: let another instance take it at once.
            lease::release(&ctx, partition).await;
        }
        status.set_owned(false);
        status.set_running(false);
        if shutdown.is_cancelled() {
            return;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Stopped {
    Asked,
    Fatal,
}

/// Runs the pipeline, restarting it after errors, until `stop` or a fatal error.
async fn consume(
    ctx: &ConsumerContext,
    status: &Arc<PartitionStatus>,
    stop: &CancellationToken,
) -> Stopped {
    let partition = status.partition;
    let mut backoff = Backoff::new(MAX_RESTART_DELAY);
    loop {
        let result = pipeline(ctx, status, stop, &mut backoff).await;
        status.set_running(false);
        match result {
            Ok(()) => return Stopped::Asked,
            Err(e) if e.is_fatal() => {
                tracing::error!(partition, error = %e, "partition consumer stopped");
                status.set_error(e.to_string());
                return Stopped::Fatal;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(partition, error = %e, ?delay, "restarting partition consumer from its committed offset");
                status.set_error(e.to_string());
                ctx.metrics.consumer_restart(partition);
                tokio::select! {
                    _ = stop.cancelled() => return Stopped::Asked,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn pipeline(
    ctx: &ConsumerContext,
    status: &Arc<PartitionStatus>,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), ConsumerError> {
    let partition = status.partition;
    let topic = ctx.kafka_settings.topic.as_str();
    let db = ctx.pool.get().await.map_err(store::StoreError::from)?;
    let mut committed = store::offsets::load(&db, topic, partition).await?;
    drop(db);
    let client = kafka::partition(&ctx.kafka, topic, partition).await?;
    let start = match committed {
        Some(offset) => offset,
        None => client
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(KafkaError::from)?,
    };
    if let Some(offset) = committed {
        status.set_committed(offset);
    }
    tracing::info!(partition, start, "partition consumer starting");

    let (tx, mut rx) = mpsc::channel(ctx.batch_settings.size.saturating_mul(2).max(64));
    let stop_fetcher = shutdown.child_token();
    let _stop_on_exit = stop_fetcher.clone().drop_guard();
    let mut fetch = tokio::spawn(fetcher::run(
        client,
        start,
        ctx.kafka_settings.clone(),
        tx,
        Arc::clone(status),
        Arc::clone(&ctx.metrics),
        stop_fetcher,
    ));
    status.set_running(true);

    loop {
        let next = batcher::next_batch(&mut rx, ctx.batch_settings.size, ctx.batch_settings.wait());
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            batch = next => batch,
        };
        let Some(batch) = batch else {
            // The fetcher ended: report why.
            return match (&mut fetch).await {
                Ok(Ok(())) if shutdown.is_cancelled() => Ok(()),
                Ok(Ok(())) => Err(ConsumerError::FetcherStopped),
                Ok(Err(e)) => Err(e),
                Err(join) => Err(ConsumerError::FetcherPanicked(join.to_string())),
            };
        };
        let partition_batch = PartitionBatch {
            topic,
            partition,
            expected_offset: committed,
            records: &batch,
        };
        let outcome = apply_with_retries(ctx, &partition_batch).await?;
        committed = Some(outcome.next_offset);
        status.set_committed(outcome.next_offset);
        *backoff = Backoff::new(MAX_RESTART_DELAY);
        report(partition, &outcome);
        if let Some(cache) = &ctx.cache {
            cache.invalidate(&outcome.touched).await;
        }
        status.set_invalidated(outcome.next_offset);
    }
}

async fn apply_with_retries(
    ctx: &ConsumerContext,
    batch: &PartitionBatch<'_>,
) -> Result<BatchOutcome, ConsumerError> {
    let mut backoff = Backoff::new(Duration::from_secs(2));
    let mut attempt = 1;
    loop {
        let started = std::time::Instant::now();
        let result = match ctx.pool.get().await {
            Ok(mut client) => store::apply::apply(&mut client, batch).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(outcome) => {
                ctx.metrics
                    .batch_applied(batch.partition, &outcome, started.elapsed());
                return Ok(outcome);
            }
            Err(e) if attempt < BATCH_ATTEMPTS && retry::is_retriable(&e) => {
                let delay = backoff.next_delay();
                tracing::warn!(partition = batch.partition, attempt, error = %e, ?delay, "batch failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn report(partition: i32, outcome: &BatchOutcome) {
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
}
