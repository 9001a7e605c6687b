//! Holding a partition: wait until its lease is ours, then renew it in the
//! background; losing it (another instance took it after we failed to renew
//! in time) stops our pipeline for that partition.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{ConsumerContext, status::PartitionStatus};
use crate::{
    config::FaultStage,
    store::{self, StoreError},
};

async fn try_acquire(ctx: &ConsumerContext, partition: i32) -> Result<bool, StoreError> {
    let client = ctx.pool.get().await?;
    store::leases::acquire(
        &client,
        &ctx.kafka_settings.topic,
        partition,
        ctx.instance_id,
        ctx.lease_ttl.as_millis() as u64,
    )
    .await
}

/// Waits until this instance holds the partition's lease. Returns a token that
/// is cancelled on shutdown or when the lease is lost, or `None` on shutdown.
pub async fn acquire(
    ctx: &ConsumerContext,
    status: &PartitionStatus,
    shutdown: &CancellationToken,
) -> Option<CancellationToken> {
    let partition = status.partition;
    let mut waiting_logged = false;
    loop {
        let attempt = if ctx.membership.may_take() {
            try_acquire(ctx, partition).await
        } else {
            Ok(false) // at our fair share: leave it to another instance
        };
        match attempt {
            Ok(true) => {
                status.set_owned(true);
                status.set_settled();
                tracing::info!(partition, instance = %ctx.instance_id, "partition lease acquired");
                let owned = shutdown.child_token();
                status.set_handle(Some(owned.clone()));
                return Some(owned);
            }
            Ok(false) => {
                status.set_settled();
                // Whatever failed here before is another instance's partition now.
                status.clear_error();
                if !waiting_logged {
                    tracing::info!(partition, "partition left to another instance; standing by");
                    waiting_logged = true;
                }
            }
            Err(e) => tracing::warn!(partition, error = %e, "cannot take the partition lease"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(ctx.lease_ttl / 3) => {}
        }
    }
}

/// Renews the lease every third of its time to live until `owned` is cancelled;
/// cancels `owned` itself when the lease is lost or could not be renewed
/// before it expired, or when this task ends in any way (a panic included), so
/// that the partition is never consumed without its lease being kept. Returns
/// true when the lease was lost.
pub async fn keep(ctx: Arc<ConsumerContext>, partition: i32, owned: CancellationToken) -> bool {
    let _stop_pipeline = owned.clone().drop_guard();
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = owned.cancelled() => return false,
            _ = tokio::time::sleep(ctx.lease_ttl / 3) => {}
        }
        ctx.faults.maybe_panic(FaultStage::Keeper, partition);
        match try_acquire(&ctx, partition).await {
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
                if renewed.elapsed() > ctx.lease_ttl.mul_f32(0.8) {
                    tracing::warn!(partition, "partition lease may have expired; stopping");
                    owned.cancel();
                    return true;
                }
            }
        }
    }
}

/// Gives the lease up at shutdown so another instance can take over at once.
pub async fn release(ctx: &ConsumerContext, partition: i32) {
    let released = async {
        let client = ctx.pool.get().await?;
        store::leases::release(
            &client,
            &ctx.kafka_settings.topic,
            partition,
            ctx.instance_id,
        )
        .await
    };
    match tokio::time::timeout(Duration::from_secs(2), released).await {
        Ok(Ok(())) => tracing::info!(partition, "partition lease released"),
        Ok(Err(e)) => tracing::warn!(partition, error = %e, "cannot release the partition lease"),
        Err(_) => tracing::warn!(partition, "releasing the partition lease timed out"),
    }
}
