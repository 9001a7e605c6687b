//! Reading one partition from the broker: fetch from an offset, forward every
//! record to the batcher (the high watermark goes to the partition status), and
//! apply the configured policy when the offset is no longer in the broker's log.

use std::{sync::Arc, time::Duration};

use rskafka::{
    client::partition::{OffsetAt, PartitionClient},
    record::RecordAndOffset,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ConsumerError, status::PartitionStatus};
use crate::{
    batch::Record,
    config::{KafkaSettings, OffsetReset},
    kafka::{self, KafkaError},
    metrics::Metrics,
};

/// Pause after an empty fetch that the broker answered at once, so that a broker
/// that does not honour `max_wait_ms` is not polled in a tight loop.
const EMPTY_FETCH_PAUSE: Duration = Duration::from_millis(50);

/// Fetches from `offset` until cancelled, the batcher goes away, or an error.
pub async fn run(
    client: PartitionClient,
    mut offset: i64,
    settings: KafkaSettings,
    tx: mpsc::Sender<Record>,
    status: Arc<PartitionStatus>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<(), ConsumerError> {
    let partition = client.partition();
    loop {
        let started = tokio::time::Instant::now();
        let fetch = fetch_at(&client, offset, &settings);
        let result = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            result = fetch => result,
        };
        let (records, high_watermark) = match result {
            Ok(fetched) => fetched,
            Err(e) if e.is_offset_out_of_range() => {
                offset = reset(&client, offset, settings.offset_out_of_range, &metrics).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        status.set_high_watermark(high_watermark);
        if records.is_empty() && high_watermark < offset {
            // The log ends before our position: the broker lost or truncated it.
            offset = reset(&client, offset, settings.offset_out_of_range, &metrics).await?;
            continue;
        }
        let mut delivered = false;
        for record in records {
            if record.offset < offset {
                continue; // rskafka may return the start of a batch before `offset`
            }
            offset = record.offset + 1;
            delivered = true;
            if tx.send(kafka::to_record(record)).await.is_err() {
                return Ok(());
            }
        }
        if !delivered && started.elapsed() < EMPTY_FETCH_PAUSE {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(EMPTY_FETCH_PAUSE) => {}
            }
        }
        tracing::trace!(partition, offset, high_watermark, "fetched");
    }
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
) -> Result<(Vec<RecordAndOffset>, i64), KafkaError> {
    let bytes = 1..settings.fetch_max_bytes;
    let wait = settings.fetch_max_wait_ms;
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
    // Never step back past the start of the log.
    let floor = client
        .get_offset(OffsetAt::Earliest)
        .await
        .unwrap_or(0)
        .min(offset);
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
