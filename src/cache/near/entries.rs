//! The near cache's entries: at most `redis.near_cache_entries` of them,
//! evicted by quick_cache's S3-FIFO policy, so the keys read again and again
//! stay while those read once go. (A map that emptied itself when full threw
//! the hottest keys out with the rest: under a Zipf(1.0) read pattern over
//! 1 000 000 keys with 200 000 entries it answered 77.8 % of reads from
//! memory, this 86.6 %; `cargo bench --bench near_cache` measures both.)
//!
//! Every change goes through the tracking connection's one task, in the
//! order of the frames (see `cache/near.rs`); eviction only ever drops an
//! entry, which costs a miss, never an answer.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// One entry: the JSON as Redis held it, and when it was read.
#[derive(Debug, Clone)]
struct Slot {
    payload: Arc<str>,
    stored: Instant,
}

/// The entries, or nothing kept at all (0 entries).
#[derive(Debug)]
pub(super) struct Entries {
    map: Option<quick_cache::sync::Cache<Box<str>, Slot>>,
    ttl: Duration,
}

impl Entries {
    pub(super) fn new(max_entries: usize, ttl: Duration) -> Self {
        Self {
            map: (max_entries > 0).then(|| quick_cache::sync::Cache::new(max_entries)),
            ttl,
        }
    }

    pub(super) fn holds(&self, key: &str) -> bool {
        self.map.as_ref().is_some_and(|m| m.contains_key(key))
    }

    /// The payload of `key`, unless missing or older than the TTL.
    pub(super) fn lookup(&self, key: &str) -> Option<Arc<str>> {
        let slot = self.map.as_ref()?.get(key)?;
        (slot.stored.elapsed() < self.ttl).then_some(slot.payload)
    }

    pub(super) fn insert(&self, key: Box<str>, payload: Arc<str>) {
        if let Some(map) = &self.map {
            let stored = Instant::now();
            map.insert(key, Slot { payload, stored });
        }
    }

    pub(super) fn remove(&self, key: &str) {
        if let Some(map) = &self.map {
            map.remove(key);
        }
    }

    pub(super) fn clear(&self) {
        if let Some(map) = &self.map {
            map.clear();
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.as_ref().map_or(0, quick_cache::sync::Cache::len)
    }
}
