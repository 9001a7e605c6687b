//! Log lines for failures that repeat per request or per batch: while
//! PostgreSQL or Redis is down, 20 000 requests a second would otherwise
//! write 20 000 warnings a second. Each kind of failure is logged at most once
//! per second, with the number of lines left out since the last one; its
//! metric still counts every occurrence.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// One kind of repeated failure: a `static` at the line that logs it.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// At most one line per second.
    pub const fn per_second() -> Self {
        Self {
            every: Duration::from_secs(1),
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when this occurrence may be
    /// logged; `None` when it is left out (and counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now.saturating_duration_since(at) < self.every => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_left_out() {
        let throttle = Throttle::per_second();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(throttle.allow_at(at(0)), Some(0), "the first is logged");
        for ms in 1..=999 {
            assert_eq!(throttle.allow_at(at(ms)), None);
        }
        assert_eq!(
            throttle.allow_at(at(1000)),
            Some(999),
            "a second later, with the 999 left out"
        );
        assert_eq!(throttle.allow_at(at(1500)), None);
        assert_eq!(throttle.allow_at(at(5000)), Some(1));
    }

    #[test]
    fn kinds_are_throttled_apart() {
        let (a, b) = (Throttle::per_second(), Throttle::per_second());
        let now = Instant::now();
        assert_eq!(a.allow_at(now), Some(0));
        assert_eq!(b.allow_at(now), Some(0), "another kind is not held back");
        assert_eq!(a.allow_at(now), None);
    }
}
