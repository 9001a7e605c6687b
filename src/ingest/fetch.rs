//! Reading one partition from the broker: fetch from an offset, forward each
//! fetch's records to the batcher as one chunk (the high watermark goes to the
//! partition status), and apply the configured policy when the offset is no
//! longer in the broker's log. Records waiting for their batch are bounded in
//! bytes: each fetch holds permits of a per-partition semaphore until the
//! batch with its last record is committed.

use std::{sync::Arc, time::Duration};

use rskafka::{
    client::partition::{OffsetAt, PartitionClient},
    record::RecordAndOffset,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{ConsumerError, batch::Chunk, status::PartitionStatus};
use crate::{
    app::{
        config::{FaultStage, KafkaSettings, OffsetReset},
        metrics::Metrics,
    },
    fault::Faults,
    kafka::{self, KafkaError, Record},
};

/// What a fetcher needs besides its partition client.
#[derive(Debug)]
pub struct FetcherContext {
    pub settings: KafkaSettings,
    pub status: Arc<PartitionStatus>,
    pub metrics: Arc<Metrics>,
    pub faults: Arc<Faults>,
    /// Bytes of records that may wait for their batch (`kafka.max_buffered_bytes`).
    pub buffer: Arc<Semaphore>,
}

/// Pause after an empty fetch that the broker answered at once, so that a broker
/// that does not honour `max_wait_ms` is not polled in a tight loop.
const EMPTY_FETCH_PAUSE: Duration = Duration::from_millis(50);

/// Fetches from `offset` until cancelled, the batcher goes away, or an error.
pub async fn run(
    client: PartitionClient,
    mut offset: i64,
    ctx: FetcherContext,
    tx: mpsc::Sender<Chunk<Record>>,
    stop: CancellationToken,
) -> Result<(), ConsumerError> {
    let partition = client.partition();
    let settings = &ctx.settings;
    // The last high watermark seen: while it is past `offset`, records are
    // known to wait, and the broker need not hold the fetch open for more.
    // Tansu 0.6 holds every fetch for its whole `max_wait_ms` even when it
    // has data, so this is what lets a backlog be read at the broker's pace.
    // Before the first answer, records are taken to wait (a consumer that
    // starts usually has some): the first fetch does not wait either, and if
    // it comes back empty the pause after an empty fetch applies.
    let mut known_end = i64::MAX;
    loop {
        ctx.faults.maybe_panic(FaultStage::Fetcher, partition);
        let started = tokio::time::Instant::now();
        let fetch = async {
            if ctx.faults.fetch_fails() {
                return Err(KafkaError::Injected);
            }
            let wait = if known_end > offset {
                0
            } else {
                settings.fetch_max_wait_ms
            };
            fetch_at(&client, offset, settings, wait).await
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            result = fetch => result,
        };
        let (records, high_watermark) = match result {
            Ok(fetched) => fetched,
            Err(e) if e.is_offset_out_of_range() => {
                offset = reset(&client, offset, settings.offset_out_of_range, &ctx.metrics).await?;
                continue;
            }
            Err(e) => {
                estimate_high_watermark(&client, &ctx.status).await;
                return Err(e.into());
            }
        };
        ctx.status.set_high_watermark(high_watermark);
        known_end = high_watermark;
        if records.is_empty() && high_watermark < offset {
            // The log ends before our position: the broker lost or truncated it.
            offset = reset(&client, offset, settings.offset_out_of_range, &ctx.metrics).await?;
            continue;
        }
        let (fetched, took) = (records.len(), started.elapsed());
        let last_in_log = records
            .last()
            .is_some_and(|r| r.offset + 1 >= high_watermark);
        // rskafka may return the start of a batch before `offset`.
        let records: Vec<Record> = records
            .into_iter()
            .filter(|r| r.offset >= offset)
            .map(|r| kafka::to_record(r, settings.max_record_bytes))
            .collect();
        let delivered = !records.is_empty();
        if let Some(last) = records.last() {
            offset = last.offset + 1;
            let permit = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                permit = Arc::clone(&ctx.buffer).acquire_many_owned(weight(&records, settings)) => permit,
            };
            let Ok(permit) = permit else {
                return Ok(()); // the semaphore is never closed; treat it as a stop
            };
            let chunk = Chunk {
                records,
                permit,
                last_in_log,
            };
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
        if !delivered && started.elapsed() < EMPTY_FETCH_PAUSE {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(EMPTY_FETCH_PAUSE) => {}
            }
        }
        tracing::trace!(partition, offset, high_watermark, fetched, ?took, "fetched");
    }
}

