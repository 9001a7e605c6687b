//! The Kafka consumer: one pipeline per partition (fetcher → batcher → batch
//! transaction → cache invalidation), offsets kept in PostgreSQL since rskafka
//! has no consumer groups. The topic's partition list is read again
//! periodically, and new partitions get a pipeline without a restart.

pub mod apply;
pub mod batcher;
pub mod fault;
pub mod fetcher;
pub mod lease;
pub mod membership;
pub mod partition;
pub mod status;

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    cache::Cache,
    config::{BatchSettings, KafkaSettings},
    kafka::{self, KafkaError},
    metrics::Metrics,
    store::StoreError,
};
use fault::Faults;
use status::Partitions;

/// Errors that end a partition pipeline (which then restarts, unless fatal).
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("offset {offset} of partition {partition} is outside the broker's log (policy: fail)")]
    OffsetOutOfRange { partition: i32, offset: i64 },
    #[error("the fetcher stopped unexpectedly")]
    FetcherStopped,
    #[error("the {task} panicked: {message}")]
    Panicked { task: &'static str, message: String },
}

impl ConsumerError {
    /// Errors after which the partition is not restarted.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ConsumerError::OffsetOutOfRange { .. })
    }
}

/// What every partition pipeline shares.
#[derive(Debug)]
pub struct ConsumerContext {
    pub pool: Pool,
    pub kafka: Arc<rskafka::client::Client>,
    pub kafka_settings: KafkaSettings,
    pub batch_settings: BatchSettings,
    /// This process, as the owner of partition leases.
    pub instance_id: uuid::Uuid,
    /// How long a partition lease lasts without renewal.
    pub lease_ttl: std::time::Duration,
    /// The instances sharing the topic, and the partitions held here.
    pub membership: membership::Membership,
    pub cache: Option<Cache>,
    pub metrics: Arc<Metrics>,
    /// Faults injected by tests (none in production).
    pub faults: Arc<Faults>,
}

/// Runs one pipeline per partition until `shutdown` is cancelled, and one for
/// every partition the topic gains meanwhile.
pub async fn run(ctx: Arc<ConsumerContext>, partitions: Partitions, shutdown: CancellationToken) {
    let mut tasks = JoinSet::new();
    tasks.spawn(membership::run(Arc::clone(&ctx), shutdown.clone()));
    for status in partitions.snapshot() {
        tasks.spawn(partition::run(Arc::clone(&ctx), status, shutdown.clone()));
    }
    if let Some(cache) = ctx.cache.clone() {
        // Delivers invalidations that failed while Redis was away, even when no
        // new batch comes to carry them.
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => cache.retry_pending().await,
                }
            }
        });
    }
    let mut refresh = tokio::time::interval(ctx.kafka_settings.metadata_refresh());
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await; // the first tick is immediate; the list was just read
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = refresh.tick() => {
                for status in new_partitions(&ctx, &partitions).await {
                    tasks.spawn(partition::run(Arc::clone(&ctx), status, shutdown.clone()));
                }
            }
            Some(result) = tasks.join_next() => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "consumer task panicked");
                }
            }
        }
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result {
            tracing::error!(error = %e, "consumer task panicked");
        }
    }
}

/// Reads the topic's partitions again; returns the statuses of new ones.
/// Partitions never disappear: a topic cannot lose partitions in Kafka.
async fn new_partitions(
    ctx: &ConsumerContext,
    partitions: &Partitions,
) -> Vec<Arc<status::PartitionStatus>> {
    let topic = &ctx.kafka_settings.topic;
    match kafka::partitions_of(&ctx.kafka, topic).await {
        Ok(Some(ids)) => {
            let added = partitions.add_missing(&ids);
            for status in &added {
                tracing::info!(partition = status.partition, topic = %topic, "the topic gained a partition; consuming it");
                ctx.metrics.touch_partition(status.partition);
            }
            added
        }
        Ok(None) => {
            tracing::warn!(topic = %topic, "the topic is missing from the broker's metadata");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(topic = %topic, error = %e, "cannot refresh the topic's partitions");
            Vec::new()
        }
    }
}
