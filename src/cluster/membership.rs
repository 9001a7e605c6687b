//! Sharing partitions between instances: every instance learns how many are
//! alive (from their ownership sessions, [`super::session_watch`]); it takes free
//! partitions only up to its fair share, ceil(partitions / instances), and
//! hands back the ones above it so that a newcomer gets work.

use std::sync::atomic::{AtomicUsize, Ordering};

/// What this instance knows of the group: how many instances are alive.
#[derive(Debug)]
pub struct Membership {
    live: AtomicUsize,
}

impl Default for Membership {
    fn default() -> Self {
        Self {
            live: AtomicUsize::new(1),
        }
    }
}

impl Membership {
    /// Records how many instances are alive, this one included.
    pub fn set_live(&self, live: usize) {
        self.live.store(live, Ordering::Relaxed);
    }

    /// Live instances, this one included.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed).max(1)
    }

    /// The most of `total` partitions this instance should hold.
    pub fn share(&self, total: usize) -> usize {
        total.div_ceil(self.live())
    }

    /// True when holding one more than `owned` stays within the fair share.
    pub fn may_take(&self, owned: usize, total: usize) -> bool {
        owned < self.share(total)
    }

    /// How many of the `owned` partitions to hand back.
    pub fn excess(&self, owned: usize, total: usize) -> usize {
        owned.saturating_sub(self.share(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_share_rounds_up() {
        let m = Membership::default();
        assert_eq!(m.share(3), 3);
        m.set_live(2);
        assert_eq!(m.share(3), 2);
        assert!(m.may_take(1, 3) && !m.may_take(2, 3));
        assert_eq!(m.excess(3, 3), 1);
        m.set_live(4);
        assert_eq!(m.share(3), 1);
        m.set_live(0);
        assert_eq!(m.share(3), 3, "never fewer than this instance");
    }
}
