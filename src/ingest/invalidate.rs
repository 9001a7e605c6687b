//! The cache side of a batch transaction, before its COMMIT: the key of every
//! row the batch changed is deleted, sent while the next step of the writes
//! runs ([`super::apply`]; the keys come from [`movement_keys`] and
//! [`stock_keys`]). When Redis does not acknowledge the deletes, the keys
//! (with the rows' new versions) are written to the cache outbox
//! in the same transaction instead ([`crate::store::outbox`]), and the batch
//! commits only while it holds an *announcement*: an outbox row this instance
//! committed at least `outbox.permit_ms` earlier and that has existed ever
//! since, so that every instance has stopped reading the cache before the
//! batch becomes visible (the argument is in docs/SPEC.md, section 8).

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::{
    cache,
    metrics::Metrics,
    store::{Client, Store, StoreError, apply::Touched, outbox},
};

/// Own outbox rows remembered as announcements; enough for one outage.
const REMEMBERED: usize = 8;

/// The outbox rows this instance committed, each with the instant since which
/// the outbox has been non-empty without a break as long as the row exists.
#[derive(Debug)]
pub struct Announcements {
    /// How long an announcement must have existed before a batch relies on
    /// it: `outbox.permit_ms`, the longest a reader's permit lasts.
    permit: Duration,
    rows: Mutex<Vec<Announced>>,
    /// One announcement at a time, shared by every partition of this instance.
    announcing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Announced {
    id: i64,
    since: Instant,
    /// A batch row (with keys); otherwise an announcement of its own.
    keyed: bool,
}

/// What became of a batch's cache deletes before its COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// Redis acknowledged every delete (or the batch changed no row).
    Delivered,
    /// The keys went to outbox row `row`; the transaction holds an
    /// announcement made at `since`.
    Queued { row: i64, since: Instant },
    /// Redis did not acknowledge and no announcement is old enough: roll
    /// back, [`announce`], and apply the batch again.
    Unannounced,
}

impl Announcements {
    pub fn new(permit: Duration) -> Self {
        Self {
            permit,
            rows: Mutex::new(Vec::new()),
            announcing: tokio::sync::Mutex::new(()),
        }
    }

    fn rows(&self) -> MutexGuard<'_, Vec<Announced>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rows old enough to rely on, newest first.
    fn ready(&self) -> Vec<Announced> {
        let mut ready: Vec<Announced> = self
            .rows()
            .iter()
            .filter(|a| a.since.elapsed() >= self.permit)
            .copied()
            .collect();
        ready.sort_by_key(|a| std::cmp::Reverse(a.id));
        ready
    }

    fn forget(&self, ids: &[i64]) {
        self.rows().retain(|a| !ids.contains(&a.id));
    }

    fn remember(&self, row: Announced) {
        let mut rows = self.rows();
        rows.push(row);
        if rows.len() > REMEMBERED {
            // The oldest batch row goes first: it is the next to be delivered.
            let oldest = rows
                .iter()
                .enumerate()
                .filter(|(_, a)| a.keyed)
                .min_by_key(|(_, a)| a.id)
                .map_or(0, |(i, _)| i);
            rows.remove(oldest);
        }
    }

    /// Forgets the announcements (rows without keys) a batch row announced
    /// since `since` now stands in for, and returns their ids.
    fn superseded(&self, since: Instant) -> Vec<i64> {
        let mut rows = self.rows();
        let ids = rows
            .iter()
            .filter(|a| !a.keyed && a.since >= since)
            .map(|a| a.id)
            .collect();
        rows.retain(|a| a.keyed || a.since < since);
        ids
    }

    /// How long until some remembered row is old enough; `None` when none is remembered.
    fn wait(&self) -> Option<Duration> {
        self.rows()
            .iter()
            .map(|a| self.permit.saturating_sub(a.since.elapsed()))
            .min()
    }
}

/// For a batch whose deletes Redis did not all acknowledge while it was
/// written: writes the keys of the rows `touched` to the outbox in `tx` and
/// holds an announcement old enough to commit with.
pub async fn before_commit(
    announcements: &Announcements,
    tx: &Transaction<'_>,
    touched: &Touched,
) -> Result<Prepared, StoreError> {
    let keys = stale_keys(touched);
    let ready = announcements.ready();
    if ready.is_empty() {
        return Ok(Prepared::Unannounced);
    }
    let ids: Vec<i64> = ready.iter().map(|a| a.id).collect();
    let held = outbox::hold(tx, &ids).await?;
    // Newest first: the rows before the one held are gone (or being delivered).
    let position = held.and_then(|h| ids.iter().position(|id| *id == h));
    announcements.forget(&ids[..position.unwrap_or(ids.len())]);
    let Some(position) = position else {
        return Ok(Prepared::Unannounced);
    };
    let (keys, versions): (Vec<String>, Vec<i64>) = keys.into_iter().unzip();
    let row = outbox::insert(tx, &keys, &versions).await?;
    Ok(Prepared::Queued {
        row,
        since: ready[position].since,
    })
}

