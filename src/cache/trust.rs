//! Whether this instance may believe what Redis holds for an epoch.
//!
//! Redis can lose acknowledged writes while keeping older ones: a restart
//! from a snapshot, a failover to a lagging replica, a `DEBUG RELOAD` of an
//! older dump. A delete lost that way brings back an entry older than a
//! commit. The near cache's tracking connection (`cache/near.rs`) decides,
//! frame by frame in wire order, whether its server can be believed for the
//! epoch of this instance's permit:
//!
//! - an epoch is *verified* on a connection once the epoch's marker, read on
//!   it, holds the run id of that very server (a restarted or promoted server
//!   has another run id; a flushed one has no marker);
//! - it stops being verified when the connection ends, when Redis pushes a
//!   flush (`FLUSHALL`, `FLUSHDB`, `DEBUG RELOAD`, a replica's full resync:
//!   Redis pushes it to every tracking connection, before any later reply)
//!   or when the marker changes;
//! - evidence of lost data (a flush, a marker missing or of another server,
//!   an invalidation that found the marker missing) *distrusts* the epoch
//!   for good: it is never verified again, and the outbox watch asks for a
//!   new one ([`super::outbox_watch`]).
//!
//! In a Redis Cluster each master has its own marker (a key of its own
//! slots, `cache/shards.rs`) and its own tracking connection: a shard whose
//! master failed over to a lagging replica holds its marker with the old
//! master's run id, or none, and the epoch ends for every shard.
//!
//! A flush or a restart is seen by every instance connected at the time; a
//! `DEBUG RELOAD` made while an instance's tracking connection was down is
//! seen only by the instances connected then (docs/SPEC.md, section 8).

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
};

use super::Epoch;

/// Distrusted epochs remembered; older ones are long gone from PostgreSQL.
const REMEMBERED: usize = 16;

const NONE: i64 = -1;

/// Why an epoch was distrusted (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    /// Redis pushed a flush: its data set was replaced or emptied.
    Flush,
    /// The marker is missing, or holds another server's run id.
    Marker,
    /// A batch's or a delivery's deletes found the marker missing.
    Invalidation,
}

impl Distrust {
    pub fn as_str(self) -> &'static str {
        match self {
            Distrust::Flush => "flush",
            Distrust::Marker => "marker",
            Distrust::Invalidation => "invalidation",
        }
    }
}

/// The trust state of one instance, shared by its reads (lock-free) and its
/// tracking connections: the epoch they should verify, and the epochs never
/// to be believed again.
#[derive(Debug)]
pub(super) struct Trust {
    /// The epoch of this instance's last look at the outbox (-1: none yet),
    /// whose marker each tracking connection reads.
    wanted: AtomicI64,
    /// The epoch distrusted last, checked by every read without a lock: a
    /// distrust found on one connection (or by a batch's deletes) stops the
    /// reads of every connection at once.
    last_distrusted: AtomicI64,
    distrusted: Mutex<VecDeque<i64>>,
}

/// The epoch verified on one tracking connection (-1: none): its server
/// holds the epoch's marker with its own run id. A cluster has one per
/// master, each believed only for the keys of its own slots.
#[derive(Debug)]
pub(super) struct Verified(AtomicI64);

impl Verified {
    pub(super) fn new() -> Self {
        Self(AtomicI64::new(NONE))
    }

    pub(super) fn get(&self) -> Option<Epoch> {
        Some(self.0.load(Ordering::Acquire))
            .filter(|e| *e >= 0)
            .map(Epoch)
    }

    /// No epoch is verified (the connection ended, or the marker changed and
    /// is being read again).
    pub(super) fn clear(&self) {
        self.0.store(NONE, Ordering::Release);
    }
}

impl Trust {
    pub(super) fn new() -> Self {
        Self {
            wanted: AtomicI64::new(NONE),
            last_distrusted: AtomicI64::new(NONE),
            distrusted: Mutex::new(VecDeque::new()),
        }
    }

    /// True when reads may believe `verified`'s server for `epoch` now.
    pub(super) fn believes(&self, verified: &Verified, epoch: Epoch) -> bool {
        verified.0.load(Ordering::Acquire) == epoch.0
            && self.last_distrusted.load(Ordering::Acquire) != epoch.0
    }

    /// Sets the epoch the tracking connections should verify; true when it changed.
    pub(super) fn want(&self, epoch: Epoch) -> bool {
        self.wanted.swap(epoch.0, Ordering::AcqRel) != epoch.0
    }

    pub(super) fn wanted(&self) -> Option<Epoch> {
        Some(self.wanted.load(Ordering::Acquire))
            .filter(|e| *e >= 0)
            .map(Epoch)
    }

    /// True when `epoch` must never be believed again here. Fails closed: a
    /// thread that panicked while it held the list may have been recording
    /// a distrust, so then no epoch is believed.
    pub(super) fn distrusts(&self, epoch: Epoch) -> bool {
        match self.distrusted.lock() {
            Ok(distrusted) => distrusted.contains(&epoch.0),
            Err(_) => true,
        }
    }

    /// Distrusts `epoch` for good; true the first time.
    pub(super) fn distrust(&self, epoch: Epoch) -> bool {
        self.last_distrusted.store(epoch.0, Ordering::Release);
        let mut distrusted = self
            .distrusted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if distrusted.contains(&epoch.0) {
            return false;
        }
        distrusted.push_back(epoch.0);
        if distrusted.len() > REMEMBERED {
            distrusted.pop_front();
        }
        true
    }

