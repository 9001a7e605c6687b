//! The Kafka consumer: one pipeline per partition (fetcher → batcher → batch
//! transaction → cache invalidation), offsets kept in PostgreSQL since rskafka
//! has no consumer groups.

pub mod batcher;
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
    kafka::KafkaError,
    metrics::Metrics,
    store::StoreError,
};
use status::PartitionStatus;

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
    #[error("the fetcher panicked: {0}")]
    FetcherPanicked(String),
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
}

/// Runs one pipeline per partition until `shutdown` is cancelled.
pub async fn run(
    ctx: Arc<ConsumerContext>,
    statuses: Vec<Arc<PartitionStatus>>,
    shutdown: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    tasks.spawn(membership::run(Arc::clone(&ctx), shutdown.clone()));
    for status in statuses {
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
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result {
            tracing::error!(error = %e, "consumer task panicked");
        }
    }
}
