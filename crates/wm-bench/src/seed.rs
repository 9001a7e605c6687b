//! Seeding a fresh database through the real path: generated movements are
//! produced to a fresh topic and consumed by the service under test. Then
//! the ids the readers will query are read back from what was stored.

use std::{collections::BTreeMap, time::Instant};

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::{
    error::BenchError,
    wm::{Kafka, Message, Plan, kafka::Codec, produce},
};

/// What was produced, per partition (the topic is fresh: counts are offsets).
#[derive(Debug)]
pub(crate) struct Produced {
    pub(crate) records: usize,
    pub(crate) per_partition: BTreeMap<i32, i64>,
    pub(crate) seconds: f64,
}

/// `movements` generated movements (about 3.9 records each, 2% duplicates,
/// 0.1% malformed), cut to `limit` records when given.
pub(crate) fn generate(movements: usize, limit: Option<usize>) -> Vec<Message> {
    let mut messages = produce::generate(&Plan {
        movements,
        seed: rand::random(),
        duplicate_ratio: 0.02,
        invalid_ratio: 0.001,
    });
    if let Some(limit) = limit {
        messages.truncate(limit);
    }
    messages
}

/// Produces `messages`, each to the partition its key hashes to.
pub(crate) async fn produce(
    client: &Kafka,
    topic: &str,
    partitions: &[i32],
    messages: Vec<Message>,
) -> Result<Produced, BenchError> {
    let records = messages.len();
    let started = Instant::now();
    let producer = client.producer(Codec::None)?;
    let counts = produce::produce(&producer, topic, partitions, messages).await?;
    Ok(Produced {
        records,
        per_partition: counts
            .into_iter()
            .map(|(p, n)| (p, i64::try_from(n).unwrap_or(i64::MAX)))
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Stored (warehouse, product) pairs and movement ids.
pub(crate) async fn known_ids(pool: &Pool) -> Result<(Vec<(Uuid, Uuid)>, Vec<Uuid>), BenchError> {
    let client = pool.get().await?;
    let pairs: Vec<(Uuid, Uuid)> = client
        .query("SELECT warehouse_id, product_id FROM stock", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let movements: Vec<Uuid> = client
        .query("SELECT movement_id FROM movements", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if pairs.is_empty() {
        return Err(BenchError::NothingSeeded("stock rows"));
    }
    if movements.is_empty() {
        return Err(BenchError::NothingSeeded("movements"));
    }
    Ok((pairs, movements))
}
