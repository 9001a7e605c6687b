//! One partition's consumer: hold it, run its pipeline (load the committed
//! offset, start a fetcher, close batches, apply each), and restart that
//! pipeline with backoff after any error or panic, from the offset committed
//! in PostgreSQL, which is what makes a crash at any instant harmless. The
//! partition is only consumed while this instance holds its lock on a live
//! ownership session, and the lock is only kept while the pipeline runs.
//! While held, the partition stays in the instance's consumer (its reader);
//! a restart moves the reader's position, it does not assign it again.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, Semaphore, mpsc},
    task::JoinError,
};
use tokio_util::sync::CancellationToken;

use super::{
    ConsumerContext, ConsumerError, apply, batch,
    fetch::{self, FetcherContext},
    status::PartitionStatus,
};
use crate::{
    cluster::{
        OwnershipError,
        hold::{self, Held},
    },
    config::FaultStage,
    kafka::PartitionReader,
    retry::Backoff,
};

/// Chunks the fetcher may hand over ahead of the batcher.
const CHUNKS_AHEAD: usize = 64;

/// Longest pause between two restarts of a failing pipeline.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);

/// Consumes `partition` whenever this instance holds it, until `shutdown`.
pub async fn run(
    ctx: Arc<ConsumerContext>,
    status: Arc<PartitionStatus>,
    shutdown: CancellationToken,
) {
    let partition = status.partition;
    let mut backoff = Backoff::new(MAX_RESTART_DELAY);
    while let Some((held, owned)) = acquire(&ctx, &status, &shutdown).await {
        let held = Arc::new(held);
        let keeper = tokio::spawn(Arc::clone(&held).keep(
            ctx.ownership.timing.poll,
            Arc::clone(&ctx.faults),
            owned.clone(),
        ));
        if consume(&ctx, &status, &owned).await == Stopped::Fatal {
            // Keep the partition (and its lock) stopped: the error needs an operator.
            owned.cancelled().await;
        }
        owned.cancel();
        let (lost, keeper_panicked) = match keeper.await {
            Ok(lost) => (lost, false),
            Err(join) => {
                // Its drop guard already stopped the pipeline. Nobody watches
                // the session for this partition now: release it, so that it
                // is not held for nothing.
                let error = format!("the partition keeper panicked: {}", panic_message(join));
                tracing::error!(partition, %error, "partition consumer stopped");
                status.set_error(error);
                ctx.metrics.consumer_restart(partition);
                (false, true)
            }
        };
        status.set_handle(None);
        if !lost {
            // Shutdown, handed back or keeper gone: let another instance take it at once.
            held.release().await;
        }
        drop(held);
        status.set_owned(false);
        status.set_running(false);
        if shutdown.is_cancelled() {
            return;
        }
        if keeper_panicked {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}

/// How often a partition looks again while this instance has no ownership
/// session yet (at start-up, or while it reconnects).
const NO_SESSION_RECHECK: std::time::Duration = std::time::Duration::from_millis(10);

/// Waits until this instance holds the partition, trying every
/// `consumer.takeover_poll_ms` and only within its fair share. Returns the
/// hold and a token that is cancelled on shutdown, hand-back or loss of the
/// session, or `None` on shutdown.
async fn acquire(
    ctx: &ConsumerContext,
    status: &PartitionStatus,
    shutdown: &CancellationToken,
) -> Option<(Held, CancellationToken)> {
    let partition = status.partition;
    let mut waiting_logged = false;
    let mut failing_logged = false;
    loop {
        let total = ctx.partitions.len();
        let ownership = &ctx.ownership;
        let attempt = if ownership.membership.may_take(ctx.partitions.owned(), total) {
            hold::try_acquire(&ownership.sessions, partition).await
        } else {
            Ok(None) // at our fair share: leave it to another instance
        };
        let mut next_try = ownership.timing.poll;
        match attempt {
            Ok(Some(held)) => {
                status.set_owned(true);
                status.set_settled();
                tracing::info!(partition, instance = %ownership.instance_id, pid = held.pid(), "partition acquired");
                let owned = shutdown.child_token();
                status.set_handle(Some(owned.clone()));
                return Some((held, owned));
            }
            Ok(None) => {
                status.set_settled();
                failing_logged = false;
                // Whatever failed here before is another instance's partition now.
                status.clear_error();
                if !waiting_logged {
                    tracing::info!(partition, "partition left to another instance; standing by");
                    waiting_logged = true;
                }
            }
            // The session keeper says why it has none; this partition just
            // waits, looking often (an in-memory check), so that it is taken
            // as soon as the session opens rather than a poll later.
            Err(OwnershipError::NoSession) => next_try = next_try.min(NO_SESSION_RECHECK),
            Err(e) if !failing_logged => {
                tracing::warn!(partition, error = %e, "cannot take the partition");
                failing_logged = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(next_try) => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Stopped {
    Asked,
    Fatal,
}

/// Reads the partition through the instance's consumer until `stop` or a
/// fatal error, then takes it out of the consumer.
async fn consume(
    ctx: &Arc<ConsumerContext>,
    status: &Arc<PartitionStatus>,
    stop: &CancellationToken,
) -> Stopped {
    let reader = match ctx.kafka.reader(status.partition) {
        Ok(reader) => Arc::new(Mutex::new(reader)),
        Err(e) => {
            tracing::error!(partition = status.partition, error = %e, "cannot read the partition");
            status.set_error(e.to_string());
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(MAX_RESTART_DELAY) => {}
            }
            return Stopped::Asked;
        }
    };
    let stopped = run_pipelines(ctx, status, &reader, stop).await;
    // Waits for a fetcher still stopping (it holds the reader while it runs).
    reader.lock().await.release().await;
    stopped
}

/// Runs the pipeline, restarting it after errors and panics, until `stop` or
/// a fatal error.
async fn run_pipelines(
    ctx: &Arc<ConsumerContext>,
    status: &Arc<PartitionStatus>,
    reader: &Arc<Mutex<PartitionReader>>,
    stop: &CancellationToken,
) -> Stopped {
    let partition = status.partition;
    let mut backoff = Backoff::new(MAX_RESTART_DELAY);
    loop {
        let before = status.committed();
        // Its own task, so that a panic ends this run of the pipeline, not the partition.
        let run = tokio::spawn(pipeline(
            Arc::clone(ctx),
            Arc::clone(status),
            Arc::clone(reader),
            stop.clone(),
        ));
        let result = run.await.unwrap_or_else(|join| {
            Err(ConsumerError::Panicked {
                task: "pipeline",
                message: panic_message(join),
            })
        });
        status.set_running(false);
        if status.committed() != before {
            backoff = Backoff::new(MAX_RESTART_DELAY); // it made progress
        }
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

/// Load the committed offset, fetch from it, and apply batch after batch
/// until `shutdown` or an error.
async fn pipeline(
    ctx: Arc<ConsumerContext>,
    status: Arc<PartitionStatus>,
    reader: Arc<Mutex<PartitionReader>>,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let partition = status.partition;
    let topic = ctx.kafka_settings.topic.as_str();
    let mut committed = ctx.store.load_offset(topic, partition).await?;
    if let Some(offset) = committed {
        status.set_committed(offset);
    }

    // Room for several chunks ahead of the batch being applied, so that
    // fetching overlaps the batch transactions instead of adding to them.
    // What bounds the memory is the byte budget (`kafka.max_buffered_bytes`,
    // half here and half in librdkafka's queue).
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    let stop_fetcher = shutdown.child_token();
    let _stop_on_exit = stop_fetcher.clone().drop_guard();
    let fetcher_ctx = FetcherContext {
        kafka: ctx.kafka.clone(),
        settings: ctx.kafka_settings.clone(),
        status: Arc::clone(&status),
        metrics: Arc::clone(&ctx.metrics),
        faults: Arc::clone(&ctx.faults),
        buffer: Arc::new(Semaphore::new(ctx.kafka_settings.buffered_half())),
    };
    let mut fetch = tokio::spawn(fetch::run(reader, committed, fetcher_ctx, tx, stop_fetcher));
    status.set_running(true);
    let mut batches = batch::Batcher::new(rx, batch::Limits::from(&ctx.batch_settings));

    loop {
        let closed = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            closed = batches.next() => closed,
        };
        let Some(closed) = closed else {
            // The fetcher ended: report why.
            return match (&mut fetch).await {
                Ok(Ok(())) if shutdown.is_cancelled() => Ok(()),
                Ok(Ok(())) => Err(ConsumerError::FetcherStopped),
                Ok(Err(e)) => Err(e),
                Err(join) => Err(ConsumerError::Panicked {
                    task: "fetcher",
                    message: panic_message(join),
                }),
            };
        };
        ctx.faults.maybe_panic(FaultStage::Pipeline, partition);
        // The reservations stay held until the batch is committed: the byte budget
        // covers records in flight, not only those waiting.
        if !closed.records.is_empty() {
            committed = apply::apply_batch(&ctx, &status, &closed.records, committed).await?;
        }
        if let Some(end) = closed.end.filter(|end| committed.is_none_or(|c| *end > c)) {
            // Only transaction markers (or aborted records) lie in between.
            ctx.store
                .advance_offset(topic, partition, committed, end)
                .await?;
            status.committed_now(end);
            committed = Some(end);
        }
        drop(closed.reservations);
    }
}

/// What a panicking task said, for logs and `/health/ready`.
fn panic_message(join: JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned()),
        Err(join) => join.to_string(),
    }
}
