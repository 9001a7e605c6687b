//! Sharing partitions between instances: every instance announces itself
//! (heartbeat) and learns how many are alive; it takes free partitions only
//! up to its fair share, ceil(partitions / instances), and hands back the ones
//! above it so that a newcomer gets work.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::Store;

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

/// This instance's heartbeat row for one topic.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub store: Store,
    pub topic: String,
    pub instance: Uuid,
    /// Rows older than this are dead instances; a beat every third of it.
    pub ttl: Duration,
}

/// Heartbeats every third of the TTL until `shutdown`, recording the live
/// count in `membership` and calling `rebalance` after each beat; leaves the
/// group on the way out.
pub async fn run(
    heartbeat: Heartbeat,
    membership: &Membership,
    rebalance: impl Fn(),
    shutdown: CancellationToken,
) {
    let Heartbeat {
        store,
        topic,
        instance,
        ttl,
    } = heartbeat;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    loop {
        match store.heartbeat(&topic, instance, ttl_ms).await {
            Ok(live) => {
                if live != membership.live() {
                    tracing::info!(instances = live, "consumer group changed");
                }
                membership.set_live(live);
                rebalance();
            }
            Err(e) => tracing::warn!(error = %e, "consumer heartbeat failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
    }
    let leave = store.leave(&topic, instance);
    match tokio::time::timeout(Duration::from_secs(2), leave).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not leave the consumer group"),
        Err(_) => tracing::warn!("leaving the consumer group timed out"),
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
