//! Building the application from its settings (database, schema, topic, cache,
//! metrics) and running it until the stop signal, then within a bounded grace
//! period. Tests build it exactly as `main` does, on their own database,
//! topic and port.

use std::{net::SocketAddr, sync::Arc};

use tokio_util::sync::CancellationToken;

use super::{check, shutdown::GRACE_PERIOD};
use crate::{
    api,
    cache::{Cache, CacheError, announcements::Announcements, outbox_watch::OutboxWatch},
    cluster::{
        membership::Membership,
        session_watch::{Sessions, Timing},
    },
    config::Settings,
    domain::event::RejectReason,
    fault::Faults,
    ingest::{
        self, ConsumerContext, Ownership,
        status::{PartitionStatus, Partitions},
    },
    kafka::{self, KafkaError},
    metrics::{KnownLabels, Metrics, MetricsError, PartitionSample},
    retry::Class,
    store::{self, Step, Store, StoreError},
};

/// Longest start-up delay spent delivering the cache outbox.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the service could not start or stopped with an error. Each message
/// holds its cause's text, so no cause is chained again (`main` prints the
/// chain with `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// A built, not yet running, service.
#[derive(Debug)]
pub struct Application {
    settings: Settings,
    store: Store,
    kafka: kafka::Kafka,
    partitions: Partitions,
    metrics: Arc<Metrics>,
    cache: Cache,
    listener: tokio::net::TcpListener,
}

/// Creates the database if missing and applies pending migrations; returns
/// the store (its pool built once) and the versions applied.
pub async fn migrate(settings: &Settings) -> Result<(Store, Vec<&'static str>), StoreError> {
    store::ensure_database_with(&settings.postgres).await?;
    let store = Store::new(&settings.postgres)?;
    let applied = store.migrate().await?;
    Ok((store, applied))
}

