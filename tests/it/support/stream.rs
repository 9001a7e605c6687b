//! A generated stream of movements spread over partitions, with the stock it
//! must produce computed independently of the service.

use std::collections::HashMap;

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use uuid::Uuid;

use super::helpers::Ev;

/// Records per partition, and the stock they must leave.
pub(crate) struct Stream {
    pub(crate) partitions: Vec<Vec<Vec<u8>>>,
    pub(crate) expected_stock: HashMap<(Uuid, Uuid), i64>,
    pub(crate) events: usize,
}

impl Stream {
    /// Asserts that the stock table holds exactly the expected totals.
    pub(crate) async fn assert_stock(&self, pool: &deadpool_postgres::Pool) {
        let client = pool.get().await.unwrap();
        let rows = client
            .query("SELECT warehouse_id, product_id, quantity FROM stock", &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), self.expected_stock.len(), "stock rows");
        for row in rows {
            let key = (row.get(0), row.get(1));
            let quantity: i64 = row.get(2);
            assert_eq!(
                Some(&quantity),
                self.expected_stock.get(&key),
                "stock of {key:?}"
            );
        }
    }
}

/// `movements` movements of 1–3 products between `warehouses` warehouses;
/// most are delivered, some are still in transit, some arrive without a
/// departure so far; about 5 % of events are sent twice, byte for byte, as a
/// producer retry would: on the same partition when `retry_same_partition`,
/// else on any partition.
pub(crate) fn generate(
    seed: u64,
    movements: usize,
    partitions: usize,
    retry_same_partition: bool,
) -> Stream {
    let mut rng = StdRng::seed_from_u64(seed);
    let warehouses: Vec<Uuid> = (0..20).map(|_| Uuid::from_u128(rng.r#gen())).collect();
    let products: Vec<Uuid> = (0..50).map(|_| Uuid::from_u128(rng.r#gen())).collect();
    let mut out = Stream {
        partitions: vec![Vec::new(); partitions],
        expected_stock: HashMap::new(),
        events: 0,
    };
    for _ in 0..movements {
        let id = Uuid::from_u128(rng.r#gen());
        let mut pair = warehouses.choose_multiple(&mut rng, 2);
        let (sender, receiver) = (*pair.next().unwrap(), *pair.next().unwrap());
        let lines = rng.gen_range(1..=3);
        let kind = rng.gen_range(0..10); // 0: in transit, 1: arrival only, else delivered
        for product in products.choose_multiple(&mut rng, lines) {
            let sent = rng.gen_range(1..=1000);
            let received = if rng.gen_bool(0.1) {
                sent - rng.gen_range(0..sent)
            } else {
                sent
            };
            let mut events = Vec::new();
            if kind != 1 {
                events.push(Ev::departure(id, sender, *product, sent));
                *out.expected_stock.entry((sender, *product)).or_default() -= sent;
            }
            if kind != 0 {
                events.push(Ev::arrival(id, receiver, *product, received));
                *out.expected_stock.entry((receiver, *product)).or_default() += received;
            }
            for ev in events {
                let bytes = ev.bytes();
                let p = rng.gen_range(0..partitions);
                out.partitions[p].push(bytes.clone());
                out.events += 1;
                if rng.gen_bool(0.05) {
                    let p = if retry_same_partition {
                        p
                    } else {
                        rng.gen_range(0..partitions)
                    };
                    out.partitions[p].push(bytes);
                    out.events += 1;
                }
            }
        }
    }
    out
}
