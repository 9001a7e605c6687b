//! The near cache: the entries this instance read from Redis, kept in its own
//! memory and dropped as soon as Redis reports that they changed (Redis'
//! server-assisted client-side caching, RESP3 `CLIENT TRACKING`).
//!
//! Why: a cache hit answered from Redis cost a round trip per request, and
//! under load that round trip (system calls on both sides, fred's tasks,
//! Redis' own CPU) was most of what separated a cached read from
//! `/health/live` (perf, under the load test).
//!
//! How it stays exact. One connection, read by one task, carries every
//! lookup that fills the near cache (`GET`), so Redis tracks the keys for
//! it and pushes an `invalidate` message on it when any of them is written
//! (a batch's delete, a reader's lease or fill, an expiry). The task handles
//! the frames in the order they arrive: an entry goes in when its `GET` reply
//! is read and out when a later push names it. A delete's push is queued on
//! this connection before Redis acknowledges the delete, and the delete is
//! acknowledged before its batch commits. A read that starts after a COMMIT
//! may therefore use the near cache only once the reply to a command
//! written after the read started has been handled (a *fence*): everything
//! Redis pushed before that reply has been applied by then. Reads wait for a
//! fence together (one `PING` in flight at a time, or any `GET`), so the
//! cost is one wake-up per read, not a round trip each. If the connection
//! fails, the near cache is emptied and reads answer from PostgreSQL until
//! a new connection believes the epoch again; a read whose fence does not
//! come in time is answered from PostgreSQL.
//!
//! The same connection is the only way reads reach Redis, with the near
//! cache kept or not (`redis.near_cache_entries` = 0 keeps nothing), because
//! its wire order is also what tells a Redis that lost writes apart
//! ([`super::trust`]): a value is answered only if its reply was read while
//! the epoch of the read was verified on this connection.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::{
    Epoch,
    resp::Frame,
    trust::{Trust, Verified},
};
use crate::metrics::Metrics;

mod entries;
mod set;
mod tracking;

use entries::Entries;
pub(super) use set::{Making, NearSet};

/// Lookups queued for the connection at most; a full queue waits.
const QUEUE: usize = 4096;

/// Where and how the near cache connects (taken from the Redis settings).
#[derive(Clone)]
pub(super) struct Target {
    pub place: Place,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: Option<u8>,
    pub tls: Option<TlsConnector>,
    /// Longest wait for a connection, a handshake reply or a write (a lookup
    /// waits for the cache's own timeout).
    pub timeout: Duration,
    /// The hash tag of the marker this connection reads: a cluster's master
    /// keeps its own (`cache/shards.rs`); `None` for one server.
    pub marker_tag: Option<String>,
}

