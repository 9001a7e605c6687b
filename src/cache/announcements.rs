//! Announcements: how a batch whose deletes Redis did not acknowledge may
//! still commit. Its keys go to the cache outbox in the same transaction
//! ([`super::outbox`]), each key once, or, past `outbox.max_keys` waiting,
//! the mark that makes every entry suspect. The batch commits them only
//! while it holds an *announcement*: an outbox row this instance committed
//! at least `outbox.permit_ms` earlier and that has existed ever since, so
//! that every instance has stopped reading the cache before the batch
//! becomes visible (the argument is in docs/SPEC.md, section 8). Which keys
//! a batch deletes is the pipeline's business ([`crate::ingest::invalidate`]);
//! when its rows may commit without them delivered is decided here.

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use deadpool_postgres::Transaction;

use super::outbox::{self, Queued};
use crate::{
    metrics::Metrics,
    store::{Client, Store, StoreError},
};

/// Own announcements remembered; enough for one outage.
const REMEMBERED: usize = 8;

/// The announcements this instance committed, each with the instant it was
/// committed by this instance's clock.
#[derive(Debug)]
pub struct Announcements {
    /// How long an announcement must have existed before a batch relies on
    /// it: `outbox.permit_ms`, the longest a reader's permit lasts.
    permit: Duration,
    /// `outbox.max_keys`: keys waiting at most, before the mark stands for them.
    max_keys: i64,
    rows: Mutex<Vec<Announced>>,
    /// One announcement at a time, shared by every partition of this instance.
    announcing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Announced {
    id: i64,
    since: Instant,
}

/// What became of a batch's cache deletes before its COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// Redis acknowledged every delete.
    Delivered,
    /// The batch changed no row: nothing to delete, and nothing learnt of
    /// whether Redis takes writes.
    NothingToDelete,
    /// The keys wait in the outbox, or the mark stands for them; the
    /// transaction holds an announcement old enough.
    Queued(Queued),
    /// Redis did not acknowledge and no announcement is old enough: roll
    /// back, [`announce`], and apply the batch again.
    Unannounced,
}

impl Announcements {
    pub fn new(permit: Duration, max_keys: i64) -> Self {
        Self {
            permit,
            max_keys,
            rows: Mutex::new(Vec::new()),
            announcing: tokio::sync::Mutex::new(()),
        }
    }

    fn rows(&self) -> MutexGuard<'_, Vec<Announced>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids of the announcements old enough to rely on, newest first.
    fn ready(&self) -> Vec<i64> {
        let mut ready: Vec<Announced> = self
            .rows()
            .iter()
            .filter(|a| a.since.elapsed() >= self.permit)
            .copied()
            .collect();
        ready.sort_by_key(|a| std::cmp::Reverse(a.id));
        ready.into_iter().map(|a| a.id).collect()
    }

    fn forget(&self, ids: &[i64]) {
        self.rows().retain(|a| !ids.contains(&a.id));
    }

    fn remember(&self, row: Announced) {
        let mut rows = self.rows();
        rows.push(row);
        if rows.len() > REMEMBERED {
            rows.remove(0); // the oldest
        }
    }

    /// Forgets every announcement and returns their ids.
    fn take_all(&self) -> Vec<i64> {
        self.rows().drain(..).map(|a| a.id).collect()
    }

    /// True when this instance remembers announcements of its own.
    pub fn any(&self) -> bool {
        !self.rows().is_empty()
    }

    /// How long until some remembered announcement is old enough; `None`
    /// when none is remembered.
    fn wait(&self) -> Option<Duration> {
        self.rows()
            .iter()
            .map(|a| self.permit.saturating_sub(a.since.elapsed()))
            .min()
    }
}

