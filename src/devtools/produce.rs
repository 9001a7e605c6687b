//! Demo and load traffic: realistic movement events (departures, arrivals,
//! upstream duplicates and a share of malformed records), keyed by movement
//! and produced to the topic, so that the service can be watched working
//! (`make produce`) and measured (`loadtest`).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde_json::json;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use crate::{
    app::config::KafkaSettings,
    kafka::{self, Codec, KafkaError, Outgoing, Reporter},
};
use rdkafka::producer::FutureProducer;

/// `produce`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    /// Number of movements (each has 1-3 products, so 2-6 events).
    #[arg(long, default_value_t = 1000)]
    pub movements: usize,
    /// Random seed; the same seed gives the same movements (default: a new
    /// seed each run, so that runs add new movements).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Share of events sent twice, as a producer retry would.
    #[arg(long, default_value_t = 0.02)]
    pub duplicate_ratio: f64,
    /// Share of records replaced by malformed ones.
    #[arg(long, default_value_t = 0.01)]
    pub invalid_ratio: f64,
    /// Compression of the produced record batches.
    #[arg(long, value_enum, default_value_t = Codec::None)]
    pub compression: Codec,
}

/// Generates the demo traffic `args` asks for and produces it to the
/// configured topic (created when missing); returns a one-line summary.
pub async fn run(settings: &KafkaSettings, args: ProduceArgs) -> Result<String, KafkaError> {
    let (client, partitions) = kafka::connect_topic(settings).await?;
    let producer = client.producer(args.compression)?;
    let plan = Plan {
        movements: args.movements,
        seed: args.seed.unwrap_or_else(rand::random),
        duplicate_ratio: args.duplicate_ratio,
        invalid_ratio: args.invalid_ratio,
    };
    let messages = generate(&plan);
    let total = messages.len();
    let topic = &settings.topic;
    let counts = produce(&producer, topic, &partitions, messages).await?;
    Ok(format!(
        "produced {total} records to {topic}: {counts:?} (partition: records)"
    ))
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub movements: usize,
    pub seed: u64,
    /// Share of events sent twice (as a producer retry would).
    pub duplicate_ratio: f64,
    /// Share of records replaced by a malformed one.
    pub invalid_ratio: f64,
}

/// One record to produce: its key (the movement id) and value.
#[derive(Debug, Clone)]
pub struct Message {
    pub key: Uuid,
    pub value: Vec<u8>,
}

/// Generates the messages of `plan`, in a plausible order: most departures
/// before their arrivals, some after.
pub fn generate(plan: &Plan) -> Vec<Message> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let warehouses: Vec<(Uuid, String)> = (0..50)
        .map(|i| (Uuid::from_u128(rng.r#gen()), format!("WH-{}", 1000 + i)))
        .collect();
    let products: Vec<Uuid> = (0..500).map(|_| Uuid::from_u128(rng.r#gen())).collect();
    let start = OffsetDateTime::now_utc() - time::Duration::days(1);
    let mut out = Vec::with_capacity(plan.movements * 4);
    for n in 0..plan.movements {
        let movement = Uuid::from_u128(rng.r#gen());
        let pair: Vec<&(Uuid, String)> = warehouses.choose_multiple(&mut rng, 2).collect();
        let (from, to) = (pair[0], pair[1]);
        let departed = start + time::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX));
        let arrived = departed + time::Duration::minutes(rng.gen_range(30..600));
        let delivered = rng.gen_bool(0.9);
        let mut events = Vec::new();
        let lines = rng.gen_range(1..=3);
        let chosen: Vec<Uuid> = products.choose_multiple(&mut rng, lines).copied().collect();
        for product in &chosen {
            let sent = rng.gen_range(1..=500);
            let received = if rng.gen_bool(0.05) { sent - 1 } else { sent };
            events.push(event(movement, from, "departure", *product, sent, departed));
            if delivered {
                events.push(event(movement, to, "arrival", *product, received, arrived));
            }
        }
        if rng.gen_bool(0.1) {
            events.reverse(); // arrival before departure
        }
        for value in events {
            let value = if rng.gen_bool(plan.invalid_ratio) {
                malformed(&mut rng)
            } else {
                value
            };
            if rng.gen_bool(plan.duplicate_ratio) {
                out.push(Message {
                    key: movement,
                    value: value.clone(),
                });
            }
            out.push(Message {
                key: movement,
                value,
            });
        }
    }
    out
}

fn event(
    movement: Uuid,
    (warehouse, code): &(Uuid, String),
    kind: &str,
    product: Uuid,
    quantity: i64,
    at: OffsetDateTime,
) -> Vec<u8> {
    let timestamp = at
        .replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default();
    let value = json!({
        "id": Uuid::new_v4(),
        "source": code,
        "specversion": "1.0",
        "type": crate::domain::event::EVENT_TYPE,
        "datacontenttype": "application/json",
        "dataschema": "ru.retail.warehouses.movement.v1.0",
        "time": epoch_millis(OffsetDateTime::now_utc()),
        "subject": format!("{code}:{}", kind.to_uppercase()),
        "destination": "ru.retail.warehouses",
        "data": {
            "movement_id": movement,
            "warehouse_id": warehouse,
            "timestamp": timestamp,
            "event": kind,
            "product_id": product,
            "quantity": quantity,
        }
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Milliseconds since the Unix epoch (any time this tool meets fits an i64).
fn epoch_millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A record of one of the decode reject reasons, at random.
fn malformed(rng: &mut StdRng) -> Vec<u8> {
    let samples: [&[u8]; 4] = [
        b"{\"truncated\": ",
        br#"{"specversion":"1.0","type":"ru.retail.warehouses.inventory","id":"x"}"#,
        br#"{"specversion":"1.0","type":"ru.retail.warehouses.movement","id":"b3b53031-e83a-4654-87f5-b6b6fb09fd99","source":"WH-1","data":{}}"#,
        b"\xff\xfe not utf-8",
    ];
    samples[rng.gen_range(0..samples.len())].to_vec()
}

/// Produces `messages` to `topic`, each on the partition its key hashes to,
/// stamped with the time of sending; returns how many records went to each
/// partition.
pub async fn produce(
    producer: &FutureProducer<Reporter>,
    topic: &str,
    partitions: &[i32],
    messages: Vec<Message>,
) -> Result<BTreeMap<i32, usize>, KafkaError> {
    let mut counts = BTreeMap::new();
    let records: Vec<Outgoing> = messages
        .into_iter()
        .map(|m| {
            let index = (m.key.as_u128() % partitions.len().max(1) as u128) as usize;
            let partition = partitions[index];
            *counts.entry(partition).or_insert(0) += 1;
            Outgoing {
                partition,
                key: Some(m.key.as_bytes().to_vec()),
                value: Some(m.value),
                ..Outgoing::default()
            }
        })
        .collect();
    kafka::send_all(producer, topic, &records).await?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::decode;

    #[test]
    fn generated_events_decode_except_the_planned_malformed_ones() {
        let plan = Plan {
            movements: 200,
            seed: 1,
            duplicate_ratio: 0.0,
            invalid_ratio: 0.0,
        };
        let messages = generate(&plan);
        assert!(messages.len() >= 200);
        for m in &messages {
            let event = decode(Some(&m.value)).expect("valid event");
            assert_eq!(event.movement_id, m.key);
        }
        let bad = generate(&Plan {
            invalid_ratio: 1.0,
            ..plan
        });
        assert!(bad.iter().all(|m| decode(Some(&m.value)).is_err()));
    }
}
