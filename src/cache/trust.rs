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
/// tracking connection.
#[derive(Debug)]
pub(super) struct Trust {
    /// The epoch verified on the current tracking connection (-1: none).
    verified: AtomicI64,
    /// The epoch of this instance's last look at the outbox (-1: none yet),
    /// whose marker the tracking connection reads.
    wanted: AtomicI64,
    distrusted: Mutex<VecDeque<i64>>,
}

impl Trust {
    pub(super) fn new() -> Self {
        Self {
            verified: AtomicI64::new(NONE),
            wanted: AtomicI64::new(NONE),
            distrusted: Mutex::new(VecDeque::new()),
        }
    }

    /// The epoch reads may use now, if verified.
    pub(super) fn verified(&self) -> Option<Epoch> {
        Some(self.verified.load(Ordering::Acquire))
            .filter(|e| *e >= 0)
            .map(Epoch)
    }

    pub(super) fn is_verified(&self, epoch: Epoch) -> bool {
        self.verified.load(Ordering::Acquire) == epoch.0
    }

    /// Sets the epoch the tracking connection should verify; true when it changed.
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
        let _ = self
            .verified
            .compare_exchange(epoch.0, NONE, Ordering::AcqRel, Ordering::Acquire);
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

    /// No epoch is verified (the connection ended, or the marker changed and
    /// is being read again).
    pub(super) fn unverify(&self) {
        self.verified.store(NONE, Ordering::Release);
    }

    /// A flush: the epochs verified or wanted now are distrusted. Returns
    /// the epochs newly distrusted.
    pub(super) fn flushed(&self) -> Vec<Epoch> {
        let verified = self.verified.swap(NONE, Ordering::AcqRel);
        let wanted = self.wanted.load(Ordering::Acquire);
        let mut newly = Vec::new();
        for epoch in [verified, wanted] {
            if epoch >= 0 && self.distrust(Epoch(epoch)) {
                newly.push(Epoch(epoch));
            }
        }
        newly
    }

    /// The marker of `epoch` read on a connection to the server `run_id`:
    /// verifies the epoch when it holds that run id (and the epoch is not
    /// distrusted), distrusts it when it is missing or holds another. Returns
    /// true when the epoch was newly distrusted.
    pub(super) fn marker_read(&self, epoch: Epoch, marker: Option<&[u8]>, run_id: &str) -> bool {
        if marker == Some(run_id.as_bytes()) {
            if self.distrusts(epoch) {
                self.unverify();
            } else if self.wanted.load(Ordering::Acquire) == epoch.0 {
                self.verified.store(epoch.0, Ordering::Release);
            }
            return false;
        }
        self.unverify();
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
    }

    #[test]
    fn an_epoch_is_verified_only_by_its_own_servers_marker() {
        let trust = Trust::new();
        let e = Epoch(5);
        assert!(trust.want(e));
        assert!(!trust.want(e), "unchanged");
        assert!(!trust.marker_read(e, Some(RUN.as_bytes()), RUN));
        assert!(trust.is_verified(e));
        assert_eq!(trust.verified(), Some(e));
        trust.unverify();
        assert_eq!(trust.verified(), None);

        // A restarted or promoted server: another run id in the marker.
        assert!(trust.marker_read(e, Some(b"another run id"), RUN));
        assert!(trust.distrusts(e));
        assert!(!trust.marker_read(e, Some(RUN.as_bytes()), RUN));
        assert!(!trust.is_verified(e), "distrusted for good");

        // A flushed server: no marker.
        let f = Epoch(6);
        trust.want(f);
        assert!(trust.marker_read(f, None, RUN));
        assert!(!trust.marker_read(f, None, RUN), "once");
    }

    #[test]
    fn a_flush_distrusts_the_epoch_in_use_even_if_its_marker_comes_back() {
        let trust = Trust::new();
        let e = Epoch(9);
        trust.want(e);
        trust.marker_read(e, Some(RUN.as_bytes()), RUN);
        assert_eq!(trust.flushed(), vec![e]);
        assert_eq!(trust.verified(), None);
        // DEBUG RELOAD of an older dump brings the same marker back.
        trust.marker_read(e, Some(RUN.as_bytes()), RUN);
        assert!(!trust.is_verified(e));
        // The next epoch is believed.
        let next = Epoch(10);
        trust.want(next);
        trust.marker_read(next, Some(RUN.as_bytes()), RUN);
        assert!(trust.is_verified(next));
        assert!(trust.distrusts(e) && !trust.distrusts(next));
    }

    #[test]
    fn a_marker_of_an_epoch_no_longer_wanted_verifies_nothing() {
        let trust = Trust::new();
        trust.want(Epoch(2));
        trust.marker_read(Epoch(1), Some(RUN.as_bytes()), RUN);
        assert_eq!(trust.verified(), None);
    }
}
