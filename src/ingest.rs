//! Ingestion, one pipeline per partition, in the order the data goes:
//! [`fetch`] → [`batch`] → [`decode`] → plan ([`crate::domain::plan`]) →
//! [`apply`] (one transaction per batch, [`crate::store::write`]; the keys
//! of its rows, [`invalidate`], are deleted in the cache before its COMMIT,
//! [`crate::cache`]). [`partition`] runs and
//! restarts each pipeline while this instance holds the partition (on its
//! ownership session, [`crate::cluster::session_watch`]), and [`status`] is what
//! each one is doing. Offsets live in PostgreSQL, committed with each batch,
//! never in Kafka. The topic's partition list is read again periodically, and new
//! partitions get a pipeline without a restart.

pub mod apply;
pub mod batch;
pub mod bisect;
pub mod decode;
pub mod fetch;
pub mod invalidate;
pub mod partition;
pub mod status;

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    cache::{Cache, announcements::Announcements, outbox::OutboxError},
    cluster::{
        membership::Membership,
        session_watch::{self, Keeper, Sessions, Timing},
    },
    config::{BatchSettings, KafkaSettings},
    fault::Faults,
    kafka::{self, KafkaError},
    metrics::Metrics,
    store::{Store, StoreError},
};
use status::Partitions;

/// Errors that end a partition pipeline (which then restarts, unless fatal).
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
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
    pub store: Store,
    pub kafka: kafka::Kafka,
    pub kafka_settings: KafkaSettings,
    pub batch_settings: BatchSettings,
    /// This instance as a holder of partitions.
    pub ownership: Ownership,
    /// The topic's partitions as known here, and what each pipeline does.
    pub partitions: Partitions,
    /// Where each batch's cache invalidations go before its COMMIT.
    pub cache: Cache,
    /// This instance's announcements of undelivered cache invalidations.
    pub announcements: Arc<Announcements>,
    pub metrics: Arc<Metrics>,
    /// Faults injected by tests (none in production).
    pub faults: Arc<Faults>,
}

/// This instance as a holder of partitions: who it is, the session it holds
/// them on, and the instances it shares them with.
#[derive(Debug)]
pub struct Ownership {
    /// This process, as the holder of partitions.
    pub instance_id: uuid::Uuid,
    /// How often partitions are tried and the ownership session is checked,
    /// and how long the server keeps a silent session.
    pub timing: Timing,
    /// The ownership session partitions are held on.
    pub sessions: Sessions,
    /// The instances sharing the topic.
    pub membership: Membership,
}

/// Runs one pipeline per partition until `shutdown` is cancelled, and one for
/// every partition the topic gains meanwhile, beside the ownership session
/// they are held on. The session ends last, once every pipeline has stopped
/// and released its partition.
pub async fn run(ctx: Arc<ConsumerContext>, shutdown: CancellationToken) {
    let partitions = ctx.partitions.clone();
    let mut tasks = JoinSet::new();
    let end_session = CancellationToken::new();
    let keeper = tokio::spawn(keep_session(Arc::clone(&ctx), end_session.clone()));
    for status in partitions.snapshot() {
        tasks.spawn(partition::run(Arc::clone(&ctx), status, shutdown.clone()));
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
    end_session.cancel();
    if let Err(e) = keeper.await {
        tracing::error!(error = %e, "ownership session keeper failed");
    }
}

/// Keeps the ownership session until `stop`, and starts its keeper again if
/// it panics (its drop guard has already stopped every partition held on it).
async fn keep_session(ctx: Arc<ConsumerContext>, stop: CancellationToken) {
    let keeper = Keeper {
        store: ctx.store.clone(),
        topic: ctx.kafka_settings.topic.clone(),
        instance: ctx.ownership.instance_id,
        timing: ctx.ownership.timing,
    };
    loop {
        let (group, keeper, until) = (Arc::clone(&ctx), keeper.clone(), stop.clone());
        let run = tokio::spawn(async move {
            let rebalance = || {
                let total = group.partitions.len();
                let excess = (group.ownership.membership).excess(group.partitions.owned(), total);
                group.partitions.hand_back(excess);
            };
            session_watch::run(
                &keeper,
                &group.ownership.sessions,
                &group.ownership.membership,
                rebalance,
                &until,
            )
            .await;
        });
        match run.await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, "ownership session keeper panicked; starting it again")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ctx.ownership.timing.poll) => {}
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
    match ctx.kafka.partitions_of(topic).await {
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
