//! After Redis failed a batch's deletes, batches do not ask it again for a
//! moment. A Redis that hangs (or answers every command with an error)
//! would otherwise cost every batch its timeout, while one that is down
//! costs nothing: the client knows it is disconnected. Meanwhile the
//! batches' keys go to the outbox, exactly as with Redis down, so a pause
//! changes nothing of what is correct, only what a batch waits for.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How long batches leave Redis alone after it failed them.
pub(super) const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Until when deletes skip Redis, as milliseconds since `origin` (0: no pause).
#[derive(Debug)]
pub(super) struct Pause {
    origin: Instant,
    until_ms: AtomicU64,
}

impl Pause {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True while deletes should not be sent.
    pub(super) fn active(&self) -> bool {
        self.now_ms() < self.until_ms.load(Ordering::Relaxed)
    }

    /// Redis failed: leave it alone for `for_how_long`.
    pub(super) fn start(&self, for_how_long: Duration) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(for_how_long.as_millis()).unwrap_or(u64::MAX));
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Redis acknowledged: no pause.
    pub(super) fn clear(&self) {
        self.until_ms.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_lasts_its_time_and_an_acknowledgement_ends_it() {
        let pause = Pause::new();
        assert!(!pause.active());
        pause.start(Duration::from_millis(40));
        assert!(pause.active());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!pause.active(), "over");
        pause.start(Duration::from_secs(60));
        pause.clear();
        assert!(!pause.active());
    }
}
