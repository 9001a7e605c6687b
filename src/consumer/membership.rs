//! Sharing partitions between instances: every instance announces itself
//! (heartbeat) and learns how many are alive; it takes free partitions only
//! up to its fair share, ceil(partitions / instances), and hands back the ones
//! above it so that a newcomer gets work.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{
    ConsumerContext,
    status::{PartitionStatus, Partitions},
};
use crate::store;

/// What this instance knows of the group.
#[derive(Debug)]
pub struct Membership {
    live: AtomicUsize,
    partitions: Partitions,
}

impl Membership {
    pub fn new(partitions: Partitions) -> Self {
        Self {
            live: AtomicUsize::new(1),
            partitions,
        }
    }

    /// Records how many instances are alive, this one included.
    pub fn set_live(&self, live: usize) {
        self.live.store(live, Ordering::Relaxed);
    }

    /// Live instances, this one included.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed).max(1)
    }

    /// The most partitions this instance should hold.
    pub fn share(&self) -> usize {
        self.partitions.len().div_ceil(self.live())
    }

    /// Partitions this instance holds now.
    pub fn owned(&self) -> usize {
        self.partitions
            .snapshot()
            .iter()
            .filter(|s| s.is_owned())
            .count()
    }

    /// True when taking one more partition stays within the fair share.
    pub fn may_take(&self) -> bool {
        self.owned() < self.share()
    }

    /// Hands back the partitions above the fair share (highest numbers first).
    fn hand_back_excess(&self) {
        let share = self.share();
        let mut owned: Vec<Arc<PartitionStatus>> = self
            .partitions
            .snapshot()
            .into_iter()
            .filter(|s| s.is_owned())
            .collect();
        owned.sort_by_key(|s| std::cmp::Reverse(s.partition));
        let excess = owned.len().saturating_sub(share);
        for status in owned.into_iter().take(excess) {
            tracing::info!(
                partition = status.partition,
                share,
                "handing a partition back to rebalance"
            );
            status.hand_back();
        }
    }
}

/// Heartbeats every third of the lease time until `shutdown`, rebalancing as
/// instances come and go; leaves the group on the way out.
pub async fn run(ctx: Arc<ConsumerContext>, shutdown: CancellationToken) {
    let topic = ctx.kafka_settings.topic.as_str();
    let ttl_ms = ctx.lease_ttl.as_millis() as u64;
    loop {
        let beat = async {
            let client = ctx.pool.get().await?;
            store::members::heartbeat(&client, topic, ctx.instance_id, ttl_ms).await
        };
        match beat.await {
            Ok(live) => {
                if live != ctx.membership.live() {
                    tracing::info!(instances = live, "consumer group changed");
                }
                ctx.membership.set_live(live);
                ctx.membership.hand_back_excess();
            }
            Err(e) => tracing::warn!(error = %e, "consumer heartbeat failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(ctx.lease_ttl / 3) => {}
        }
    }
    let leave = async {
        let client = ctx.pool.get().await?;
        store::members::leave(&client, topic, ctx.instance_id).await
    };
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), leave).await {
        tracing::warn!(error = %e, "could not leave the consumer group");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(partitions: i32) -> Membership {
        let ids: Vec<i32> = (0..partitions).collect();
        Membership::new(Partitions::new(&ids, Duration::from_secs(60)))
    }

    #[test]
    fn fair_share_rounds_up() {
        let m = membership(3);
        assert_eq!(m.share(), 3);
        m.set_live(2);
        assert_eq!(m.share(), 2);
        m.set_live(4);
        assert_eq!(m.share(), 1);
        m.set_live(0);
        assert_eq!(m.share(), 3, "never fewer than this instance");
    }

    #[test]
    fn excess_partitions_are_handed_back_highest_first() {
        let m = membership(3);
        let tokens: Vec<CancellationToken> = m
            .partitions
            .snapshot()
            .iter()
            .map(|s| {
                s.set_owned(true);
                let t = CancellationToken::new();
                s.set_handle(Some(t.clone()));
                t
            })
            .collect();
        assert!(!m.may_take());
        m.set_live(2);
        m.hand_back_excess();
        let handed: Vec<bool> = tokens.iter().map(CancellationToken::is_cancelled).collect();
        assert_eq!(handed, vec![false, false, true]);
    }
}
