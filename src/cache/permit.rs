//! The permit to read the cache: until when, and for which epoch. Granted by
//! a look at the cache outbox that found it empty ([`super::outbox_watch`]),
//! withdrawn by one that found rows. Read on every request, so it is a few
//! atomics and no lock.

use std::{
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Instant,
};

use super::Epoch;

/// Until when reads may use the cache, as an offset from `base` in
/// nanoseconds (0: no permit), for which epoch, and the outbox rows last seen.
#[derive(Debug)]
pub(super) struct Permit {
    base: Instant,
    until: AtomicU64,
    epoch: AtomicI64,
    outbox_rows: AtomicI64,
}

impl Permit {
    pub(super) fn new() -> Self {
        Self {
            base: Instant::now(),
            until: AtomicU64::new(0),
            epoch: AtomicI64::new(-1),
            outbox_rows: AtomicI64::new(-1),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX).max(1)
    }

    /// The epoch reads may use now, if a permit is held. The epoch is read
    /// on both sides of the deadline, and a grant for another epoch clears
    /// the deadline before it changes the epoch, so that a reader never
    /// pairs one look's deadline with another look's epoch.
    pub(super) fn epoch(&self) -> Option<Epoch> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let until = self.until.load(Ordering::SeqCst);
        let again = self.epoch.load(Ordering::SeqCst);
        (epoch == again && self.nanos(Instant::now()) < until && epoch >= 0).then_some(Epoch(epoch))
    }

    /// Grants the permit until `deadline`, for `epoch`.
    pub(super) fn grant(&self, deadline: Instant, epoch: Epoch) {
        if self.epoch.load(Ordering::SeqCst) != epoch.0 {
            self.until.store(0, Ordering::SeqCst);
            self.epoch.store(epoch.0, Ordering::SeqCst);
        }
        self.until.store(self.nanos(deadline), Ordering::SeqCst);
        self.outbox_rows.store(0, Ordering::Relaxed);
    }

    /// Withdraws the permit at once: the outbox holds `rows` rows.
    pub(super) fn withdraw(&self, rows: i64) {
        self.until.store(0, Ordering::SeqCst);
        self.outbox_rows.store(rows, Ordering::Relaxed);
    }

    /// Rows in the cache outbox at the last look; `None` before the first.
    pub(super) fn outbox_rows(&self) -> Option<i64> {
        Some(self.outbox_rows.load(Ordering::Relaxed)).filter(|n| *n >= 0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_permit_is_for_one_epoch_until_its_deadline() {
        let permit = Permit::new();
        assert_eq!(permit.epoch(), None, "none before the first look");
        assert_eq!(permit.outbox_rows(), None);
        let later = Instant::now() + Duration::from_secs(60);
        permit.grant(later, Epoch(3));
        assert_eq!(permit.epoch(), Some(Epoch(3)));
        permit.grant(later, Epoch(4));
        assert_eq!(permit.epoch(), Some(Epoch(4)));
        permit.withdraw(2);
        assert_eq!((permit.epoch(), permit.outbox_rows()), (None, Some(2)));
        permit.grant(Instant::now(), Epoch(4));
        assert_eq!(permit.epoch(), None, "lapsed");
    }
}
