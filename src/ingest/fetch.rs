//! Reading one partition from the broker: a librdkafka consumer assigned to
//! the partition at the offset stored in PostgreSQL, whose prefetched records
//! are handed to the batcher a chunk at a time (whatever the consumer's queue
//! holds, up to `kafka.fetch_max_bytes`), with the end of the log when the
//! consumer reaches it. The configured policy applies when the offset is no
//! longer in the broker's log. Records waiting for their batch are bounded in
//! bytes: each chunk holds a reservation of its bytes from a per-partition
//! semaphore until the batch with its last record is committed.

use std::{collections::VecDeque, sync::Arc};

use futures_util::StreamExt;
use rdkafka::error::KafkaError as RdError;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{ConsumerError, batch::Chunk, status::PartitionStatus};
use crate::{
    config::{FaultStage, KafkaSettings, OffsetReset},
    fault::Faults,
    kafka::{
        Kafka, KafkaError, PartitionConsumer, Record, STATISTICS_INTERVAL,
        partition_consumer::{DRAIN_RECORDS, Fetched},
    },
    metrics::Metrics,
};

/// What a fetcher needs besides its partition.
#[derive(Debug)]
pub struct FetcherContext {
    pub kafka: Kafka,
    pub settings: KafkaSettings,
    pub status: Arc<PartitionStatus>,
    pub metrics: Arc<Metrics>,
    pub faults: Arc<Faults>,
    /// Bytes of records that may wait for their batch (half of
    /// `kafka.max_buffered_bytes`; librdkafka's queue holds the other half).
    pub buffer: Arc<Semaphore>,
}

/// A consumer just (re)assigned, not yet sure that the broker started at its
/// offset. Tansu 0.6 answers a fetch whose offset lies inside a record batch
/// with the *next* batch, silently skipping the rest of the batch; that
/// happens whenever the committed offset of a restarted consumer falls inside
/// a producer's batch. So when the first record is past the offset (or the
/// end of the log is reached past it with none), the consumer is assigned
/// again further back (growing steps) and walks forward, records before the
/// offset being dropped. Against Apache Kafka, which returns the batch holding
/// the offset, this only runs at gaps in the log (markers, compaction).
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// Where the consumer is assigned now.
    from: i64,
    /// How far back the next step goes.
    step: i64,
    /// Neither a record nor the end of the log by then: the broker answers
    /// with nothing although the log goes on (the batch holding the offset
    /// was the last one), so step back.
    deadline: tokio::time::Instant,
}

impl Probe {
    fn new(from: i64, step: i64, settings: &KafkaSettings) -> Self {
        Self {
            from,
            step,
            deadline: tokio::time::Instant::now() + probe_patience(settings),
        }
    }

    /// The next probe, further back; `None` at the log start.
    fn next(self, target: i64, low: i64, settings: &KafkaSettings) -> Option<Self> {
        step_back(self, target, low)
            .map(|from| Self::new(from, self.step.saturating_mul(4), settings))
    }
}

/// How long a fresh assignment may stay silent: two fetches held for the
/// whole wait, and some room.
fn probe_patience(settings: &KafkaSettings) -> std::time::Duration {
    let wait = u64::try_from(settings.fetch_max_wait_ms).unwrap_or(0);
    std::time::Duration::from_millis(2 * wait + 300)
}

