//! Which cache keys a batch invalidates: the key, in the epoch the batch read
//! when it began, of every row it changed. [`super::apply`] hands the keys
//! of each step to Redis once that step has locked its rows, and, when Redis
//! did not acknowledge them, gives all of the batch's keys to the cache
//! outbox ([`crate::cache::announcements::before_commit`]). The rows are the
//! pipeline's to know; what is done with their keys is the cache's.

use uuid::Uuid;

use crate::{cache::Epoch, store::write::Touched};

/// The cache key, in `epoch`, of each touched row.
pub fn stale_keys(epoch: Epoch, touched: &Touched) -> Vec<String> {
    let mut keys = movement_keys(epoch, &touched.movements);
    keys.extend(stock_keys(epoch, &touched.stock));
    keys
}

/// The cache key, in `epoch`, of each movement row a batch changed.
pub fn movement_keys(epoch: Epoch, movements: &[Uuid]) -> Vec<String> {
    movements.iter().map(|id| epoch.movement_key(*id)).collect()
}

/// The cache key, in `epoch`, of each stock row a batch changed.
pub fn stock_keys(epoch: Epoch, stock: &[(Uuid, Uuid)]) -> Vec<String> {
    stock
        .iter()
        .map(|&(warehouse, product)| epoch.stock_key(warehouse, product))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_touched_row_gets_its_key_in_the_batch_epoch() {
        let (m, w, p) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let touched = Touched {
            movements: vec![m],
            stock: vec![(w, p)],
        };
        let epoch = Epoch(7);
        assert_eq!(
            stale_keys(epoch, &touched),
            vec![epoch.movement_key(m), epoch.stock_key(w, p)]
        );
        assert_ne!(stale_keys(Epoch(8), &touched), stale_keys(epoch, &touched));
    }
}
