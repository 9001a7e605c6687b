//! Every metric instrument of the service, declared here and nowhere else, with
//! low-cardinality labels; recorded once per batch or per request, never per
//! event. Exported through OpenTelemetry's Prometheus exporter into a registry
//! owned by the application instance (so that tests running several instances
//! in one process each see their own numbers).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _},
};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};
use time::OffsetDateTime;

/// One partition as the gauges see it at scrape time: plain numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionSample {
    pub partition: i32,
    /// This instance holds it.
    pub owned: bool,
    pub lag: i64,
    pub committed: Option<i64>,
    /// Seconds since the last commit (or since it was taken); `None` when not held.
    pub since_commit: Option<f64>,
    pub stalled: bool,
}

/// Reads every partition's sample at scrape time.
pub type PartitionSource = Arc<dyn Fn() -> Vec<PartitionSample> + Send + Sync>;
/// Reads the connection pools at scrape time: (pool name, connections open, idle).
pub type PoolSource = Arc<dyn Fn() -> Vec<(&'static str, usize, usize)> + Send + Sync>;

/// The partitions in the Kafka consumer's assignment now: held by a reader,
/// and parked (released before their assignment had started; see
/// `kafka::consumer`).
pub type AssignmentSource = Arc<dyn Fn() -> (usize, usize) + Send + Sync>;

/// What one committed batch did, in plain numbers.
/// The values a label may take, for the series that appear at 0 before
/// their first event. The wiring gives them, from the types that own them,
/// so that this module imports nothing of the service.
#[derive(Debug, Clone, Default)]
pub struct KnownLabels {
    /// The steps of a batch that may fail (`step`).
    pub steps: Vec<&'static str>,
    /// The classes of failure (`class`).
    pub classes: Vec<&'static str>,
    /// The reasons an event is rejected (`reason`).
    pub reasons: Vec<&'static str>,
}

#[derive(Debug, Clone)]
pub struct BatchFigures {
    pub partition: i32,
    pub consumed: usize,
    pub applied: usize,
    pub duplicates: usize,
    /// Rejected records per reason code.
    pub rejected: Vec<(&'static str, u64)>,
    pub negative_stock: usize,
    /// Earliest envelope `time` among the applied events.
    pub oldest_emitted_at: Option<OffsetDateTime>,
    /// Earliest Kafka record timestamp among the batch's records (those the
    /// service can represent).
    pub oldest_record_at: Option<OffsetDateTime>,
    /// Redis acknowledged every key of the batch before its COMMIT (none went
    /// to the outbox).
    pub invalidated_before_commit: bool,
    pub took: Duration,
}

/// Outcome of a cache look-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Error,
}

/// The instruments, and the registry they are exported to.
#[derive(Debug)]
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    meter: Meter,
    consumed: Counter<u64>,
    applied: Counter<u64>,
    duplicates: Counter<u64>,
    rejected: Counter<u64>,
    batches: Counter<u64>,
    negative_stock: Counter<u64>,
    batch_size: Histogram<u64>,
    batch_duration: Histogram<f64>,
    commit_delay: Histogram<f64>,
    record_commit_delay: Histogram<f64>,
    invalidation_delay: Histogram<f64>,
    offset_resets: Counter<u64>,
    consumer_restarts: Counter<u64>,
    batch_failures: Counter<u64>,
    cache_requests: Counter<u64>,
    cache_near_hits: Counter<u64>,
    cache_invalidations: Counter<u64>,
    db_fallbacks: Counter<u64>,
    outbox_rows: Gauge<i64>,
    outbox_queued: Counter<u64>,
    outbox_marked: Counter<u64>,
    outbox_delivered: Counter<u64>,
    cache_distrusted: Counter<u64>,
    cache_epochs: Counter<u64>,
    http_duration: Histogram<f64>,
    observed: OnceLock<()>,
}

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the Prometheus exporter: {0}")]
pub struct MetricsError(String);

const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const DELAY_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0,
];
/// Freshness: from a record's Kafka timestamp to its commit, and from a
/// commit to its cache invalidation; milliseconds matter here.
const FRESHNESS_BUCKETS: [f64; 14] = [
    0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];
