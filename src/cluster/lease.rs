//! Holding a partition: its lease in PostgreSQL, taken and renewed by one
//! instance at a time. Losing it (another instance took it after we failed to
//! renew in time) stops our pipeline for that partition.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    app::config::FaultStage,
    fault::Faults,
    store::{Store, StoreError},
};

/// The lease of one partition, as seen by one instance.
#[derive(Debug, Clone)]
pub struct Lease {
    pub store: Store,
    pub topic: String,
    pub partition: i32,
    /// This instance.
    pub owner: Uuid,
    pub ttl: Duration,
}

impl Lease {
    /// Takes or renews the lease; true when this instance holds it now.
    pub async fn try_acquire(&self) -> Result<bool, StoreError> {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        self.store
            .acquire_lease(&self.topic, self.partition, self.owner, ttl_ms)
            .await
    }

    /// Renews the lease every third of its time to live until `owned` is
    /// cancelled; cancels `owned` itself when the lease is lost or could not be
    /// renewed before it expired, or when this task ends in any way (a panic
    /// included), so that the partition is never consumed without its lease
    /// being kept. Returns true when the lease was lost.
    pub async fn keep(self: Arc<Self>, faults: Arc<Faults>, owned: CancellationToken) -> bool {
        let _stop_pipeline = owned.clone().drop_guard();
        let partition = self.partition;
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = owned.cancelled() => return false,
                _ = tokio::time::sleep(self.ttl / 3) => {}
            }
            faults.maybe_panic(FaultStage::Keeper, partition);
            match self.try_acquire().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!(
                        partition,
                        "partition lease taken by another instance; stopping"
                    );
                    owned.cancel();
                    return true;
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "cannot renew the partition lease");
                    // Stop before the lease can have expired (with a margin for clocks).
                    if renewed.elapsed() > self.ttl.mul_f32(0.8) {
                        tracing::warn!(partition, "partition lease may have expired; stopping");
                        owned.cancel();
                        return true;
                    }
                }
            }
        }
    }

    /// Gives the lease up so another instance can take over at once.
    pub async fn release(&self) {
        let partition = self.partition;
        let released = self.store.release_lease(&self.topic, partition, self.owner);
        match tokio::time::timeout(Duration::from_secs(2), released).await {
            Ok(Ok(())) => tracing::info!(partition, "partition lease released"),
            Ok(Err(e)) => {
                tracing::warn!(partition, error = %e, "cannot release the partition lease");
            }
            Err(_) => tracing::warn!(partition, "releasing the partition lease timed out"),
        }
    }
}