/// Fetches from the `committed` offset (the log's start without one) until
/// cancelled, the batcher goes away, or an error.
pub async fn run(
    partition: i32,
    committed: Option<i64>,
    ctx: FetcherContext,
    tx: mpsc::Sender<Chunk<Record>>,
    stop: CancellationToken,
) -> Result<(), ConsumerError> {
    let settings = &ctx.settings;
    let (low, _) = ctx.kafka.log_bounds(&settings.topic, partition).await?;
    let mut target = match committed {
        Some(offset) if offset < low => reset(&ctx, partition, offset, Some(low)).await?,
        Some(offset) => offset,
        None => low,
    };
    tracing::info!(partition, start = target, "partition consumer starting");
    let consumer = ctx.kafka.partition_consumer(partition, target)?;
    let mut probe = (target > low).then(|| Probe::new(target, 64, settings));
    let mut sent = Sent {
        end: target,
        at_end: false,
    };
    let mut events = consumer.events();
    let mut tick = tokio::time::interval(STATISTICS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queued: VecDeque<Fetched> = VecDeque::with_capacity(DRAIN_RECORDS);
    // Whether the queue may hold more than was taken: the wake-up comes only
    // when it goes from empty to holding something, so it is drained again
    // before any wait.
    let mut more = true;
    loop {
        ctx.faults.maybe_panic(FaultStage::Fetcher, partition);
        let silent_until = probe.map(|p| p.deadline);
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            () = std::future::ready(()), if more => {}
            () = consumer.readable(), if !more => {}
            // Serves the consumer's events; a message here is unexpected
            // (records go to the partition's queue) but is not lost.
            Some(item) = events.next() => {
                queued.push_back(match item {
                    Ok(m) => Fetched::Record(Record::from_message(&m, settings.max_record_bytes)),
                    Err(RdError::PartitionEOF(_)) => Fetched::End(consumer.position().unwrap_or(target)),
                    Err(e) => Fetched::Failed(e.into()),
                });
            }
            _ = tick.tick() => {
                if let Some(to) = check_log_end(&ctx, &consumer, partition, target).await? {
                    consumer.assign(to)?;
                    queued.clear();
                    more = true;
                    target = to;
                    probe = None;
                }
                continue;
            }
            () = sleep_until(silent_until) => {
                probe = probe.and_then(|p| p.next(target, low, settings));
                if let Some(p) = probe {
                    tracing::debug!(partition, offset = target, from = p.from,
                        "nothing came from the offset; reading from further back");
                    consumer.assign(p.from)?;
                    queued.clear();
                    more = true;
                }
                continue;
            }
        };
        if ctx.faults.fetch_fails() {
            // Keep the lag honest while fetches fail: the end of the log that
            // the broker lists is a lower bound of it (Tansu 0.6 lists the
            // last batch's base offset + 1), so lag never reads 0 while
            // records wait.
            if let Ok((_, end)) = ctx.kafka.log_bounds(&settings.topic, partition).await {
                ctx.status.raise_high_watermark(end);
            }
            return Err(KafkaError::Injected.into());
        }
        let mut records: Vec<Record> = Vec::new();
        let (mut bytes, mut at_end, mut restart) = (0_usize, false, None);
        let mut dry = false;
        // Take what librdkafka has already fetched, without waiting.
        loop {
            if queued.is_empty() && !dry {
                dry = consumer.drain(&mut queued) < DRAIN_RECORDS;
            }
            let Some(item) = queued.pop_front() else {
                break;
            };
            match item {
                Fetched::Record(record) => {
                    let at = record.offset;
                    if at < target {
                        // A step back's walk forward: the broker started at or
                        // before the offset, so nothing was skipped.
                        probe = None;
                        continue;
                    }
                    if let Some(p) = probe.take().filter(|_| at > target) {
                        probe = p.next(target, low, settings);
                        if let Some(p) = probe {
                            restart = Some(p.from);
                            break;
                        }
                    }
                    bytes += record.size().max(1);
                    records.push(record);
                    target = at + 1;
                }
                Fetched::End(position) => {
                    at_end = true;
                    if position < target {
                        // The whole log lies before the offset: the broker
                        // lost records, or the topic was created again.
                        tracing::warn!(
                            partition,
                            offset = target,
                            end = position,
                            "the broker's log ends before this consumer's offset"
                        );
                        restart = Some(reset(&ctx, partition, target, None).await?);
                        probe = None;
                        break;
                    }
                    if let Some(p) = probe.take().filter(|_| position > target) {
                        // The log goes on past the offset, and nothing came.
                        probe = p.next(target, low, settings);
                        if let Some(p) = probe {
                            restart = Some(p.from);
                            break;
                        }
                    }
                    // Past transaction markers (or aborted records) at the end.
                    target = target.max(position);
                    ctx.status.set_high_watermark(target);
                    break;
                }
                Fetched::Failed(e) => {
                    if e.is_offset_out_of_range() {
                        restart = Some(reset(&ctx, partition, target, None).await?);
                        probe = None;
                        break;
                    }
                    // librdkafka retries on its own; the partition shows the error.
                    tracing::warn!(partition, error = %e, "fetch failed; librdkafka retries");
                    ctx.status.set_error(e.to_string());
                    break;
                }
            }
            if bytes >= chunk_bytes(settings) {
                break;
            }
        }
        more = !queued.is_empty() || !dry;
        if let Some(from) = restart {
            consumer.assign(from)?;
            queued.clear();
            more = true;
            if probe.is_none() {
                target = from; // a reset: the new offset is the start
            }
            continue;
        }
        if !records.is_empty() && !at_end {
            // Caught up when the last fetch's high watermark is no further
            // than this chunk: the batch need not wait for more.
            if let Some(high) = consumer.fetched_high_watermark() {
                ctx.status.raise_high_watermark(high);
                at_end = target >= high;
            }
        }
        // An empty chunk tells the batcher only what it does not know yet:
        // that the log ends here, or ends past markers.
        if records.is_empty() && (!at_end || (target <= sent.end && sent.at_end)) {
            continue;
        }
        sent = Sent {
            end: target,
            at_end,
        };
        ctx.status.clear_error();
        ctx.status.raise_high_watermark(target);
        let weight = weight(&records, settings);
        let reservation = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            reservation = Arc::clone(&ctx.buffer).acquire_many_owned(weight) => reservation,
        };
        let Ok(reservation) = reservation else {
            return Ok(()); // the semaphore is never closed; treat it as a stop
        };
        let chunk = Chunk {
            records,
            reservation,
            last_in_log: at_end,
            end: target,
        };
        if tx.send(chunk).await.is_err() {
            return Ok(());
        }
    }
}

