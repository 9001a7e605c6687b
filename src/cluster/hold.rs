//! Holding a partition: its advisory lock on this instance's ownership
//! session ([`super::session_watch`]). Taken without waiting, polled by standbys;
//! kept for as long as that session lives; given up on hand-back or shutdown.
//! Losing the session stops the partition's pipeline at once.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    OwnershipError,
    session_watch::{Live, Sessions},
};
use crate::{config::FaultStage, fault::Faults};

/// A partition this instance holds, on the session that holds it.
#[derive(Debug)]
pub struct Held {
    live: Arc<Live>,
    partition: i32,
}

/// Takes `partition` on the current session if it is free; `None` when
/// another instance holds it.
pub async fn try_acquire(
    sessions: &Sessions,
    partition: i32,
) -> Result<Option<Held>, OwnershipError> {
    let live = sessions.current().ok_or(OwnershipError::NoSession)?;
    let taken = live.try_own(partition).await?;
    // Taken on a session lost meanwhile: its lock goes when its connection does.
    Ok((taken && !live.is_lost()).then_some(Held { live, partition }))
}

impl Held {
    /// The server process of the session that holds the partition.
    pub fn pid(&self) -> i32 {
        self.live.pid()
    }

    /// Watches the session every `poll` until `owned` is cancelled; cancels
    /// `owned` itself when the session is lost, or when this task ends in any
    /// way (a panic included), so that the partition is never consumed
    /// unwatched. Returns true when the session was lost.
    pub async fn keep(
        self: Arc<Self>,
        poll: Duration,
        faults: Arc<Faults>,
        owned: CancellationToken,
    ) -> bool {
        let _stop_pipeline = owned.clone().drop_guard();
        let partition = self.partition;
        loop {
            tokio::select! {
                () = owned.cancelled() => return false,
                () = self.live.lost() => {
                    tracing::warn!(partition, "ownership session lost; stopping the partition");
                    owned.cancel();
                    return true;
                }
                () = tokio::time::sleep(poll) => {}
            }
            faults.maybe_panic(FaultStage::Keeper, partition);
        }
    }

    /// Gives the partition up so that another instance can take it at once
    /// (nothing to do on a lost session: its end releases it).
    pub async fn release(&self) {
        let partition = self.partition;
        if self.live.is_lost() {
            return;
        }
        match self.live.release(partition).await {
            Ok(true) => tracing::info!(partition, "partition released"),
            Ok(false) => tracing::warn!(partition, "the partition was not held by its session"),
            Err(_) => {} // the session is lost (and said why): its end releases it
        }
    }
}