/// For a batch whose deletes Redis did not all acknowledge while it was
/// written: holds an announcement old enough to commit with, then queues
/// `keys` (or the mark) in `tx`.
pub async fn before_commit(
    announcements: &Announcements,
    tx: &Transaction<'_>,
    mut keys: Vec<String>,
) -> Result<Prepared, StoreError> {
    let ready = announcements.ready();
    if ready.is_empty() {
        return Ok(Prepared::Unannounced);
    }
    let held = outbox::hold(tx, &ready).await?;
    // Newest first: the rows before the one held are gone (or being deleted).
    let position = held.and_then(|h| ready.iter().position(|id| *id == h));
    announcements.forget(&ready[..position.unwrap_or(ready.len())]);
    if position.is_none() {
        return Ok(Prepared::Unannounced);
    }
    let queued = outbox::queue(tx, &mut keys, announcements.max_keys).await?;
    Ok(Prepared::Queued(queued))
}

/// After the COMMIT: counts a queued batch; after a batch whose deletes
/// Redis acknowledged, withdraws this instance's announcements
/// ([`withdraw`]). A batch with nothing to delete proves nothing: a Redis
/// that refuses writes (a read-only replica) must not see the
/// announcements the other partitions' batches commit with withdrawn.
pub async fn on_committed(
    announcements: &Announcements,
    metrics: &Metrics,
    client: &Client,
    prepared: Prepared,
) {
    match prepared {
        Prepared::Queued(queued) => metrics.outbox_queued(queued == Queued::Mark),
        Prepared::Delivered => {
            withdraw(announcements, client).await;
        }
        Prepared::NothingToDelete | Prepared::Unannounced => {}
    }
}

/// Deletes this instance's announcements, once Redis answers it again (they
/// would keep every instance off the cache), except those a batch of
/// another partition still holds. A failure only leaves them to the outbox
/// watch, which deletes old announcements. Returns how many were deleted.
pub async fn withdraw(announcements: &Announcements, client: &Client) -> u64 {
    let ids = announcements.take_all();
    if ids.is_empty() {
        return 0;
    }
    outbox::drop_announcements(client, &ids)
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "announcements left to the outbox watch");
            0
        })
}

/// Commits an announcement and waits until it is old enough to rely on, or
/// only waits when another partition of this instance announced already.
pub async fn announce(announcements: &Announcements, store: &Store) -> Result<(), StoreError> {
    let _one_at_a_time = announcements.announcing.lock().await;
    if let Some(wait) = announcements.wait() {
        tokio::time::sleep(wait).await;
        return Ok(());
    }
    let id = outbox::announce(&store.client().await?).await?;
    announcements.remember(Announced {
        id,
        since: Instant::now(),
    });
    tracing::warn!(
        permit = ?announcements.permit,
        "Redis did not acknowledge a batch's cache invalidations; every instance stops \
         reading the cache before the batch commits with them in the outbox"
    );
    tokio::time::sleep(announcements.permit).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_announcements_older_than_the_permit_are_relied_on() {
        let permit = Duration::from_millis(500);
        let announcements = Announcements::new(permit, 10);
        assert_eq!(announcements.wait(), None, "nothing announced");
        let old = Instant::now().checked_sub(permit * 2).unwrap();
        let young = Instant::now();
        announcements.remember(Announced { id: 1, since: old });
        announcements.remember(Announced {
            id: 2,
            since: young,
        });
        assert_eq!(
            announcements.ready(),
            vec![1],
            "the young one is not ready yet"
        );
        assert_eq!(announcements.wait(), Some(Duration::ZERO));

        for id in 3..20 {
            announcements.remember(Announced { id, since: old });
        }
        assert_eq!(
            announcements.rows().len(),
            REMEMBERED,
            "the newest are kept"
        );
        assert_eq!(announcements.ready()[0], 19);
        announcements.forget(&[19, 18]);
        assert_eq!(announcements.ready()[0], 17);
        assert_eq!(announcements.take_all().len(), REMEMBERED - 2);
        assert_eq!(announcements.wait(), None);
    }
}