/// What the batcher last heard from this fetcher.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// The end of the last chunk.
    end: i64,
    /// Whether it reached the end of the log.
    at_end: bool,
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The most a chunk holds, bytes: one fetch's worth.
fn chunk_bytes(settings: &KafkaSettings) -> usize {
    usize::try_from(settings.fetch_max_bytes)
        .unwrap_or(1 << 20)
        .max(1)
}

/// Where a probe goes next: further back from `target`, never before the log
/// start; `None` once it started there already (the gap is real).
fn step_back(probe: Probe, target: i64, low: i64) -> Option<i64> {
    (probe.from > low).then(|| target.saturating_sub(probe.step).max(low))
}

/// Reads the end of the log that the consumer's last fetch reported, from
/// librdkafka's statistics: it keeps the lag current while a backlog is read,
/// and a log that ends before the consumer's position (the broker lost it, or
/// the topic was deleted and created again) is out of range. Returns where to
/// resume in that case.
async fn check_log_end(
    ctx: &FetcherContext,
    consumer: &PartitionConsumer,
    partition: i32,
    target: i64,
) -> Result<Option<i64>, ConsumerError> {
    let Some(ends) = consumer.log_ends() else {
        return Ok(None);
    };
    ctx.status.raise_high_watermark(ends.stable.max(target));
    if ends.high >= 0 && ends.high < ends.fetching.min(target) {
        tracing::warn!(
            partition,
            offset = target,
            end = ends.high,
            "the broker's log ends before this consumer's position"
        );
        return reset(ctx, partition, target, Some(ends.low.max(0)))
            .await
            .map(Some);
    }
    Ok(None)
}

/// The bytes a chunk reserves from the partition's byte budget: a record
/// counts for at least one, and a chunk for at most the whole budget
/// (one larger than that goes alone).
fn weight(records: &[Record], settings: &KafkaSettings) -> u32 {
    let bytes: usize = records.iter().map(|r| r.size().max(1)).sum();
    u32::try_from(bytes.min(settings.buffered_half())).unwrap_or(u32::MAX)
}

/// Applies the out-of-range policy; returns the offset to resume from. The
/// `earliest` offset, when not known yet, is asked of the broker only when
/// the policy resumes from it.
async fn reset(
    ctx: &FetcherContext,
    partition: i32,
    offset: i64,
    earliest: Option<i64>,
) -> Result<i64, ConsumerError> {
    match ctx.settings.offset_out_of_range {
        OffsetReset::Fail => Err(ConsumerError::OffsetOutOfRange { partition, offset }),
        OffsetReset::Earliest => {
            let earliest = match earliest {
                Some(earliest) => earliest,
                None => {
                    ctx.kafka
                        .log_bounds(&ctx.settings.topic, partition)
                        .await?
                        .0
                }
            };
            ctx.metrics.offset_reset(partition);
            tracing::warn!(
                partition,
                offset,
                earliest,
                "offset is outside the broker's log; resuming from the earliest offset"
            );
            Ok(earliest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_steps_back_in_growing_steps_down_to_the_log_start() {
        let settings = crate::config::Settings::built_in().unwrap().kafka;
        let p = Probe::new(1000, 64, &settings);
        let p = p.next(1000, 0, &settings).unwrap();
        assert_eq!((p.from, p.step), (936, 256));
        let p = p.next(1000, 900, &settings).unwrap();
        assert_eq!((p.from, p.step), (900, 1024));
        assert!(
            p.next(1000, 900, &settings).is_none(),
            "at the log start: a real gap"
        );
    }
}
