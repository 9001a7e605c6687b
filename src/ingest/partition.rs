//! One partition's consumer: hold its lease, run its pipeline (load the
//! committed offset, start a fetcher, close batches, apply each), and restart
//! that pipeline with backoff after any error or panic, from the offset
//! committed in PostgreSQL, which is what makes a crash at any instant
//! harmless. The partition is only consumed while this instance holds its
//! lease, and the lease is only kept while the pipeline runs.

use std::{sync::Arc, time::Duration};

use rskafka::client::partition::OffsetAt;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinError,
};
use tokio_util::sync::CancellationToken;

use super::{
    ConsumerContext, ConsumerError, apply, batch,
    fetch::{self, FetcherContext},
    status::PartitionStatus,
};
use crate::{
    app::config::FaultStage,
    cluster::lease::Lease,
    kafka::{self, KafkaError},
    retry::Backoff,
};

/// Longest pause between two restarts of a failing pipeline.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);

/// Consumes `partition` whenever this instance holds its lease, until `shutdown`.
pub async fn run(
    ctx: Arc<ConsumerContext>,
    status: Arc<PartitionStatus>,
    shutdown: CancellationToken,
) {
    let partition = status.partition;
    let lease = Arc::new(Lease {
        store: ctx.store.clone(),
        topic: ctx.kafka_settings.topic.clone(),
        partition,
        owner: ctx.instance_id,
        ttl: ctx.lease_ttl,
    });
    let mut backoff = Backoff::new(MAX_RESTART_DELAY);
    while let Some(owned) = acquire(&ctx, &lease, &status, &shutdown).await {
        let keeper = tokio::spawn(Arc::clone(&lease).keep(Arc::clone(&ctx.faults), owned.clone()));
        if consume(&ctx, &status, &owned).await == Stopped::Fatal {
            // Keep the partition (and the lease) stopped: the error needs an operator.
            owned.cancelled().await;
        }
        owned.cancel();
        let (lost, keeper_panicked) = match keeper.await {
            Ok(lost) => (lost, false),
            Err(join) => {
                // Its drop guard already stopped the pipeline. Nobody renews the
                // lease now: release it, so that it is not held for nothing.
                let error = format!("the lease keeper panicked: {}", panic_message(join));
                tracing::error!(partition, %error, "partition consumer stopped");
                status.set_error(error);
                ctx.metrics.consumer_restart(partition);
                (false, true)
            }
        };
        status.set_handle(None);
        if !lost {
            // Shutdown, handed back or keeper gone: let another instance take it at once.
            lease.release().await;
        }
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

/// Waits until this instance holds the partition's lease, taking it only
/// within its fair share. Returns a token that is cancelled on shutdown or
/// when the lease is lost, or `None` on shutdown.
async fn acquire(
    ctx: &ConsumerContext,
    lease: &Lease,
    status: &PartitionStatus,
    shutdown: &CancellationToken,
) -> Option<CancellationToken> {
    let partition = status.partition;
    let mut waiting_logged = false;
    loop {
        let total = ctx.partitions.len();
        let attempt = if ctx.membership.may_take(ctx.partitions.owned(), total) {
            lease.try_acquire().await
        } else {
            Ok(false) // at our fair share: leave it to another instance
        };
        match attempt {
            Ok(true) => {
                status.set_owned(true);
                status.set_settled();
                tracing::info!(partition, instance = %ctx.instance_id, "partition lease acquired");
                let owned = shutdown.child_token();
                status.set_handle(Some(owned.clone()));
                return Some(owned);
            }
            Ok(false) => {
                status.set_settled();
                // Whatever failed here before is another instance's partition now.
                status.clear_error();
                if !waiting_logged {
                    tracing::info!(partition, "partition left to another instance; standing by");
                    waiting_logged = true;
                }
            }
            Err(e) => tracing::warn!(partition, error = %e, "cannot take the partition lease"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(ctx.lease_ttl / 3) => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Stopped {
    Asked,
    Fatal,
}

/// Runs the pipeline, restarting it after errors and panics, until `stop` or
/// a fatal error.
async fn consume(
    ctx: &Arc<ConsumerContext>,
    status: &Arc<PartitionStatus>,
    stop: &CancellationToken,
) -> Stopped {
    let partition = status.partition;
    let mut backoff = Backoff::new(MAX_RESTART_DELAY);
    loop {
        let before = status.committed();
        // Its own task, so that a panic ends this run of the pipeline, not the partition.
        let run = tokio::spawn(pipeline(Arc::clone(ctx), Arc::clone(status), stop.clone()));
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
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let partition = status.partition;
    let topic = ctx.kafka_settings.topic.as_str();
    let mut committed = ctx.store.load_offset(topic, partition).await?;
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
    let fetcher_ctx = FetcherContext {
        settings: ctx.kafka_settings.clone(),
        status: Arc::clone(&status),
        metrics: Arc::clone(&ctx.metrics),
        faults: Arc::clone(&ctx.faults),
        buffer: Arc::new(Semaphore::new(ctx.kafka_settings.max_buffered_bytes)),
    };
    let mut fetch = tokio::spawn(fetch::run(client, start, fetcher_ctx, tx, stop_fetcher));
    status.set_running(true);
    let limits = batch::Limits::from(&ctx.batch_settings);

    loop {
        let closed = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            closed = batch::next_batch(&mut rx, limits) => closed,
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
        // The permits stay held until the batch is committed: the byte budget
        // covers records in flight, not only those waiting.
        let (records, _permits): (Vec<_>, Vec<_>) =
            closed.into_iter().map(|f| (f.record, f.permit)).unzip();
        committed = apply::commit(&ctx, &status, &records, committed).await?;
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
