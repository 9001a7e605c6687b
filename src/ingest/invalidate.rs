//! The last stage of a batch: after its commit, the cache keys of every row
//! it changed get a tombstone with the row's new version, in one pipeline, so
//! that no reader can serve (or put back) an answer older than the commit.

use crate::{
    cache::{self, Cache},
    store::apply::Touched,
};

/// Tombstones the keys of the rows a committed batch touched.
pub async fn after_commit(cache: &Cache, touched: &Touched) {
    cache.invalidate(stale_keys(touched)).await;
}

/// The cache key and new version of each touched row.
fn stale_keys(touched: &Touched) -> Vec<(String, i64)> {
    let movements = touched
        .movements
        .iter()
        .map(|(id, version)| (cache::movement_key(*id), *version));
    let stock = touched
        .stock
        .iter()
        .map(|(w, p, version)| (cache::stock_key(*w, *p), *version));
    movements.chain(stock).collect()
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn every_touched_row_gets_its_key_and_version() {
        let (m, w, p) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let touched = Touched {
            movements: vec![(m, 4)],
            stock: vec![(w, p, 9)],
        };
        assert_eq!(
            stale_keys(&touched),
            vec![(cache::movement_key(m), 4), (cache::stock_key(w, p), 9)]
        );
    }
}