impl Application {
    /// Migrates the database, connects to the broker (creating the topic when
    /// configured), starts the cache client and binds the HTTP port.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let (store, applied) = migrate(&settings).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied migrations");
        }
        let (kafka, partitions) = kafka::connect_topic(&settings.kafka).await?;
        let partitions = Partitions::new(&partitions, settings.consumer.stall_after());
        let metrics = Arc::new(Metrics::new()?);
        let sampled = partitions.clone();
        let pool = store.clone();
        let consumer = kafka.clone();
        metrics.observe(
            Arc::new(move || sampled.snapshot().iter().map(|s| sample(s)).collect()),
            Arc::new(move || pool.connections()),
            Arc::new(move || {
                let (held, parked) = consumer.assigned();
                (held.len(), parked.len())
            }),
        );
        metrics.touch(&KnownLabels {
            steps: Step::BATCH.iter().map(|s| s.as_str()).collect(),
            classes: Class::ALL.iter().map(|c| c.as_str()).collect(),
            reasons: RejectReason::ALL.iter().map(|r| r.as_str()).collect(),
        });
        let cache = Cache::start(&settings.redis, Arc::clone(&metrics)).await?;
        let addr = settings.http.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|cause| StartupError::Listen { addr, cause })?;
        Ok(Self {
            settings,
            store,
            kafka,
            partitions,
            metrics,
            cache,
            listener,
        })
    }

    /// The address the HTTP API listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.settings.http.addr)
    }

    /// Live state of each partition's consumer, as known now.
    pub fn statuses(&self) -> Vec<Arc<PartitionStatus>> {
        self.partitions.snapshot()
    }

    /// The partitions this instance knows; grows with the topic.
    pub fn partitions(&self) -> Partitions {
        self.partitions.clone()
    }

    /// The metric instruments of this instance.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs the consumer and the HTTP API until `shutdown` is cancelled, then
    /// gives them [`GRACE_PERIOD`] to finish.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let announcements = Arc::new(Announcements::new(
            self.settings.outbox.permit(),
            self.settings.outbox.max_keys,
        ));
        let ctx = Arc::new(ConsumerContext {
            store: self.store.clone(),
            kafka: self.kafka.clone(),
            kafka_settings: self.settings.kafka.clone(),
            batch_settings: self.settings.batch.clone(),
            ownership: Ownership {
                instance_id: uuid::Uuid::new_v4(),
                timing: Timing {
                    poll: self.settings.consumer.takeover_poll(),
                    silence: self.settings.consumer.lease_ttl(),
                },
                sessions: Sessions::default(),
                membership: Membership::default(),
            },
            partitions: self.partitions.clone(),
            cache: self.cache.clone(),
            announcements: Arc::clone(&announcements),
            metrics: Arc::clone(&self.metrics),
            faults: Arc::new(Faults::from_settings(&self.settings)),
        });
        let role = self.settings.role;
        tracing::info!(
            ?role,
            topic = %self.settings.kafka.topic,
            partitions = self.partitions.len(),
            http = %self.local_addr(),
            "warehouse-monitor running"
        );
        // Beside the service, never before it: a server that is slow to
        // answer must not delay serving.
        tokio::spawn(check::at_start(
            self.settings.clone(),
            self.store.clone(),
            self.kafka.clone(),
            shutdown.clone(),
        ));
        // Leftover invalidations first, so that reads may use the cache from the start.
        let watch = OutboxWatch::new(
            self.store.clone(),
            self.cache.clone(),
            announcements,
            Arc::clone(&self.metrics),
            self.settings.outbox.clone(),
        );
        if tokio::time::timeout(SETTLE_TIMEOUT, watch.settle())
            .await
            .is_err()
        {
            tracing::warn!(
                "the cache outbox was not settled in time; reads bypass the cache until it is"
            );
        }
        let watching = tokio::spawn(watch.run(shutdown.clone()));
        let consumer = if role.consumes() {
            tokio::spawn(ingest::run(ctx, shutdown.clone()))
        } else {
            tokio::spawn(async {}) // an API instance never takes partitions
        };
        let state = api::State {
            store: self.store.clone(),
            cache: self.cache.clone(),
            metrics: Arc::clone(&self.metrics),
            partitions: self.partitions.clone(),
            role,
            request_timeout: self.settings.http.request_timeout(),
        };
        let http = api::serve(self.listener, state, shutdown.clone());

        let http_result = http.await;
        // The HTTP server returns once the signal came (or it failed): stop the rest.
        shutdown.cancel();
        if tokio::time::timeout(GRACE_PERIOD, consumer).await.is_err() {
            tracing::warn!("consumer did not stop within the grace period");
        }
        if tokio::time::timeout(GRACE_PERIOD, watching).await.is_err() {
            tracing::warn!("the cache outbox watch did not stop within the grace period");
        }
        self.cache.quit().await;
        self.metrics.shutdown();
        self.store.close();
        tracing::info!("warehouse-monitor stopped");
        http_result.map_err(StartupError::Http)
    }
}

/// What the gauges read of one partition.
fn sample(s: &PartitionStatus) -> PartitionSample {
    PartitionSample {
        partition: s.partition,
        owned: s.is_owned(),
        lag: s.lag(),
        committed: s.committed(),
        since_commit: s.since_progress().map(|d| d.as_secs_f64()),
        stalled: s.is_stalled(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `main` prints: the whole chain, each cause once.
    fn printed(e: StartupError) -> String {
        format!("{:#}", anyhow::Error::from(e))
    }

    #[test]
    fn no_error_text_repeats_its_cause() {
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let listen = printed(StartupError::Listen {
            addr: "127.0.0.1:1".parse().unwrap(),
            cause: io(),
        });
        assert_eq!(listen, "cannot listen on 127.0.0.1:1: address in use");
        assert_eq!(listen.matches("address in use").count(), 1);
        let offsets = printed(StartupError::Store(StoreError::OffsetConflict {
            topic: "t".into(),
            partition: 0,
            expected: Some(1),
        }));
        assert_eq!(offsets.matches("another consumer").count(), 1, "{offsets}");
    }
}
