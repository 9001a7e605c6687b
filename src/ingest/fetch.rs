//! Reading one partition from the broker, for its batches: the partition's
//! reader ([`PartitionReader`]) starts at the offset stored in PostgreSQL,
//! and what librdkafka prefetched is handed to the batcher a chunk at a time
//! (whatever the partition's queue holds, up to `kafka.fetch_max_bytes`),
//! with the end of the log when the reader reaches it.
//!
//! The fetcher waits for the queue, takes what it holds, and hands it over;
//! besides that, its position only ever moves by a seek: when the offset is
//! no longer in the broker's log (the configured policy applies), and when
//! the broker may have skipped records at the start ([`OffsetProbe`], a
//! broker workaround of its own). Records waiting for their batch are bounded
//! in bytes: each chunk holds a reservation of its bytes from a per-partition
//! semaphore until the batch with its last record is committed.

use std::{collections::VecDeque, sync::Arc};

use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{ConsumerError, batch::Chunk, status::PartitionStatus};
use crate::{
    config::{FaultStage, KafkaSettings, OffsetReset},
    fault::Faults,
    kafka::{
        Kafka, PartitionReader, Record, STATISTICS_INTERVAL,
        offset_probe::{OffsetProbe, Verdict},
        partition_reader::{DRAIN_RECORDS, Fetched},
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

/// Fetches from the `committed` offset (the log's start without one) until
/// cancelled, the batcher goes away, or an error. The reader is locked for
/// the whole run: a fetcher still stopping keeps the next one waiting, so
/// that two never drain the same queue.
pub async fn run(
    reader: Arc<Mutex<PartitionReader>>,
    committed: Option<i64>,
    ctx: FetcherContext,
    tx: mpsc::Sender<Chunk<Record>>,
    stop: CancellationToken,
) -> Result<(), ConsumerError> {
    let reader = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        reader = reader.lock_owned() => reader,
    };
    let mut fetcher = Fetcher::start(&reader, committed, &ctx).await?;
    loop {
        let ready = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ready = fetcher.next() => ready?,
        };
        let weight = weight(&ready.records, &ctx.settings);
        let reservation = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            reservation = Arc::clone(&ctx.buffer).acquire_many_owned(weight) => reservation,
        };
        let Ok(reservation) = reservation else {
            return Ok(()); // the semaphore is never closed; treat it as a stop
        };
        let chunk = Chunk {
            records: ready.records,
            reservation,
            last_in_log: ready.at_end,
            end: ready.end,
        };
        if tx.send(chunk).await.is_err() {
            return Ok(());
        }
    }
}

/// Records ready for the batcher.
#[derive(Debug)]
struct Ready {
    records: Vec<Record>,
    /// The log ended after them.
    at_end: bool,
    /// The offset after them (and after the markers that end the log).
    end: i64,
}

/// One partition's fetching: where it is, and what it took from the queue
/// and has not handed over yet.
struct Fetcher<'a> {
    reader: &'a PartitionReader,
    ctx: &'a FetcherContext,
    partition: i32,
    /// The next offset wanted.
    position: i64,
    /// The broker's first answer after a start, not judged yet.
    probe: Option<OffsetProbe>,
    /// Drained from librdkafka and not taken yet.
    queued: VecDeque<Fetched>,
    /// Whether the queue may hold more than was drained: the wake-up comes
    /// only when it goes from empty to holding something, so it is drained
    /// again before any wait.
    more: bool,
    sent: Sent,
    tick: tokio::time::Interval,
}

/// What ended a wait.
enum Wake {
    Readable,
    Tick,
    Silence,
}

/// What one look at the queue gave.
enum Taken {
    /// Records from the position on (maybe none), and whether the log ended
    /// after them.
    Records { records: Vec<Record>, at_end: bool },
    /// Reading must go on from elsewhere first.
    Move(Move),
}

/// Where the position goes.
#[derive(Debug, Clone, Copy)]
enum Move {
    /// The probe's step back: read from here, still wanting the same offset.
    Back(i64),
    /// Resume from this offset (the out-of-range policy).
    To(i64),
}