/// The server the tracking connection reads from.
#[derive(Debug, Clone)]
pub(super) enum Place {
    /// One server.
    Server { host: String, port: u16 },
    /// The master that the sentinels name for `service`, asked again at
    /// every connection (`tracking/sentinel.rs`).
    Sentinel {
        sentinels: Vec<(String, u16)>,
        service: String,
    },
    /// One master of a cluster, for the keys of its slots; found a replica
    /// (it failed over), it is left until the layout names its successor.
    ClusterMaster { host: String, port: u16 },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("place", &self.place)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lookup {
    /// A value, as its payload's JSON text.
    Hit { payload: String, near: bool },
    /// No value: absent, or a lease.
    Miss,
    /// Redis answered with an error or not in time, or the value is not JSON.
    Failed,
    /// No tracking connection, or the read's epoch is not (or no longer)
    /// verified on it: answer from PostgreSQL.
    Untrusted,
}

/// The near cache of one instance.
#[derive(Debug, Clone)]
pub(super) struct Near {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Get>,
    timeout: Duration,
}

#[derive(Debug)]
struct Shared {
    trust: Arc<Trust>,
    /// The epoch verified on this connection.
    verified: Verified,
    metrics: Arc<Metrics>,
    entries: Entries,
    /// A connection is up and tracking.
    up: AtomicBool,
    /// Commands written so far (numbered from 1), on any connection.
    sent: AtomicU64,
    /// The highest command number whose reply has been handled.
    done: watch::Sender<u64>,
    /// The highest command number a reader waits for.
    wanted: AtomicU64,
    wake: Notify,
    closed: CancellationToken,
}

#[derive(Debug)]
struct Get {
    key: Box<str>,
    /// The epoch of the read: its reply is a hit only if this epoch is
    /// verified when the reply is read.
    epoch: Epoch,
    reply: oneshot::Sender<Lookup>,
}

impl Near {
    /// Starts the connection task; it connects, and reconnects, on its own.
    pub(super) fn start(
        target: Target,
        trust: Arc<Trust>,
        metrics: Arc<Metrics>,
        max_entries: usize,
        ttl: Duration,
        lookup_timeout: Duration,
    ) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::new(trust, metrics, max_entries, ttl));
        tokio::spawn(tracking::run(Arc::clone(&shared), target, requests));
        Self {
            shared,
            queue,
            timeout: lookup_timeout,
        }
    }

    /// True while a tracking connection is up.
    pub(super) fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// Entries held now.
    pub(super) fn len(&self) -> usize {
        self.shared.entries.len()
    }

    /// Looks `key` (of `epoch`) up: in memory after a fence, or else on the
    /// tracking connection (whose reply also fills the near cache).
    pub(super) async fn get(&self, key: &str, epoch: Epoch) -> Lookup {
        if !self.is_up() {
            return Lookup::Untrusted;
        }
        if self.shared.holds(key) {
            if !self.fence().await {
                return Lookup::Failed;
            }
            // Every push queued before the fence's reply has been applied:
            // a flush since the entry was read has unverified the epoch.
            if !self.shared.believes(epoch) {
                return Lookup::Untrusted;
            }
            if let Some(payload) = self.shared.lookup(key) {
                return Lookup::Hit {
                    payload: payload.as_ref().to_owned(),
                    near: true,
                };
            }
        }
        let (reply, answer) = oneshot::channel();
        let get = Get {
            key: key.into(),
            epoch,
            reply,
        };
        if self.queue.send(get).await.is_err() {
            return Lookup::Untrusted;
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(lookup)) => lookup,
            _ => Lookup::Failed,
        }
    }

    /// Waits until the reply to a command written after this call began has
    /// been handled; false if none came in time.
    async fn fence(&self) -> bool {
        let want = self.shared.sent.load(Ordering::SeqCst) + 1;
        if self.shared.wanted.fetch_max(want, Ordering::SeqCst) < want {
            self.shared.wake.notify_one();
        }
        let mut done = self.shared.done.subscribe();
        let waited = tokio::time::timeout(self.timeout, done.wait_for(|d| *d >= want)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Makes the connection read the marker of the epoch wanted now.
    pub(super) fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// True when reads may believe this connection's server for `epoch`.
    pub(super) fn believes(&self, epoch: Epoch) -> bool {
        self.shared.believes(epoch)
    }

    /// The epoch verified on this connection, if reads may believe it.
    pub(super) fn believed(&self) -> Option<Epoch> {
        self.shared
            .verified
            .get()
            .filter(|epoch| self.shared.believes(*epoch))
    }

    /// Forgets what the connection verified: the wanted epoch changed.
    pub(super) fn unverify(&self) {
        self.shared.verified.clear();
    }

    /// Stops the connection task and forgets every entry.
    pub(super) fn close(&self) {
        self.shared.closed.cancel();
    }
}

impl Shared {
    fn new(trust: Arc<Trust>, metrics: Arc<Metrics>, max_entries: usize, ttl: Duration) -> Self {
        Self {
            trust,
            verified: Verified::new(),
            metrics,
            entries: Entries::new(max_entries, ttl),
            up: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            done: watch::Sender::new(0),
            wanted: AtomicU64::new(0),
            wake: Notify::new(),
            closed: CancellationToken::new(),
        }
    }

    fn believes(&self, epoch: Epoch) -> bool {
        self.trust.believes(&self.verified, epoch)
    }

    fn holds(&self, key: &str) -> bool {
        self.entries.holds(key)
    }

    fn lookup(&self, key: &str) -> Option<Arc<str>> {
        self.entries.lookup(key)
    }

    /// Keeps `payload` for `key`; when full, the eviction policy drops an
    /// entry read less (Redis goes on tracking its key; the push then finds
    /// nothing to drop).
    fn insert(&self, key: Box<str>, payload: Arc<str>) {
        self.entries.insert(key, payload);
    }

    fn invalidate(&self, keys: &[Frame]) {
        let names = keys.iter().filter_map(|key| match key {
            Frame::Bulk(key) => std::str::from_utf8(key).ok(),
            _ => None,
        });
        for key in names {
            self.entries.remove(key);
        }
    }

    fn clear(&self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new().unwrap())
    }

    fn keys(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|n| Frame::Bulk(n.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn pushes_drop_the_keys_they_name_and_a_flush_drops_all() {
        let near = Shared::new(
            Arc::new(Trust::new()),
            metrics(),
            10,
            Duration::from_secs(60),
        );
        for key in ["a", "b", "c"] {
            near.insert(key.into(), Arc::from("1"));
        }
        near.invalidate(&keys(&["a", "c", "unknown"]));
        assert!(!near.holds("a") && near.holds("b") && !near.holds("c"));
        near.clear();
        assert!(!near.holds("b"));
    }

    #[test]
    fn a_full_near_cache_keeps_the_keys_read_again_and_old_entries_are_not_served() {
        let near = Shared::new(
            Arc::new(Trust::new()),
            metrics(),
            100,
            Duration::from_secs(60),
        );
        near.insert("hot".into(), Arc::from("1"));
        for round in 0..50 {
            assert_eq!(near.lookup("hot").as_deref(), Some("1"), "round {round}");
            for cold in 0..20 {
                near.insert(format!("cold-{round}-{cold}").into(), Arc::from("2"));
            }
        }
        assert!(near.entries.len() <= 110, "bounded: {}", near.entries.len());
        assert_eq!(
            near.lookup("hot").as_deref(),
            Some("1"),
            "the hot key stays"
        );

        let expired = Shared::new(Arc::new(Trust::new()), metrics(), 2, Duration::ZERO);
        expired.insert("a".into(), Arc::from("1"));
        assert!(expired.holds("a"));
        assert_eq!(expired.lookup("a"), None, "past the TTL");

        let none = Shared::new(
            Arc::new(Trust::new()),
            metrics(),
            0,
            Duration::from_secs(60),
        );
        none.insert("a".into(), Arc::from("1"));
        assert!(!none.holds("a"), "0 entries: nothing kept");
    }
}
