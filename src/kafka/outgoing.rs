//! Records on their way to Kafka: the producer of the tools and tests
//! (`produce`, wm-bench's feed and seed), its compression, and sending many
//! records in order while librdkafka's queue fills and drains.

use std::time::Duration;

use rdkafka::{
    error::{KafkaError as RdError, RDKafkaErrorCode},
    message::OwnedHeaders,
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};

use super::{KafkaError, Reporter, client_config};
use crate::config::KafkaSettings;

/// Compression of produced record batches: every codec Kafka defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// librdkafka's name for it (`compression.codec`).
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// A producer of the configured cluster with `codec` compression.
pub fn producer(
    settings: &KafkaSettings,
    codec: Codec,
) -> Result<FutureProducer<Reporter>, KafkaError> {
    let mut config = client_config(settings);
    config
        .set("compression.codec", codec.as_str())
        // Tools and tests send records up to what the broker takes.
        .set("message.max.bytes", (256 << 20).to_string())
        .set("acks", "all")
        .set("linger.ms", "5");
    Ok(config.create_with_context(Reporter::default())?)
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Epoch milliseconds; `None`: librdkafka stamps the time of sending.
    pub timestamp: Option<i64>,
    pub headers: Option<OwnedHeaders>,
}

/// Produces `records` to `topic`, in order per partition, waiting while
/// librdkafka's queue is full; returns the offset of each, in the order given.
pub async fn send_all(
    producer: &FutureProducer<Reporter>,
    topic: &str,
    records: &[Outgoing],
) -> Result<Vec<i64>, KafkaError> {
    let mut pending: std::collections::VecDeque<DeliveryFuture> = Default::default();
    let mut offsets = Vec::with_capacity(records.len());
    for r in records {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).partition(r.partition);
        record.key = r.key.as_deref();
        record.payload = r.value.as_deref();
        record.timestamp = r.timestamp;
        record.headers = r.headers.clone();
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match pending.pop_front() {
                        Some(oldest) => offsets.push(delivered(oldest).await?),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for delivery in pending {
        offsets.push(delivered(delivery).await?);
    }
    Ok(offsets)
}

/// The offset a produced record was written at.
async fn delivered(delivery: DeliveryFuture) -> Result<i64, KafkaError> {
    match delivery.await {
        Ok(Ok(done)) => Ok(done.offset),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(KafkaError::Join("the producer went away".into())),
    }
}