impl<'a> Fetcher<'a> {
    /// Starts reading at the `committed` offset, or where the policy says
    /// when the broker no longer has it.
    async fn start(
        reader: &'a PartitionReader,
        committed: Option<i64>,
        ctx: &'a FetcherContext,
    ) -> Result<Self, ConsumerError> {
        let partition = reader.partition();
        let (low, _) = ctx.kafka.log_bounds(&ctx.settings.topic, partition).await?;
        let position = match committed {
            Some(offset) if offset < low => reset(ctx, partition, offset, Some(low)).await?,
            Some(offset) => offset,
            None => low,
        };
        tracing::info!(partition, start = position, "partition consumer starting");
        reader.start_from(position).await?;
        let mut tick = tokio::time::interval(STATISTICS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let patience = OffsetProbe::patience(ctx.settings.fetch_max_wait_ms);
        Ok(Self {
            reader,
            ctx,
            partition,
            position,
            probe: OffsetProbe::new(position, low, patience),
            queued: VecDeque::with_capacity(DRAIN_RECORDS),
            more: true,
            sent: Sent {
                end: position,
                at_end: false,
            },
            tick,
        })
    }

    /// The next records for the batcher, or the news that the log ends.
    async fn next(&mut self) -> Result<Ready, ConsumerError> {
        loop {
            match self.wait().await {
                Wake::Readable => {}
                Wake::Tick => {
                    let to = check_log_end(self.ctx, self.reader, self.partition, self.position);
                    if let Some(to) = to.await? {
                        self.move_to(Move::To(to)).await?;
                    }
                    continue;
                }
                Wake::Silence => {
                    if let Some(from) = self.judge(OffsetProbe::silence) {
                        self.move_to(Move::Back(from)).await?;
                    }
                    continue;
                }
            }
            #[cfg(feature = "faults")]
            if self.ctx.faults.fetch_fails() {
                return Err(self.injected_failure().await);
            }
            let (records, at_end) = match self.take().await? {
                Taken::Records { records, at_end } => (records, at_end),
                Taken::Move(to) => {
                    self.move_to(to).await?;
                    continue;
                }
            };
            if let Some(ready) = self.ready(records, at_end) {
                return Ok(ready);
            }
        }
    }

    /// Waits for the queue, the statistics' tick, or the probe's deadline.
    async fn wait(&mut self) -> Wake {
        self.ctx
            .faults
            .maybe_panic(FaultStage::Fetcher, self.partition);
        let silent_until = self.probe.map(|p| p.deadline());
        let (reader, more, tick) = (self.reader, self.more, &mut self.tick);
        tokio::select! {
            () = std::future::ready(()), if more => Wake::Readable,
            () = reader.readable(), if !more => Wake::Readable,
            _ = tick.tick() => Wake::Tick,
            () = sleep_until(silent_until) => Wake::Silence,
        }
    }

    /// Takes what librdkafka has fetched already, without waiting: records
    /// up to one chunk's worth, and the end of the log when it comes.
    async fn take(&mut self) -> Result<Taken, ConsumerError> {
        let mut records: Vec<Record> = Vec::new();
        let (mut bytes, mut at_end, mut dry) = (0_usize, false, false);
        loop {
            if self.queued.is_empty() && !dry {
                dry = self.reader.drain(&mut self.queued) < DRAIN_RECORDS;
            }
            let Some(item) = self.queued.pop_front() else {
                break;
            };
            match item {
                Fetched::Record(record) => {
                    let at = record.offset;
                    if at < self.position {
                        // A step back's walk forward: skipped, and proof
                        // that the broker started at or before the offset.
                        self.judge(|p| p.record(at));
                        continue;
                    }
                    if let Some(from) = self.judge(|p| p.record(at)) {
                        return Ok(Taken::Move(Move::Back(from)));
                    }
                    bytes += record.size().max(1);
                    records.push(record);
                    self.position = at + 1;
                }
                Fetched::End(end) => {
                    at_end = true;
                    if end < self.position {
                        // The whole log lies before the position: the broker
                        // lost records, or the topic was created again.
                        tracing::warn!(
                            partition = self.partition,
                            offset = self.position,
                            end,
                            "the broker's log ends before this consumer's offset"
                        );
                        let to = reset(self.ctx, self.partition, self.position, None).await?;
                        return Ok(Taken::Move(Move::To(to)));
                    }
                    if let Some(from) = self.judge(|p| p.end(end)) {
                        return Ok(Taken::Move(Move::Back(from)));
                    }
                    // Past transaction markers (or aborted records) at the end.
                    self.position = self.position.max(end);
                    self.ctx.status.set_high_watermark(self.position);
                    break;
                }
                Fetched::Failed(e) => {
                    if e.is_offset_out_of_range() {
                        let to = reset(self.ctx, self.partition, self.position, None).await?;
                        return Ok(Taken::Move(Move::To(to)));
                    }
                    // librdkafka retries on its own; the partition shows the error.
                    tracing::warn!(partition = self.partition, error = %e, "fetch failed; librdkafka retries");
                    self.ctx.status.set_error(e.to_string());
                    break;
                }
            }
            if bytes >= chunk_bytes(&self.ctx.settings) {
                break;
            }
        }
        self.more = !self.queued.is_empty() || !dry;
        Ok(Taken::Records { records, at_end })
    }

    /// What of `records` to hand over: an empty chunk tells the batcher only
    /// what it does not know yet, that the log ends here, or ends past markers.
    fn ready(&mut self, records: Vec<Record>, mut at_end: bool) -> Option<Ready> {
        if !records.is_empty() && !at_end {
            // Caught up when the last fetch's high watermark is no further
            // than this chunk: the batch need not wait for more.
            if let Some(high) = self.reader.fetched_high_watermark() {
                self.ctx.status.raise_high_watermark(high);
                at_end = self.position >= high;
            }
        }
        let known = self.position <= self.sent.end && self.sent.at_end;
        if records.is_empty() && (!at_end || known) {
            return None;
        }
        self.sent = Sent {
            end: self.position,
            at_end,
        };
        self.ctx.status.clear_error();
        self.ctx.status.raise_high_watermark(self.position);
        Some(Ready {
            records,
            at_end,
            end: self.position,
        })
    }

    /// Applies the probe's verdict; returns where to step back to, if it
    /// says so. Without a probe, nothing.
    fn judge(&mut self, verdict: impl FnOnce(&mut OffsetProbe) -> Verdict) -> Option<i64> {
        match verdict(self.probe.as_mut()?) {
            Verdict::Settled => {
                self.probe = None;
                None
            }
            Verdict::SeekBack(from) => Some(from),
        }
    }

    /// Seeks, dropping what was drained for the old position.
    async fn move_to(&mut self, to: Move) -> Result<(), ConsumerError> {
        let from = match to {
            Move::Back(from) => {
                tracing::debug!(
                    partition = self.partition,
                    offset = self.position,
                    from,
                    "the broker may have skipped records; reading from further back"
                );
                from
            }
            Move::To(to) => {
                self.position = to;
                self.probe = None;
                to
            }
        };
        self.reader.seek(from).await?;
        self.queued.clear();
        self.more = true;
        Ok(())
    }

    /// The injected fetch failure (`fault.fail_fetch`). The lag stays honest
    /// while fetches fail: the end of the log that the broker lists is a
    /// lower bound of it (Tansu 0.6 lists the last batch's base offset + 1),
    /// so lag never reads 0 while records wait.
    #[cfg(feature = "faults")]
    async fn injected_failure(&self) -> ConsumerError {
        use crate::kafka::KafkaError;
        let bounds = self
            .ctx
            .kafka
            .log_bounds(&self.ctx.settings.topic, self.partition);
        if let Ok((_, end)) = bounds.await {
            self.ctx.status.raise_high_watermark(end);
        }
        KafkaError::Injected.into()
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

/// Reads the end of the log that the consumer's last fetch reported, from
/// librdkafka's statistics: it keeps the lag current while a backlog is read,
/// and a log that ends before the consumer's position (the broker lost it, or
/// the topic was deleted and created again) is out of range. Returns where to
/// resume in that case.
async fn check_log_end(
    ctx: &FetcherContext,
    reader: &PartitionReader,
    partition: i32,
    target: i64,
) -> Result<Option<i64>, ConsumerError> {
    let Some(ends) = reader.log_ends() else {
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
