//! Redis in front of PostgreSQL, and everything that keeps it exact: the
//! cache's whole protocol lives under this module. Its one invariant
//! (docs/SPEC.md, section 8): *no read that starts after a COMMIT is
//! answered from an entry older than that commit*. Put otherwise, no entry a
//! committed batch changed is served, no instance serves an entry an
//! unacknowledged invalidation covers, and a Redis that lost writes is never
//! read for the entries it held before. Each part enforces its share:
//!
//! - *leases* (`cache/scripts.rs`): a reader stores what it read from
//!   PostgreSQL only over the lease it took before, so a delete in between
//!   wins;
//! - *deletes before the COMMIT* ([`Cache::invalidate`]): a batch deletes the
//!   key of every row it changed, after locking the row;
//! - *the outbox and permits* ([`outbox`], [`announcements`],
//!   [`outbox_watch`], `cache/permit.rs`): deletes Redis did not acknowledge
//!   are committed with their batch, under an announcement old enough that
//!   every instance's permit to read the cache has lapsed, and delivered
//!   before any permit comes back;
//! - *epochs and trust* ([`epoch`], [`trust`]): every key carries an epoch,
//!   believed only while its server holds the epoch's marker with its own
//!   run id; lost writes begin a new epoch;
//! - *near-cache fences* (`cache/near.rs`): an entry kept in this instance's
//!   memory answers a read only after the reply to a command written after
//!   the read began, so every invalidation Redis pushed before it is applied.
//!
//! Redis is only an accelerator: every call has a short timeout, failures
//! are logged and counted, and reads fall back to PostgreSQL. The read path
//! the API takes through these calls is `api/cached.rs`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fred::{
    clients::Client,
    interfaces::{ClientLike, LuaInterface},
    types::{
        Builder,
        config::{Config, ReconnectPolicy},
    },
};
use uuid::Uuid;

use crate::{
    config::RedisSettings,
    metrics::{CacheResult, Metrics},
    throttle::Throttle,
    tls::TlsError,
};

/// How long a reader's lease lasts: a fill that takes longer is not stored
/// (the lease lapsed), and a reader that dies holding one delays the key's
/// next fill by no more than this.
const LEASE_MS: u64 = 2_000;

mod absent;
pub mod announcements;
mod connect;
mod deletes;
pub mod epoch;
pub mod eviction;
mod near;
pub mod outbox;
pub mod outbox_watch;
mod pause;
mod permit;
mod resp;
mod scripts;
mod shards;
pub mod trust;
use absent::AbsentFills;
use connect::{connection, near_target};
pub use epoch::{Epoch, Key};

/// The near cache's RESP parser (`cache/resp.rs`), for the fuzz target under
/// `tests/fuzz`: hostile replies, and replies fed in pieces as a socket
/// delivers them. Not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod resp_parser {
    /// One parsed frame; only compared and printed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Frame(super::resp::Frame);

    /// The frame at the start of `buf` and the bytes it took, `None` while it
    /// is incomplete, or the protocol error as text.
    pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
        match super::resp::parse(buf) {
            Ok(parsed) => Ok(parsed.map(|(frame, used)| (Frame(frame), used))),
            Err(e) => Err(e.to_string()),
        }
    }
}
use near::{Lookup, NearSet};
use permit::Permit;
use scripts::{CLAIM, FILL};
use trust::Trust;

/// Errors of the cache layer: start-up, and the writes whose failure the
/// caller acts on (at run time the others are logged and counted).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid Redis URL: {0}")]
    Url(fred::error::Error),
    #[error("Redis TLS (redis.ca_file): {0}")]
    Tls(TlsError),
    #[error("cannot start the Redis client: {0}")]
    Start(fred::error::Error),
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("Redis did not answer in time")]
    Timeout,
    #[error("Redis's INFO server holds no run_id")]
    NoRunId,
    #[error("Redis refused CONFIG GET (managed services often rename or forbid it): {0}")]
    ConfigRefused(fred::error::Error),
    #[error("Redis' CONFIG GET did not show a usable {0}")]
    ConfigHidden(&'static str),
}

/// A reader's right to fill one key: taken before it reads PostgreSQL, and
/// good only while nothing else touches the key ([`Cache::claim`]).
#[derive(Debug)]
pub struct Lease {
    key: String,
    token: String,
}

/// The cache.
#[derive(Debug, Clone)]
pub struct Cache {
    client: Client,
    ttl_secs: u64,
    absent_ttl_secs: u64,
    absent: Arc<AbsentFills>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    permit: Arc<Permit>,
    trust: Arc<Trust>,
    /// Set when Redis failed a batch's deletes (`cache/pause.rs`).
    pause: Arc<pause::Pause>,
    /// The tracking connections reads go through (one per master of a
    /// cluster); `None` for a kind of URL the near cache cannot follow.
    near: Option<NearSet>,
    /// A cluster: a `DEL` names keys of one hash slot only (`CROSSSLOT`).
    clustered: bool,
}