/// After the COMMIT of a batch whose keys were queued: its row now
/// announces from the same instant as the row it held, and the announcements
/// it stands in for are deleted (a failure only leaves them to the outbox
/// watch, which deletes old announcements).
pub async fn after_commit(
    announcements: &Announcements,
    metrics: &Metrics,
    client: &Client,
    prepared: Prepared,
) {
    let Prepared::Queued { row, since } = prepared else {
        return;
    };
    metrics.outbox_queued();
    announcements.remember(Announced {
        id: row,
        since,
        keyed: true,
    });
    let superseded = announcements.superseded(since);
    if superseded.is_empty() {
        return;
    }
    if let Err(e) = outbox::drop_announcements(client, &superseded).await {
        tracing::debug!(error = %e, "announcements left to the outbox watch");
    }
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
        keyed: false,
    });
    tracing::warn!(
        permit = ?announcements.permit,
        "Redis did not acknowledge a batch's cache invalidations; every instance stops \
         reading the cache before the batch commits with them in the outbox"
    );
    tokio::time::sleep(announcements.permit).await;
    Ok(())
}

/// The cache key and new version of each touched row.
fn stale_keys(touched: &Touched) -> Vec<(String, i64)> {
    let mut keys = movement_keys(&touched.movements);
    keys.extend(stock_keys(&touched.stock));
    keys
}

/// The cache key and new version of each movement row a batch changed.
pub fn movement_keys(movements: &[(Uuid, i64)]) -> Vec<(String, i64)> {
    movements
        .iter()
        .map(|(id, version)| (cache::movement_key(*id), *version))
        .collect()
}

/// The cache key and new version of each stock row a batch changed.
pub fn stock_keys(stock: &[(Uuid, Uuid, i64)]) -> Vec<(String, i64)> {
    stock
        .iter()
        .map(|&(warehouse, product, version)| (cache::stock_key(warehouse, product), version))
        .collect()
}

/// The keys alone, for the deletes.
pub fn keys(entries: Vec<(String, i64)>) -> Vec<String> {
    entries.into_iter().map(|(key, _)| key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_touched_row_gets_its_key_and_version() {
        let (m, w, p) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let touched = Touched {
            movements: vec![(m, 4)],
            stock: vec![(w, p, 9)],
        };
        assert_eq!(
            stale_keys(&touched),
            vec![(cache::movement_key(m), 4), (cache::stock_key(w, p), 9)]
        );
    }

    #[test]
    fn only_rows_older_than_the_permit_announce_and_batch_rows_replace_announcements() {
        let permit = Duration::from_millis(500);
        let announcements = Announcements::new(permit);
        assert_eq!(announcements.wait(), None, "nothing announced");
        let old = Instant::now().checked_sub(permit * 2).unwrap();
        let young = Instant::now();
        let marker = |id, since| Announced {
            id,
            since,
            keyed: false,
        };
        announcements.remember(marker(1, old));
        announcements.remember(marker(2, young));
        let ready: Vec<i64> = announcements.ready().iter().map(|a| a.id).collect();
        assert_eq!(ready, vec![1], "the young one is not ready yet");
        assert_eq!(announcements.wait(), Some(Duration::ZERO));

        // A batch row that held announcement 1 stands in for both.
        announcements.remember(Announced {
            id: 3,
            since: old,
            keyed: true,
        });
        assert_eq!(announcements.superseded(old), vec![1, 2]);
        let ready: Vec<i64> = announcements.ready().iter().map(|a| a.id).collect();
        assert_eq!(ready, vec![3]);

        for id in 4..20 {
            announcements.remember(Announced {
                id,
                since: old,
                keyed: true,
            });
        }
        let ids: Vec<i64> = announcements.rows().iter().map(|a| a.id).collect();
        assert_eq!(ids, (12..20).collect::<Vec<_>>(), "the newest are kept");
        announcements.forget(&[19, 18]);
        assert_eq!(announcements.ready()[0].id, 17);
    }
}
