//! Reading one partition from the broker: fetch from an offset, forward every
//! record and the high watermark to the batcher, and apply the configured
//! policy when the offset is no longer in the broker's log.

use std::{sync::Arc, time::Duration};

use rskafka::client::partition::{OffsetAt, PartitionClient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ConsumerError, batcher::Fetched, status::PartitionStatus};
use crate::{
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
    tx: mpsc::Sender<Fetched>,
    status: Arc<PartitionStatus>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<(), ConsumerError> {
    let partition = client.partition();
    loop {
        let started = tokio::time::Instant::now();
        let fetch = client.fetch_records(offset, 1..settings.fetch_max_bytes, settings.fetch_max_wait_ms);
        let result = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            result = fetch => result.map_err(KafkaError::from),
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
        if tx.send(Fetched::HighWatermark(high_watermark)).await.is_err() {
            return Ok(());
        }
        let mut delivered = false;
        for record in records {
            if record.offset < offset {
                continue; // rskafka may return the start of a batch before `offset`
            }
            offset = record.offset + 1;
            delivered = true;
            if tx.send(Fetched::Record(kafka::to_record(record))).await.is_err() {
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

/// Applies the out-of-range policy; returns the offset to resume from.
async fn reset(client: &PartitionClient, offset: i64, policy: OffsetReset, metrics: &Metrics) -> Result<i64, ConsumerError> {
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