impl Cache {
    /// Starts a client that connects (and reconnects) in the background, giving
    /// the first connection a moment; Redis being down at start-up is not an
    /// error. A `rediss://` URL connects over TLS, checking the server's
    /// certificate and host name against `redis.ca_file` (or the system's roots).
    pub async fn start(
        settings: &RedisSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CacheError> {
        let (config, tls) = connection(settings)?;
        let clustered = matches!(
            config.server,
            fred::types::config::ServerConfig::Clustered { .. }
        );
        let timeout = Duration::from_millis(250);
        let trust = Arc::new(Trust::new());
        let target = near_target(&config, tls, timeout);
        let client = Builder::from_config(Config {
            fail_fast: false,
            ..config
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(1);
            c.internal_command_timeout = Duration::from_secs(1);
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| p.default_command_timeout = timeout)
        // fred reconnects inside its client, so it waits by its own policy,
        // not `retry::Backoff` (which every reconnect loop of ours uses),
        // jittered as well. The first connection is made after the policy's
        // first delay: 10 ms, not 500 (it cost every start 0.5 s), then
        // doubling up to 500 ms between attempts while Redis is away.
        .set_policy({
            let mut policy = ReconnectPolicy::new_exponential(0, 10, 500, 2);
            policy.set_jitter(10);
            policy
        })
        .build()
        .map_err(CacheError::Start)?;
        let making = near::Making {
            trust: Arc::clone(&trust),
            metrics: Arc::clone(&metrics),
            max_entries: settings.near_cache_entries,
            ttl: Duration::from_secs(settings.cache_ttl_secs),
            lookup_timeout: timeout,
        };
        let near = match target {
            Some(target) if clustered => Some(NearSet::cluster(client.clone(), target, making)),
            Some(target) => Some(NearSet::one(target, &making)),
            None => {
                tracing::warn!(
                    "this kind of redis.url cannot be followed: reads answer from PostgreSQL"
                );
                None
            }
        };
        let _connection_task = client.connect();
        if tokio::time::timeout(Duration::from_secs(2), client.wait_for_connect())
            .await
            .is_err()
        {
            tracing::warn!(url = %settings.url, "Redis not reachable yet; answering from PostgreSQL until it is");
        }
        Ok(Self {
            client,
            ttl_secs: settings.cache_ttl_secs,
            absent_ttl_secs: settings.absent_ttl_secs,
            absent: Arc::new(AbsentFills::new(settings.absent_fills_per_sec)),
            timeout,
            metrics,
            permit: Arc::new(Permit::new()),
            trust,
            pause: Arc::new(pause::Pause::new()),
            near,
            clustered,
        })
    }

    /// The epoch reads may use now: a permit is held for it, and every
    /// tracking connection believes its server for it.
    fn usable(&self) -> Option<Epoch> {
        let near = self.near.as_ref()?;
        self.permit
            .epoch()
            .filter(|epoch| near.believes_everywhere(*epoch))
    }

    /// True while the client is connected to Redis.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Lets reads use the cache, in `epoch`, until `deadline`: the outbox was
    /// found empty by a look that started `permit` before it ([`outbox_watch`]).
    pub fn permit_until(&self, deadline: Instant, epoch: Epoch) {
        self.want(epoch);
        self.permit.grant(deadline, epoch);
    }

    /// Withdraws the permit at once: the outbox holds `rows` rows (the epoch
    /// is `epoch`).
    pub fn withdraw(&self, rows: i64, epoch: Epoch) {
        self.permit.withdraw(rows);
        self.want(epoch);
    }

    fn want(&self, epoch: Epoch) {
        if self.trust.want(epoch)
            && let Some(near) = &self.near
        {
            near.want_again();
        }
    }

    /// Rows in the cache outbox at the last look; `None` before the first.
    pub fn outbox_rows(&self) -> Option<i64> {
        self.permit.outbox_rows()
    }

    /// True when this instance found evidence that Redis lost writes of
    /// `epoch` (the outbox watch then asks for a new epoch).
    pub fn distrusts(&self, epoch: Epoch) -> bool {
        self.trust.distrusts(epoch)
    }

    /// The epoch every tracking connection believes its server for, if any.
    pub fn trusted_epoch(&self) -> Option<Epoch> {
        self.near.as_ref().and_then(NearSet::believed)
    }

    /// Waits, `limit` at most, until reads may use the cache (for start-up:
    /// the tracking connection reads the marker of the permit's epoch on its
    /// own time); true when they may.
    pub async fn wait_usable(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.usable().is_none() {
            if Instant::now() >= deadline || self.near.is_none() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Answers PING within the timeout.
    pub async fn ping(&self) -> bool {
        let ping = self.client.ping::<String>(None);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cache ping failed");
                false
            }
            Err(_) => {
                tracing::debug!("cache ping timed out");
                false
            }
        }
    }

    /// Looks `key` up and returns its value as the JSON text it is, once it
    /// is known to be JSON: the API serves it without building the model
    /// again. `None` means "ask PostgreSQL": no permit, an untrusted server,
    /// a miss, a lease, an error, or an entry that does not parse (counted
    /// as an error and logged, never as a hit).
    pub async fn get_json(&self, key: Key) -> Option<String> {
        let (Some(epoch), Some(near)) = (self.usable(), &self.near) else {
            self.metrics.cache_bypassed();
            return None;
        };
        let result = match near.get(&key.in_epoch(epoch), epoch).await {
            Lookup::Hit { payload, near } => {
                self.metrics.cache(CacheResult::Hit);
                if near {
                    self.metrics.cache_near_hit();
                }
                return Some(payload);
            }
            Lookup::Miss => CacheResult::Miss,
            Lookup::Failed => CacheResult::Error,
            Lookup::Untrusted => {
                self.metrics.cache_bypassed();
                return None;
            }
        };
        self.metrics.cache(result);
        None
    }

    /// Takes the lease that lets this reader fill `key` after it reads
    /// PostgreSQL: `None` while reads may not use the cache, when Redis does
    /// not answer, or when the key holds a value or another reader's lease
    /// (that reader fills it).
    pub async fn claim(&self, key: Key) -> Option<Lease> {
        let epoch = self.usable()?;
        let key = key.in_epoch(epoch);
        let token = format!("lease:{}", Uuid::new_v4().simple());
        let args = vec![LEASE_MS.to_string(), token.clone()];
        let result: Result<String, _> = self.client.eval(CLAIM, vec![key.clone()], args).await;
        match result {
            Ok(entry) if entry == token => Some(Lease { key, token }),
            Ok(_) => None,
            Err(e) => {
                self.metrics.cache(CacheResult::Error);
                static LEASE: Throttle = Throttle::per_second();
                if let Some(suppressed) = LEASE.allow() {
                    tracing::warn!(error = %e, suppressed, "cache lease failed");
                }
                None
            }
        }
    }

    /// Stores `payload`, read at `version` after `lease` was taken, if the
    /// lease is still there: nothing touched the key since.
    pub async fn fill(&self, lease: Lease, version: i64, payload: &str) {
        self.end_lease(lease, format!("{version}:{payload}"), self.ttl_secs)
            .await;
    }

    /// Stores that the movement of `lease` does not exist (the JSON `null`
    /// at version 0), for `redis.absent_ttl_secs`, unless this instance
    /// cached `redis.absent_fills_per_sec` of them this second already:
    /// then the lease is given back.
    pub async fn fill_absent(&self, lease: Lease) {
        if self.absent.allow() {
            self.end_lease(lease, "0:null".to_owned(), self.absent_ttl_secs)
                .await;
        } else {
            self.release(lease).await;
        }
    }

    /// Gives `lease` up without a value (the read cannot be cached).
    pub async fn release(&self, lease: Lease) {
        self.end_lease(lease, String::new(), self.ttl_secs).await;
    }

    async fn end_lease(&self, lease: Lease, entry: String, ttl_secs: u64) {
        if self.permit.epoch().is_none() {
            return; // the lease lapses on its own
        }
        let args = vec![ttl_secs.to_string(), lease.token, entry];
        let result: Result<i64, _> = self.client.eval(FILL, vec![lease.key], args).await;
        if let Err(e) = result {
            self.metrics.cache(CacheResult::Error);
            static WRITE: Throttle = Throttle::per_second();
            if let Some(suppressed) = WRITE.allow() {
                tracing::warn!(error = %e, suppressed, "cache write failed");
            }
        }
    }

    /// Entries in the near cache now (0 without one).
    pub fn near_entries(&self) -> usize {
        self.near.as_ref().map_or(0, NearSet::len)
    }

    /// True while every tracking connection is up.
    pub fn near_is_up(&self) -> bool {
        self.near.as_ref().is_some_and(NearSet::is_up)
    }

    /// Closes the connections.
    pub async fn quit(&self) {
        if let Some(near) = &self.near {
            near.close();
        }
        if let Err(e) = self.client.quit().await {
            tracing::debug!(error = %e, "Redis connection did not close cleanly");
        }
    }
}
