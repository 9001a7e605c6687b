//! Every path of the service's library and of the developer tools that this
//! tool uses, in one place, so that a reorganisation of either is one edit
//! here.

#[cfg(test)]
pub(crate) use warehouse_monitor::domain::event::decode;
pub(crate) use warehouse_monitor::{
    config::{ConfigError, KafkaSettings, Settings},
    domain::event::{EventKind, MovementEvent, encode},
    ingest::bisect::Bisection,
    kafka::{self, Kafka, KafkaError, Record},
    retry::classify,
    store::{self, StoreError, write::PartitionBatch},
};

pub(crate) use wm_devtools::{
    child::{Service, ServiceError},
    produce::{self, Message, Plan},
};

use warehouse_monitor::{
    app::startup,
    ingest::{apply::apply_once, decode::decode_all},
    store::write::BatchOutcome,
};

/// Decodes, plans and applies one batch in one transaction, as the service does.
pub(crate) async fn apply(
    client: &mut store::Client,
    batch: &PartitionBatch<'_>,
) -> Result<BatchOutcome, StoreError> {
    apply_once(client, batch, decode_all(batch.records)).await
}

/// Creates the database if missing and applies the migrations.
pub(crate) async fn migrate(settings: &Settings) -> Result<(), StoreError> {
    startup::migrate(settings).await.map(|_| ())
}

/// Creates `topic` with `partitions` partitions (the settings' other Kafka
/// values kept) and returns its partitions.
pub(crate) async fn create_topic(
    client: &Kafka,
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
) -> Result<Vec<i32>, KafkaError> {
    let mut fresh = settings.clone();
    fresh.topic = topic.to_owned();
    fresh.partitions = partitions;
    fresh.create_topic = true;
    kafka::ensure_topic(client, &fresh).await
}