    /// A flush on `verified`'s connection: the epochs verified or wanted now
    /// are distrusted. Returns the epochs newly distrusted.
    pub(super) fn flushed(&self, verified: &Verified) -> Vec<Epoch> {
        let on_connection = verified.0.swap(NONE, Ordering::AcqRel);
        let wanted = self.wanted.load(Ordering::Acquire);
        let mut newly = Vec::new();
        for epoch in [on_connection, wanted] {
            if epoch >= 0 && self.distrust(Epoch(epoch)) {
                newly.push(Epoch(epoch));
            }
        }
        newly
    }

    /// The marker of `epoch` read on `verified`'s connection, to the server
    /// `run_id`: verifies the epoch there when it holds that run id (and the
    /// epoch is not distrusted), distrusts it when it is missing or holds
    /// another. Returns true when the epoch was newly distrusted.
    pub(super) fn marker_read(
        &self,
        verified: &Verified,
        epoch: Epoch,
        marker: Option<&[u8]>,
        run_id: &str,
    ) -> bool {
        if marker == Some(run_id.as_bytes()) {
            if self.distrusts(epoch) {
                verified.clear();
            } else if self.wanted.load(Ordering::Acquire) == epoch.0 {
                verified.0.store(epoch.0, Ordering::Release);
            }
            return false;
        }
        verified.clear();
        self.distrust(epoch)
    }
}

/// The `run_id` line of `INFO server`'s text: what an epoch's marker holds
/// (written by [`super::Cache::mark_epoch`]) and what the tracking connection
/// compares it with, read the same way on both sides.
pub(super) fn info_run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_poisoned_list_distrusts_every_epoch_and_still_records() {
        let trust = std::sync::Arc::new(Trust::new());
        let holder = std::sync::Arc::clone(&trust);
        let poisoned = std::thread::spawn(move || {
            let _held = holder.distrusted.lock().unwrap();
            panic!("a panic while the list is held");
        })
        .join();
        assert!(poisoned.is_err());
        assert!(trust.distrusted.is_poisoned());
        assert!(trust.distrusts(Epoch(1)), "fails closed");
        assert!(trust.distrust(Epoch(2)), "recorded the first time");
        assert!(!trust.distrust(Epoch(2)), "once");
        let v = Verified::new();
        trust.want(Epoch(3));
        trust.marker_read(&v, Epoch(3), Some(RUN.as_bytes()), RUN);
        assert!(
            !trust.believes(&v, Epoch(3)),
            "nothing verified while poisoned"
        );
    }

    #[test]
    fn an_epoch_is_verified_only_by_its_own_servers_marker() {
        let trust = Trust::new();
        let v = Verified::new();
        let e = Epoch(5);
        assert!(trust.want(e));
        assert!(!trust.want(e), "unchanged");
        assert!(!trust.marker_read(&v, e, Some(RUN.as_bytes()), RUN));
        assert!(trust.believes(&v, e));
        assert_eq!(v.get(), Some(e));
        v.clear();
        assert_eq!(v.get(), None);

        // A restarted or promoted server: another run id in the marker.
        assert!(trust.marker_read(&v, e, Some(b"another run id"), RUN));
        assert!(trust.distrusts(e));
        assert!(!trust.marker_read(&v, e, Some(RUN.as_bytes()), RUN));
        assert!(!trust.believes(&v, e), "distrusted for good");

        // A flushed server: no marker.
        let f = Epoch(6);
        trust.want(f);
        assert!(trust.marker_read(&v, f, None, RUN));
        assert!(!trust.marker_read(&v, f, None, RUN), "once");
    }

    #[test]
    fn a_distrust_found_on_one_connection_stops_the_reads_of_every_other() {
        let trust = Trust::new();
        let (a, b) = (Verified::new(), Verified::new());
        let e = Epoch(7);
        trust.want(e);
        trust.marker_read(&a, e, Some(b"run a"), "run a");
        trust.marker_read(&b, e, Some(b"run b"), "run b");
        assert!(trust.believes(&a, e) && trust.believes(&b, e));
        // Shard b failed over to a replica with another run id.
        assert!(trust.marker_read(&b, e, Some(b"run b"), "run c"));
        assert!(!trust.believes(&b, e));
        assert!(!trust.believes(&a, e), "the epoch is over everywhere");
        // A batch's deletes that found a marker missing do the same.
        let next = Epoch(8);
        trust.want(next);
        trust.marker_read(&a, next, Some(b"run a"), "run a");
        assert!(trust.believes(&a, next));
        assert!(trust.distrust(next));
        assert!(!trust.believes(&a, next));
    }

    #[test]
    fn a_flush_distrusts_the_epoch_in_use_even_if_its_marker_comes_back() {
        let trust = Trust::new();
        let v = Verified::new();
        let e = Epoch(9);
        trust.want(e);
        trust.marker_read(&v, e, Some(RUN.as_bytes()), RUN);
        assert_eq!(trust.flushed(&v), vec![e]);
        assert_eq!(v.get(), None);
        // DEBUG RELOAD of an older dump brings the same marker back.
        trust.marker_read(&v, e, Some(RUN.as_bytes()), RUN);
        assert!(!trust.believes(&v, e));
        // The next epoch is believed.
        let next = Epoch(10);
        trust.want(next);
        trust.marker_read(&v, next, Some(RUN.as_bytes()), RUN);
        assert!(trust.believes(&v, next));
        assert!(trust.distrusts(e) && !trust.distrusts(next));
    }

    #[test]
    fn a_marker_of_an_epoch_no_longer_wanted_verifies_nothing() {
        let trust = Trust::new();
        let v = Verified::new();
        trust.want(Epoch(2));
        trust.marker_read(&v, Epoch(1), Some(RUN.as_bytes()), RUN);
        assert_eq!(v.get(), None);
    }
}
