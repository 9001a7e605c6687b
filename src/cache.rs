//! Redis in front of PostgreSQL, filled so that an old answer can never come
//! back after a commit.
//!
//! A reader that misses first takes a *lease* on the key, then reads
//! PostgreSQL (after checking that no batch holds the row: [`crate::store`]'s
//! guarded reads), then stores the value only if its lease is still there
//! (`cache/scripts.rs`). Before a batch commits, the consumer deletes the key of
//! each row it changed, after it locked the row: a reader whose lease it
//! deleted cannot store what it read, and a reader that takes a lease after
//! the delete finds the row locked or already committed.
//!
//! Reads use the cache only while this instance holds a *permit*: a recent
//! look at the cache outbox found it empty ([`crate::outbox_watch`]). The outbox
//! holds the invalidations Redis did not acknowledge before their commit, so
//! no instance serves an entry they cover, even after a crash (the argument is
//! in docs/SPEC.md, section 8).
//!
//! Every key belongs to an *epoch* ([`epoch`]), and reads use the epoch of
//! their permit only while the server they read from is believed for it
//! ([`trust`]): a Redis that lost acknowledged writes (a restart from a
//! snapshot, a failover, a flush, a reload) is never read for the entries it
//! held before, and a new epoch makes them unreachable.
//!
//! Reads go through one connection that Redis tracks (`cache/near.rs`), whose
//! wire order keeps both the near cache (hits answered from this instance's
//! memory) and the epoch's trust exact; leases, fills and deletes go
//! through fred. Redis is only an accelerator: every call has a short
//! timeout, failures are logged and counted, and reads fall back to
//! PostgreSQL.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fred::{
    clients::Client,
    interfaces::{ClientLike, KeysInterface, LuaInterface},
    types::{
        Builder, InfoKind, Value,
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

/// Keys per `DEL`: bounds how long Redis runs one command.
const KEYS_PER_DEL: usize = 500;

/// How long a reader's lease lasts: a fill that takes longer is not stored
/// (the lease lapsed), and a reader that dies holding one delays the key's
/// next fill by no more than this.
const LEASE_MS: u64 = 2_000;

mod absent;
mod connect;
pub mod epoch;
pub mod eviction;
mod near;
mod pause;
mod permit;
mod resp;
mod scripts;
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
use near::{Lookup, Near};
use permit::Permit;
use scripts::{CLAIM, FILL};
use trust::{Distrust, Trust};

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
    /// The tracking connection reads go through; `None` for a cluster URL,
    /// where reads always answer from PostgreSQL.
    near: Option<Near>,
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
        let near = near_target(&config, tls, timeout).map(|target| {
            let ttl = Duration::from_secs(settings.cache_ttl_secs);
            let (trust, metrics) = (Arc::clone(&trust), Arc::clone(&metrics));
            Near::start(
                target,
                trust,
                metrics,
                settings.near_cache_entries,
                ttl,
                timeout,
            )
        });
        if near.is_none() {
            tracing::warn!(
                "a cluster redis.url: reads answer from PostgreSQL (the cache is used with one server or Sentinel)"
            );
        }
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
        // The first connection is made after the policy's first delay:
        // 10 ms, not 500 (it cost every start 0.5 s), then doubling up to
        // 500 ms between attempts while Redis is away.
        .set_policy({
            let mut policy = ReconnectPolicy::new_exponential(0, 10, 500, 2);
            policy.set_jitter(10);
            policy
        })
        .build()
        .map_err(CacheError::Start)?;
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

    /// The epoch reads may use now: a permit is held for it, and the
    /// tracking connection believes its server for it.
    fn usable(&self) -> Option<Epoch> {
        self.permit
            .epoch()
            .filter(|epoch| self.trust.is_verified(*epoch))
    }

    /// True while the client is connected to Redis.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Lets reads use the cache, in `epoch`, until `deadline`: the outbox was
    /// found empty by a look that started `permit` before it ([`crate::outbox_watch`]).
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
            self.trust.unverify();
            near.wake();
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

    /// The epoch the tracking connection believes its server for, if any.
    pub fn trusted_epoch(&self) -> Option<Epoch> {
        self.trust.verified()
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

    /// Deletes `keys` (of `epoch`); true when Redis acknowledged every one of
    /// them on a server that holds `epoch`'s marker. A server without it has
    /// lost writes (or is not the one readers believe): the epoch is
    /// distrusted, and the keys are not acknowledged. Answers false at once
    /// while the client is disconnected. A `DEL` that Redis did not
    /// acknowledge in time and that lands later is harmless: it can only
    /// remove an entry, never bring an old one back.
    pub async fn invalidate(&self, epoch: Epoch, keys: Vec<String>) -> bool {
        let count = keys.len();
        if count == 0 {
            return true;
        }
        if !self.client.is_connected() || self.pause.active() {
            return false;
        }
        // Each command has its own timeout; this bounds the pipeline as a whole.
        let sent = tokio::time::timeout(self.timeout * 2, self.send_deletes(epoch, keys)).await;
        let failure = match sent {
            Ok(Ok(Some(_))) => {
                self.pause.clear();
                self.metrics.cache_invalidated(count);
                return true;
            }
            Ok(Ok(None)) => {
                if self.trust.distrust(epoch) {
                    self.metrics
                        .cache_distrusted(Distrust::Invalidation.as_str());
                    tracing::warn!(%epoch, "Redis lost this cache epoch's marker: a new epoch begins");
                }
                return false;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.pause.start(pause::AFTER_FAILURE);
        self.metrics.cache(CacheResult::Error);
        static INVALIDATE: Throttle = Throttle::per_second();
        if let Some(suppressed) = INVALIDATE.allow() {
            tracing::warn!(error = %failure, keys = count, suppressed, "cache invalidation failed");
        }
        false
    }

    /// Whether Redis acknowledges a delete in `epoch` now, with the epoch's
    /// marker in place: one `DEL` of a key no entry uses, and the marker.
    pub async fn deletes_acknowledged(&self, epoch: Epoch) -> bool {
        if !self.client.is_connected() {
            return false;
        }
        let probe = vec![epoch.movement_key(Uuid::nil())];
        matches!(
            tokio::time::timeout(self.timeout * 2, self.send_deletes(epoch, probe)).await,
            Ok(Ok(Some(_)))
        )
    }

    /// Deletes the keys with one `DEL` per [`KEYS_PER_DEL`] keys (in a
    /// cluster, per hash slot as well: fred sends each command of a pipeline
    /// to the master of its slot), then reads `epoch`'s marker, in one
    /// pipeline: a round trip per batch, not one per key. The keys move into
    /// the commands, uncopied. Returns the marker.
    async fn send_deletes(
        &self,
        epoch: Epoch,
        keys: Vec<String>,
    ) -> Result<Option<String>, fred::error::Error> {
        let pipeline = self.client.pipeline();
        if self.clustered {
            for (_slot, keys) in fred::util::group_by_hash_slot(keys)? {
                let mut keys = keys.into_iter();
                loop {
                    let chunk: Vec<fred::types::Key> = keys.by_ref().take(KEYS_PER_DEL).collect();
                    if chunk.is_empty() {
                        break;
                    }
                    let () = pipeline.del(chunk).await?;
                }
            }
        } else {
            let mut keys = keys.into_iter();
            loop {
                let chunk: Vec<String> = keys.by_ref().take(KEYS_PER_DEL).collect();
                if chunk.is_empty() {
                    break;
                }
                let () = pipeline.del(chunk).await?;
            }
        }
        let () = pipeline.get(epoch.marker_key()).await?;
        let mut replies: Vec<Value> = pipeline.all().await?;
        Ok(replies.pop().and_then(|marker| marker.convert().ok()))
    }

    /// Writes the marker of a new `epoch` (the run id of the server it is
    /// written to), and gives `previous`'s marker the entries' TTL, after
    /// which no entry of that epoch is left. The epoch may be committed in
    /// PostgreSQL only once this succeeded ([`crate::outbox_watch`]).
    pub async fn mark_epoch(&self, epoch: Epoch, previous: Epoch) -> Result<(), CacheError> {
        let write = async {
            let info: String = self.client.info(Some(InfoKind::Server)).await?;
            let run_id = trust::info_run_id(&info)
                .ok_or(CacheError::NoRunId)?
                .to_owned();
            let () = self
                .client
                .set(epoch.marker_key(), run_id, None, None, false)
                .await?;
            let ttl = i64::try_from(self.ttl_secs).unwrap_or(i64::MAX);
            let _: Value = self.client.expire(previous.marker_key(), ttl, None).await?;
            Ok::<_, CacheError>(())
        };
        tokio::time::timeout(self.timeout * 4, write)
            .await
            .map_err(|_| CacheError::Timeout)?
    }

    /// Entries in the near cache now (0 without one).
    pub fn near_entries(&self) -> usize {
        self.near.as_ref().map_or(0, Near::len)
    }

    /// True while the tracking connection is up.
    pub fn near_is_up(&self) -> bool {
        self.near.as_ref().is_some_and(Near::is_up)
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
