//! The instance's ownership session, kept open and watched. Every partition
//! this instance consumes is an advisory lock on that one session, so the
//! session's fate is theirs: it is checked every `poll`, and if it fails or
//! goes without an answer for half the server's `silence`, it is lost at
//! once: every partition held on it stops, its connection closes once they
//! have stopped, and a new session competes again. The server ends a silent
//! session only after the full `silence`, so a cut-off instance has stopped
//! before another can take its partitions. The same check counts the live
//! instances of the topic, which sets the fair share.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{OwnershipError, membership::Membership};
use crate::store::{Store, StoreError, session::Session};

/// How the session is watched (`consumer.takeover_poll_ms`, `consumer.lease_ttl_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often a standby tries a free partition, and the holder checks its session.
    pub poll: Duration,
    /// Silence after which the server ends the session, releasing its locks.
    pub silence: Duration,
}

impl Timing {
    /// How long this instance goes without an answer from its session before
    /// it gives every partition up: half the server's `silence`.
    pub fn deadline(&self) -> Duration {
        self.silence / 2
    }
}

/// An open ownership session, and whether it was lost.
#[derive(Debug)]
pub struct Live {
    session: Session,
    lost: CancellationToken,
    deadline: Duration,
}

impl Live {
    /// The server process of the session (its `pid` in `pg_locks`).
    pub fn pid(&self) -> i32 {
        self.session.pid()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Completes once the session is lost.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }

    /// Gives the session up: every partition held on it stops.
    pub fn lose(&self, why: &OwnershipError) {
        if !self.lost.is_cancelled() {
            tracing::warn!(pid = self.pid(), error = %why, "ownership session lost; every partition held on it stops");
            self.lost.cancel();
        }
    }

    /// Takes `partition` without waiting; true when this session holds it now.
    pub async fn try_own(&self, partition: i32) -> Result<bool, OwnershipError> {
        self.answer(self.deadline, self.session.try_own(partition))
            .await
    }

    /// Gives `partition` up; false when this session did not hold it. If it
    /// cannot, the session is lost: its end is then what releases the partition.
    pub async fn release(&self, partition: i32) -> Result<bool, OwnershipError> {
        let released = self
            .answer(self.deadline, self.session.release(partition))
            .await;
        if let Err(e) = &released {
            self.lose(e);
        }
        released
    }

    async fn members(&self, limit: Duration) -> Result<usize, OwnershipError> {
        self.answer(limit, self.session.members()).await
    }

    /// A statement's answer within `limit`. An error the server answered
    /// with (a full lock table, say) leaves the session as it was: the
    /// statement changed nothing. Anything else loses the session: after a
    /// lost connection or no answer nobody knows what the session holds, and
    /// closing it is the one way to know it holds nothing.
    async fn answer<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, OwnershipError> {
        let error = match tokio::time::timeout(limit, call).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) if e.code().is_some() => return Err(OwnershipError::Store(e)),
            Ok(Err(e)) => OwnershipError::Store(e),
            Err(_) => OwnershipError::NoAnswer(self.deadline),
        };
        self.lose(&error);
        Err(error)
    }
}

/// The session partitions are taken on now, shared by the partition tasks.
#[derive(Debug, Default)]
pub struct Sessions {
    current: Mutex<Option<Arc<Live>>>,
}

impl Sessions {
    /// The open session, unless it was lost.
    pub fn current(&self) -> Option<Arc<Live>> {
        self.slot().clone().filter(|live| !live.is_lost())
    }

    fn set(&self, live: Option<Arc<Live>>) {
        *self.slot() = live;
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Live>>> {
        // A poisoned lock still holds a usable value: writers replace it whole.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whose session, on which topic, watched how.
#[derive(Debug, Clone)]
pub struct Keeper {
    pub store: Store,
    pub topic: String,
    pub instance: Uuid,
    pub timing: Timing,
}

/// Opens the ownership session and checks it every `poll` until `stop`; each
/// check records the live instances in `membership` and calls `rebalance`.
/// A lost session is replaced by a new one. Call `stop` only once no
/// partition is consumed any more: the session's end releases them all.
pub async fn run(
    keeper: &Keeper,
    sessions: &Sessions,
    membership: &Membership,
    rebalance: impl Fn(),
    stop: &CancellationToken,
) {
    let mut failing = false;
    loop {
        match open(keeper, membership).await {
            Ok((live, answered)) => {
                failing = false;
                sessions.set(Some(Arc::clone(&live)));
                rebalance();
                watch(keeper, &live, answered, membership, &rebalance, stop).await;
                sessions.set(None);
                // The last partition to stop drops the last handle, which
                // closes the connection; the server then frees what is left.
                drop(live);
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot open the ownership session; retrying");
                failing = true;
            }
            Err(e) => tracing::debug!(error = %e, "cannot open the ownership session"),
        }
        if stop.is_cancelled() {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(keeper.timing.poll) => {}
        }
    }
}

/// Opens a session and counts the instances on it; returns it with the time
/// the count was asked for (when the server was last known to hear us).
async fn open(
    keeper: &Keeper,
    membership: &Membership,
) -> Result<(Arc<Live>, Instant), OwnershipError> {
    let deadline = keeper.timing.deadline();
    let opening = keeper
        .store
        .open_session(&keeper.topic, keeper.instance, keeper.timing.silence);
    let session = tokio::time::timeout(deadline, opening)
        .await
        .map_err(|_| OwnershipError::NoAnswer(deadline))??
        .ok_or(OwnershipError::MemberLockRefused)?;
    let live = Arc::new(Live {
        session,
        lost: CancellationToken::new(),
        deadline,
    });
    let asked = Instant::now();
    let instances = live.members(deadline).await?;
    membership.set_live(instances);
    tracing::info!(pid = live.pid(), instances, "ownership session open");
    Ok((live, asked))
}

/// Checks `live` every `poll` until `stop` or its loss. It is lost once
/// `deadline` has passed since the last check that was answered was sent:
/// the server heard that check, so it cannot end the session (and release
/// its locks) before `silence` after it, twice as long.
async fn watch(
    keeper: &Keeper,
    live: &Live,
    mut answered: Instant,
    membership: &Membership,
    rebalance: &impl Fn(),
    stop: &CancellationToken,
) {
    // Nothing may stay held on a session nobody watches, even after a panic.
    let _lose_on_exit = live.lost.clone().drop_guard();
    let deadline = keeper.timing.deadline();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = live.lost() => return,
            () = tokio::time::sleep(keeper.timing.poll) => {}
        }
        let asked = Instant::now();
        let left = (answered + deadline).saturating_duration_since(asked);
        let instances = match live.members(left).await {
            Ok(instances) => instances,
            Err(e) if !live.is_lost() => {
                // The server answered, with an error: it hears us.
                tracing::warn!(error = %e, "cannot count the consumer instances");
                answered = asked;
                continue;
            }
            Err(_) => return, // lost, and said why
        };
        answered = asked;
        if instances != membership.live() {
            tracing::info!(instances, "consumer group changed");
        }
        membership.set_live(instances);
        rebalance();
    }
}
