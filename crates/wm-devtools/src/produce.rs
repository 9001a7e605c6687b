//! Demo and load traffic: realistic movement events (departures, arrivals,
//! upstream duplicates and a share of malformed records), keyed by movement
//! and produced to the topic, so that the service can be watched working
//! (`make produce`) and measured (`loadtest`).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use time::OffsetDateTime;
use uuid::Uuid;

use rdkafka::producer::FutureProducer;
use warehouse_monitor::{
    config::KafkaSettings,
    domain::event::{
        EventKind::{self, Arrival, Departure},
        MovementEvent, WarehouseCode, encode,
    },
    kafka::{self, Codec, KafkaError, Outgoing, Reporter},
};

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
    let warehouses: Vec<(Uuid, WarehouseCode)> = (0..50)
        .map(|i| (Uuid::from_u128(rng.r#gen()), numbered(1000 + i)))
        .collect();
    let products: Vec<Uuid> = (0..500).map(|_| Uuid::from_u128(rng.r#gen())).collect();
    let start = OffsetDateTime::now_utc() - time::Duration::days(1);
    let mut out = Vec::with_capacity(plan.movements * 4);
    for n in 0..plan.movements {
        let movement = Uuid::from_u128(rng.r#gen());
        let pair: Vec<&(Uuid, WarehouseCode)> = warehouses.choose_multiple(&mut rng, 2).collect();
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
            events.push(event(movement, from, Departure, *product, sent, departed));
            if delivered {
                events.push(event(movement, to, Arrival, *product, received, arrived));
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

/// The event of `kind` of one product line of `movement`, sent now from
/// `warehouse`, happening at `at` (whole seconds).
fn event(
    movement: Uuid,
    (warehouse, code): &(Uuid, WarehouseCode),
    kind: EventKind,
    product: Uuid,
    quantity: i64,
    at: OffsetDateTime,
) -> Vec<u8> {
    encode::encode(&MovementEvent {
        message_id: Uuid::new_v4(),
        source: code.clone(),
        emitted_at: Some(OffsetDateTime::now_utc()),
        movement_id: movement,
        warehouse_id: *warehouse,
        happened_at: at.replace_nanosecond(0).unwrap_or(at),
        kind,
        product_id: product,
        quantity,
    })
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
            let partition = partition_of(m.key, partitions);
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

/// The partition of `partitions` that the records keyed `key` go to: the
/// same for every record of a movement, so that its events keep their order.
/// Every tool that produces picks partitions with this, so that a benchmark
/// applying records straight from memory splits them as the topic does.
///
/// # Panics
///
/// When `partitions` is empty (a topic has at least one).
pub fn partition_of(key: Uuid, partitions: &[i32]) -> i32 {
    let count = u128::try_from(partitions.len()).unwrap_or(u128::MAX);
    let index = usize::try_from(key.as_u128() % count).unwrap_or(usize::MAX);
    partitions[index]
}

/// The warehouse code `WH-<n>`.
pub fn numbered(n: u64) -> WarehouseCode {
    WarehouseCode::parse(&format!("WH-{n}")).expect("WH- and digits make a warehouse code")
}

#[cfg(test)]
mod tests {
    use super::*;
    use warehouse_monitor::domain::event::decode;

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

    #[test]
    fn a_key_always_goes_to_the_same_partition_and_keys_spread() {
        let partitions = [0, 1, 2];
        let keys: Vec<Uuid> = (0..300_u128).map(Uuid::from_u128).collect();
        let mut seen = BTreeMap::new();
        for key in &keys {
            let partition = partition_of(*key, &partitions);
            assert_eq!(partition, partition_of(*key, &partitions));
            *seen.entry(partition).or_insert(0) += 1;
        }
        assert_eq!(seen.into_values().collect::<Vec<_>>(), vec![100, 100, 100]);
        assert_eq!(partition_of(Uuid::from_u128(7), &[5]), 5);
    }
}
