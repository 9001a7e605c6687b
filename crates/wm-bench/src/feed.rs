//! The background producer of the load test: new movements at a fixed rate,
//! each a departure from a warehouse whose stock the readers query and an
//! arrival elsewhere, so that every batch invalidates keys the readers use
//! and ingestion competes with the reads.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    error::BenchError,
    wm::{
        EventKind, Kafka, MovementEvent, encode,
        kafka::{self, Codec, Outgoing},
        produce,
    },
};

/// How often the producer sends what is due.
const TICK: Duration = Duration::from_millis(100);

/// Events sent so far, readable while the feed runs, and a switch that
/// pauses it (the cached-reads phase reads a cache that nothing invalidates).
#[derive(Debug, Default)]
pub(crate) struct Sent {
    sent: AtomicU64,
    paused: AtomicBool,
}

impl Sent {
    pub(crate) fn get(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops sending; what falls due while paused is never sent.
    pub(crate) fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }
}

/// Runs until `stop`, sending `rate` events per second (in pairs).
pub(crate) async fn run(
    client: Kafka,
    topic: String,
    partitions: Vec<i32>,
    pairs: Arc<Vec<(Uuid, Uuid)>>,
    rate: u64,
    sent: Arc<Sent>,
    stop: CancellationToken,
) -> Result<(), BenchError> {
    if rate == 0 || pairs.len() < 2 || partitions.is_empty() {
        stop.cancelled().await;
        return Ok(());
    }
    let producer = client.producer(Codec::None)?;
    let mut rng = StdRng::from_entropy();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let due = u64::try_from(started.elapsed().as_millis() * u128::from(rate) / 1000)
            .unwrap_or(u64::MAX);
        if sent.paused.load(Ordering::Relaxed) {
            done = due;
            continue;
        }
        let movements = due.saturating_sub(done) / 2;
        if movements == 0 {
            continue;
        }
        let mut records = Vec::with_capacity(usize::try_from(movements * 2).unwrap_or(0));
        for _ in 0..movements {
            let movement = Uuid::new_v4();
            let partition = produce::partition_of(movement, &partitions);
            for value in movement_events(&mut rng, movement, &pairs) {
                records.push(Outgoing {
                    partition,
                    key: Some(movement.as_bytes().to_vec()),
                    value: Some(value),
                    ..Outgoing::default()
                });
            }
        }
        kafka::send_all(&producer, &topic, &records).await?;
        done += movements * 2;
        sent.sent.fetch_add(movements * 2, Ordering::Relaxed);
    }
}

/// A departure of a known pair's product from its warehouse, and its arrival
/// at another known warehouse.
fn movement_events(rng: &mut StdRng, movement: Uuid, pairs: &[(Uuid, Uuid)]) -> [Vec<u8>; 2] {
    let (from, product) = pairs.choose(rng).copied().unwrap_or_default();
    let to = loop {
        let (w, _) = pairs.choose(rng).copied().unwrap_or_default();
        if w != from || pairs.len() < 2 {
            break w;
        }
    };
    let quantity = rng.gen_range(1..=50);
    let now = OffsetDateTime::now_utc();
    [
        event(movement, from, EventKind::Departure, product, quantity, now),
        event(
            movement,
            to,
            EventKind::Arrival,
            product,
            quantity,
            now + time::Duration::minutes(5),
        ),
    ]
}

/// One event as a warehouse sends it (`time` now), from the warehouse coded
/// `WH-<the id's last four digits>`.
pub(crate) fn event(
    movement: Uuid,
    warehouse: Uuid,
    kind: EventKind,
    product: Uuid,
    quantity: i64,
    at: OffsetDateTime,
) -> Vec<u8> {
    let code = u64::try_from(warehouse.as_u128() % 10_000).unwrap_or_default();
    encode::encode(&MovementEvent {
        message_id: Uuid::new_v4(),
        source: produce::numbered(code),
        emitted_at: Some(OffsetDateTime::now_utc()),
        movement_id: movement,
        warehouse_id: warehouse,
        happened_at: at.replace_nanosecond(0).unwrap_or(at),
        kind,
        product_id: product,
        quantity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_events_are_valid_and_touch_known_pairs() {
        let pairs: Vec<(Uuid, Uuid)> = (0..5).map(|_| (Uuid::new_v4(), Uuid::new_v4())).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let movement = Uuid::new_v4();
        let [departure, arrival] = movement_events(&mut rng, movement, &pairs);
        let d = crate::wm::decode(Some(&departure)).expect("valid departure");
        let a = crate::wm::decode(Some(&arrival)).expect("valid arrival");
        assert_eq!(d.movement_id, movement);
        assert!(pairs.contains(&(d.warehouse_id, d.product_id)));
        assert_ne!(d.warehouse_id, a.warehouse_id);
    }
}