/// The permits a fetch's records take from the partition's byte budget: a
/// record counts for at least one, and a fetch for at most the whole budget
/// (one larger than that goes alone).
fn weight(records: &[Record], settings: &KafkaSettings) -> u32 {
    let bytes: usize = records.iter().map(|r| r.size().max(1)).sum();
    u32::try_from(bytes.min(settings.max_buffered_bytes)).unwrap_or(u32::MAX)
}

/// Fetches the records from `offset` on.
///
/// Tansu 0.6 answers a fetch whose offset lies inside a record batch with the
/// *next* batch, silently skipping the rest of the batch. That happens whenever
/// the committed offset of a restarted consumer falls inside a producer's batch.
/// So when the first record returned is past `offset` (or nothing is returned
/// although the high watermark is past it), look back (growing
/// steps) until a batch at or before `offset` comes back, then walk forward
/// batch by batch; records before `offset` are dropped. Against Apache Kafka,
/// which returns the batch holding `offset`, this only runs at log gaps.
async fn fetch_at(
    client: &PartitionClient,
    offset: i64,
    settings: &KafkaSettings,
    wait: i32,
) -> Result<(Vec<RecordAndOffset>, i64), KafkaError> {
    let bytes = 1..settings.fetch_max_bytes;
    let (records, high_watermark) = client.fetch_records(offset, bytes.clone(), wait).await?;
    let skipped = match records.first() {
        Some(first) => first.offset > offset,
        // Nothing returned although the log goes past `offset`: the batch holding
        // `offset` was the last one.
        None => high_watermark > offset,
    };
    if !skipped {
        return Ok((records, high_watermark));
    }
    // Never step back past the start of the log. Without it, 0 is a safe
    // floor: stepping back further only costs a longer walk forward.
    let floor = match client.get_offset(OffsetAt::Earliest).await {
        Ok(earliest) => earliest.min(offset),
        Err(e) => {
            tracing::debug!(partition = client.partition(), error = %KafkaError::from(e),
                "cannot read the earliest offset; stepping back from 0");
            0
        }
    };
    let mut step = 64_i64;
    // Step back until the answer starts at or before `offset`.
    let (mut from, mut found) = loop {
        let from = (offset - step).max(floor);
        step = step.saturating_mul(4);
        let answer = client.fetch_records(from, bytes.clone(), wait).await?;
        let starts_early = answer.0.first().is_some_and(|r| r.offset <= offset);
        if starts_early || from == floor {
            break (from, answer);
        }
    };
    // Walk forward until the answer reaches `offset`.
    loop {
        let (records, high_watermark) = found;
        let reaches = records.last().is_none_or(|r| r.offset >= offset);
        if reaches {
            let kept = records.into_iter().filter(|r| r.offset >= offset).collect();
            return Ok((kept, high_watermark));
        }
        from = records.last().map_or(from, |r| r.offset + 1);
        found = client.fetch_records(from, bytes.clone(), wait).await?;
    }
}

/// While fetches fail, keeps the lag honest: the broker's latest offset is a
/// lower bound of the high watermark (on Tansu 0.6 it is the last batch's base
/// offset + 1), so lag never reads 0 while records wait.
async fn estimate_high_watermark(client: &PartitionClient, status: &PartitionStatus) {
    match client.get_offset(OffsetAt::Latest).await {
        Ok(latest) => status.raise_high_watermark(latest),
        Err(e) => tracing::debug!(
            partition = client.partition(),
            error = %KafkaError::from(e),
            "cannot read the latest offset either"
        ),
    }
}

/// Applies the out-of-range policy; returns the offset to resume from.
async fn reset(
    client: &PartitionClient,
    offset: i64,
    policy: OffsetReset,
    metrics: &Metrics,
) -> Result<i64, ConsumerError> {
    let partition = client.partition();
    match policy {
        OffsetReset::Fail => Err(ConsumerError::OffsetOutOfRange { partition, offset }),
        OffsetReset::Earliest => {
            let earliest = client
                .get_offset(OffsetAt::Earliest)
                .await
                .map_err(KafkaError::from)?;
            metrics.offset_reset(partition);
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
