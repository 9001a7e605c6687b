//! How many unknown movements this instance caches per second. Known
//! answers are bounded by the data; unknown ids are not, so their cached
//! 404s are few (`redis.absent_fills_per_sec`) and short-lived
//! (`redis.absent_ttl_secs`): a flood of random ids holds at most
//! instances x rate x TTL entries in Redis, however fast it comes. Past the
//! rate, a 404 is answered from PostgreSQL (an index look-up) and not cached.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Instant,
};

/// A fixed one-second window of absent fills.
#[derive(Debug)]
pub(super) struct AbsentFills {
    base: Instant,
    per_sec: u32,
    window: AtomicU64,
    used: AtomicU32,
}

impl AbsentFills {
    pub(super) fn new(per_sec: u32) -> Self {
        Self {
            base: Instant::now(),
            per_sec,
            window: AtomicU64::new(0),
            used: AtomicU32::new(0),
        }
    }

    /// True when one more unknown movement may be cached in this second.
    pub(super) fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let second = now.saturating_duration_since(self.base).as_secs();
        let window = self.window.load(Ordering::Relaxed);
        if second != window
            && self
                .window
                .compare_exchange(window, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < self.per_sec
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn at_most_the_rate_per_second() {
        let fills = AbsentFills::new(3);
        let start = fills.base;
        let allowed = (0..10).filter(|_| fills.allow_at(start)).count();
        assert_eq!(allowed, 3);
        let next = start + Duration::from_millis(1_500);
        assert_eq!((0..10).filter(|_| fills.allow_at(next)).count(), 3);
        assert!(!AbsentFills::new(0).allow_at(start), "0: none cached");
    }
}