const SIZE_BUCKETS: [f64; 10] = [
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_scope_info()
            .without_target_info()
            .build()
            .map_err(|e| MetricsError(e.to_string()))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("warehouse-monitor");
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let seconds = |name: &'static str, help: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_description(help)
                .with_unit("s")
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Ok(Self {
            consumed: counter("wm_events_consumed", "Kafka records read and committed"),
            applied: counter("wm_events_applied", "Events recorded as new"),
            duplicates: counter(
                "wm_events_duplicate",
                "Events identical to one already recorded",
            ),
            rejected: counter("wm_events_rejected", "Records rejected, by reason"),
            batches: counter("wm_batches_committed", "Batches committed, by partition"),
            negative_stock: counter(
                "wm_stock_negative_updates",
                "Stock rows left below zero by a batch (departures seen before arrivals)",
            ),
            batch_size: meter
                .u64_histogram("wm_batch_size")
                .with_description("Records per committed batch")
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build(),
            batch_duration: seconds(
                "wm_batch_apply_duration",
                "Time to apply and commit one batch",
                &SECONDS_BUCKETS,
            ),
            commit_delay: seconds(
                "wm_event_commit_delay",
                "From the oldest event's envelope time to its batch's commit",
                &DELAY_BUCKETS,
            ),
            record_commit_delay: seconds(
                "wm_record_commit_delay",
                "From the oldest record's Kafka timestamp (the broker's or the producer's \
                 clock) to its batch's commit: how fresh the stored state is",
                &FRESHNESS_BUCKETS,
            ),
            invalidation_delay: seconds(
                "wm_invalidation_delay",
                "From a batch's commit to the acknowledgement of its last cache invalidation \
                 (0 when Redis acknowledged them before the COMMIT; the outbox's delivery otherwise)",
                &FRESHNESS_BUCKETS,
            ),
            offset_resets: counter(
                "wm_offset_resets",
                "Stored offsets found outside the broker's log",
            ),
            consumer_restarts: counter(
                "wm_consumer_restarts",
                "Partition pipelines restarted after an error",
            ),
            batch_failures: counter(
                "wm_batch_failures",
                "Failed batch transactions, by failing step and error class \
                 (transient: retried; data: split and quarantined; other: pipeline restarted)",
            ),
            cache_requests: counter("wm_cache_requests", "Cache look-ups, by result"),
            cache_near_hits: counter(
                "wm_cache_near_hits",
                "Cache hits answered from this instance's near cache, without a Redis round trip",
            ),
            cache_invalidations: counter(
                "wm_cache_invalidations",
                "Cache keys deleted by batches (before their COMMIT) and outbox deliveries",
            ),
            db_fallbacks: counter(
                "wm_cache_bypassed",
                "Reads answered from PostgreSQL without asking Redis: Redis unreachable, \
                 or no cache permit (the cache outbox is not known to be empty)",
            ),
            outbox_rows: meter
                .i64_gauge("wm_cache_outbox_rows")
                .with_description(
                    "Rows in the cache outbox at this instance's last look: invalidations \
                     Redis has not acknowledged, and announcements of them",
                )
                .build(),
            outbox_queued: counter(
                "wm_cache_outbox_queued",
                "Batches committed with their invalidations in the cache outbox \
                 (Redis did not acknowledge them before the COMMIT)",
            ),
            outbox_marked: counter(
                "wm_cache_outbox_marked",
                "Batches committed under the outbox's mark instead of their keys (the \
                 outbox held outbox.max_keys keys, or the mark was pending already)",
            ),
            outbox_delivered: counter(
                "wm_cache_outbox_delivered",
                "Cache outbox rows delivered to Redis (keys, the mark, or expired \
                 announcements) and deleted",
            ),
            cache_distrusted: counter(
                "wm_cache_distrusted",
                "Cache epochs this instance stopped believing because Redis lost writes, \
                 by cause (flush: Redis pushed a flush or reload; marker: the epoch's \
                 marker was missing or another server's; invalidation: a delete found \
                 the marker missing)",
            ),
            cache_epochs: counter(
                "wm_cache_epochs_begun",
                "New cache epochs this instance began (deliveries of the outbox's mark): \
                 every older cache entry became unreachable",
            ),
            http_duration: seconds(
                "wm_http_request_duration",
                "HTTP request duration, by route and status",
                &SECONDS_BUCKETS,
            ),
            registry,
            provider,
            meter,
            observed: OnceLock::new(),
        })
    }

    /// Registers the gauges read at scrape time: lag, committed offset, time
    /// since the last commit and the stalled flag per partition, and pool
    /// connections, the consumer's assignment. Only the first call has an
    /// effect.
    pub fn observe(
        &self,
        partitions: PartitionSource,
        pool: PoolSource,
        assignment: AssignmentSource,
    ) {
        if self.observed.set(()).is_err() {
            return;
        }
        for s in partitions() {
            self.touch_partition(s.partition);
        }
        self.db_fallbacks.add(0, &[]);
        self.outbox_queued.add(0, &[]);
        self.outbox_marked.add(0, &[]);
        self.outbox_delivered.add(0, &[]);
        self.cache_epochs.add(0, &[]);
        for cause in ["flush", "marker", "invalidation"] {
            self.cache_distrusted
                .add(0, &[KeyValue::new("cause", cause)]);
        }
        let p = Arc::clone(&partitions);
        self.meter
            .i64_observable_gauge("wm_consumer_partitions_owned")
            .with_description("Partitions this instance holds")
            .with_callback(move |o| {
                let owned = p().iter().filter(|s| s.owned).count();
                o.observe(i64::try_from(owned).unwrap_or(i64::MAX), &[]);
            })
            .build();
        self.meter
            .i64_observable_gauge("wm_consumer_partitions_assigned")
            .with_description(
                "Partitions in the Kafka consumer's assignment, by state: held (read by this \
                 instance) or parked (released, paused until its stop is known to be served)",
            )
            .with_callback(move |o| {
                let (held, parked) = assignment();
                for (state, n) in [("held", held), ("parked", parked)] {
                    let n = i64::try_from(n).unwrap_or(i64::MAX);
                    o.observe(n, &[KeyValue::new("state", state)]);
                }
            })
            .build();
        let p = Arc::clone(&partitions);
        self.meter
            .i64_observable_gauge("wm_consumer_lag")
            .with_description("High watermark minus committed offset, by partition held here")
            .with_callback(move |o| {
                for s in p().iter().filter(|s| s.owned) {
                    o.observe(s.lag, &partition_label(s.partition));
                }
            })
            .build();
        let p = Arc::clone(&partitions);
        self.meter
            .f64_observable_gauge("wm_consumer_seconds_since_commit")
            .with_description(
                "Seconds since the last commit (or since the partition was taken), by partition held here",
            )
            .with_callback(move |o| {
                for s in p() {
                    if let Some(since) = s.since_commit {
                        o.observe(since, &partition_label(s.partition));
                    }
                }
            })
            .build();
        let p = Arc::clone(&partitions);
        self.meter
            .i64_observable_gauge("wm_consumer_stalled")
            .with_description(
                "1 when records wait on a partition held here and nothing was committed \
                 for consumer.stall_after_ms",
            )
            .with_callback(move |o| {
                for s in p().iter().filter(|s| s.owned) {
                    o.observe(i64::from(s.stalled), &partition_label(s.partition));
                }
            })
            .build();
        self.meter
            .i64_observable_gauge("wm_consumer_committed_offset")
            .with_description("Next offset committed to PostgreSQL, by partition")
            .with_callback(move |o| {
                for s in partitions() {
                    if let Some(c) = s.committed {
                        o.observe(c, &partition_label(s.partition));
                    }
                }
            })
            .build();
        self.meter
            .i64_observable_gauge("wm_db_pool_connections")
            .with_description("PostgreSQL pool connections, by pool and state")
            .with_callback(move |o| {
                for (name, size, idle) in pool() {
                    let in_use = i64::try_from(size.saturating_sub(idle)).unwrap_or(i64::MAX);
                    let idle = i64::try_from(idle).unwrap_or(i64::MAX);
                    o.observe(
                        in_use,
                        &[
                            KeyValue::new("pool", name),
                            KeyValue::new("state", "in_use"),
                        ],
                    );
                    o.observe(
                        idle,
                        &[KeyValue::new("pool", name), KeyValue::new("state", "idle")],
                    );
                }
            })
            .build();
    }

    /// Makes a partition's counters appear (at 0) before their first event.
    pub fn touch_partition(&self, partition: i32) {
        self.offset_resets.add(0, &partition_label(partition));
        self.consumer_restarts.add(0, &partition_label(partition));
    }

    /// Records one failed batch transaction.
    pub fn batch_failed(&self, step: &'static str, class: &'static str) {
        self.batch_failures.add(1, &failure_labels(step, class));
    }

    /// Records one committed batch.
    pub fn batch_applied(&self, batch: &BatchFigures) {
        self.consumed.add(count(batch.consumed), &[]);
        self.applied.add(count(batch.applied), &[]);
        self.duplicates.add(count(batch.duplicates), &[]);
        for (reason, n) in &batch.rejected {
            self.rejected.add(*n, &[KeyValue::new("reason", *reason)]);
        }
        self.batches.add(1, &partition_label(batch.partition));
        self.negative_stock.add(count(batch.negative_stock), &[]);
        self.batch_size.record(count(batch.consumed), &[]);
        self.batch_duration.record(batch.took.as_secs_f64(), &[]);
        if let Some(oldest) = batch.oldest_emitted_at {
            let delay = (OffsetDateTime::now_utc() - oldest)
                .as_seconds_f64()
                .max(0.0);
            self.commit_delay.record(delay, &[]);
        }
        if let Some(oldest) = batch.oldest_record_at {
            let delay = (OffsetDateTime::now_utc() - oldest)
                .as_seconds_f64()
                .max(0.0);
            self.record_commit_delay.record(delay, &[]);
        }
        if batch.invalidated_before_commit {
            self.invalidation_delay.record(0.0, &[]);
        }
    }

    /// Records invalidations the outbox delivered, `delay` after the commit
    /// of the batch that queued them.
    pub fn invalidation_delivered(&self, delay: Duration) {
        self.invalidation_delay.record(delay.as_secs_f64(), &[]);
    }

    /// Makes every series of `labels` appear (at 0) before its first event,
    /// so that dashboards and alerts see it.
    pub fn touch(&self, labels: &KnownLabels) {
        for step in &labels.steps {
            for class in &labels.classes {
                self.batch_failures.add(0, &failure_labels(step, class));
            }
        }
        for reason in &labels.reasons {
            self.rejected.add(0, &[KeyValue::new("reason", *reason)]);
        }
        for result in ["hit", "miss", "error"] {
            self.cache_requests
                .add(0, &[KeyValue::new("result", result)]);
        }
        self.cache_near_hits.add(0, &[]);
    }

    pub fn offset_reset(&self, partition: i32) {
        self.offset_resets
            .add(1, &[KeyValue::new("partition", i64::from(partition))]);
    }

    pub fn consumer_restart(&self, partition: i32) {
        self.consumer_restarts
            .add(1, &[KeyValue::new("partition", i64::from(partition))]);
    }

    pub fn cache(&self, result: CacheResult) {
        let label = match result {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Error => "error",
        };
        self.cache_requests
            .add(1, &[KeyValue::new("result", label)]);
    }

    pub fn cache_near_hit(&self) {
        self.cache_near_hits.add(1, &[]);
    }

    pub fn cache_invalidated(&self, keys: usize) {
        self.cache_invalidations.add(count(keys), &[]);
    }

    pub fn cache_bypassed(&self) {
        self.db_fallbacks.add(1, &[]);
    }

    /// Rows in the cache outbox, as an instance's look found them.
    pub fn outbox_rows(&self, rows: i64) {
        self.outbox_rows.record(rows, &[]);
    }

    /// One batch committed with its invalidations in the outbox (`mark`:
    /// under the mark, its keys not stored).
    pub fn outbox_queued(&self, mark: bool) {
        self.outbox_queued.add(1, &[]);
        if mark {
            self.outbox_marked.add(1, &[]);
        }
    }

    /// A cache epoch distrusted, for `cause` (flush, marker, invalidation).
    pub fn cache_distrusted(&self, cause: &'static str) {
        self.cache_distrusted
            .add(1, &[KeyValue::new("cause", cause)]);
    }

    /// A new cache epoch begun by this instance.
    pub fn cache_epoch_begun(&self) {
        self.cache_epochs.add(1, &[]);
    }

    /// Outbox rows delivered and deleted.
    pub fn outbox_delivered(&self, rows: usize) {
        self.outbox_delivered.add(count(rows), &[]);
    }

    pub fn http_request(&self, route: &'static str, status: u16, took: Duration) {
        self.http_duration.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("route", route),
                KeyValue::new("status", i64::from(status)),
            ],
        );
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
            return String::new();
        }
        // The text encoder writes UTF-8 only.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Flushes nothing (pull exporter) but ends the provider cleanly.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "metrics provider did not shut down cleanly");
        }
    }
}

/// A count as a counter increment (a `usize` always fits in 64 bits here).
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn partition_label(partition: i32) -> [KeyValue; 1] {
    [KeyValue::new("partition", i64::from(partition))]
}

fn failure_labels(step: &'static str, class: &'static str) -> [KeyValue; 2] {
    [KeyValue::new("step", step), KeyValue::new("class", class)]
}
