//! Redis in front of PostgreSQL, filled so that an old answer can never come
//! back after a commit.
//!
//! A reader that misses first takes a *lease* on the key, then reads
//! PostgreSQL (after checking that no batch holds the row: [`crate::store`]'s
//! guarded reads), then stores the value only if its lease is still there
//! ([`scripts`]). Before a batch commits, the consumer deletes the key of
//! each row it changed, after it locked the row: a reader whose lease it
//! deleted cannot store what it read, and a reader that takes a lease after
//! the delete finds the row locked or already committed.
//!
//! Reads use the cache only while this instance holds a *permit*: a recent
//! look at the cache outbox found it empty ([`crate::outbox`]). The outbox
//! holds the invalidations Redis did not acknowledge before their commit, so
//! no instance serves an entry they cover, even after a crash (the argument is
//! in docs/SPEC.md, section 8).
//!
//! Hits are answered from this instance's memory where they can be
//! ([`near`]): Redis tracks the keys read there and reports every change, so
//! the near cache holds what Redis holds, without a round trip per read.
//!
//! Redis is only an accelerator: every call has a short timeout, failures are
//! logged and counted, and reads fall back to PostgreSQL.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    clients::Client,
    interfaces::{ClientLike, KeysInterface, LuaInterface},
    types::{
        Builder, Value,
        config::{Config, ReconnectPolicy},
    },
};
use uuid::Uuid;

use crate::{
    app::{
        config::RedisSettings,
        metrics::{CacheResult, Metrics},
    },
    redact,
    throttle::Throttle,
    tls::{self, TlsError, Verify},
};

/// Keys per `DEL`: bounds how long Redis runs one command.
const KEYS_PER_DEL: usize = 500;

/// How long a reader's lease lasts: a fill that takes longer is not stored
/// (the lease lapsed), and a reader that dies holding one delays the key's
/// next fill by no more than this.
const LEASE_MS: u64 = 2_000;

const KEY_PREFIX: &str = "wm:";

mod near;
mod resp;
mod scripts;

/// The near cache's RESP parser ([`resp`]), for the fuzz target under
/// `tests/fuzz`: hostile replies, and replies fed in pieces as a socket
/// delivers them. Not part of the API.
#[cfg(feature = "devtools")]
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
use scripts::{CLAIM, FILL};

/// Errors of the cache layer (only start-up reports them; at run time they are
/// logged and counted).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid Redis URL: {0}")]
    Url(fred::error::Error),
    #[error("Redis TLS (redis.ca_file): {0}")]
    Tls(TlsError),
    #[error("cannot start the Redis client: {0}")]
    Start(fred::error::Error),
}

/// A cached entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: i64,
    /// `None` for a tombstone (written by older releases).
    pub payload: Option<String>,
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
    timeout: Duration,
    metrics: Arc<Metrics>,
    permit: Arc<Permit>,
    /// `None` when `redis.near_cache_entries` is 0 or Redis is a cluster.
    near: Option<Near>,
}

/// Until when reads may use the cache, as an offset from `base` in
/// nanoseconds (0: no permit), and the outbox rows last seen: atomics, so
/// that the check on every read takes no lock.
#[derive(Debug)]
struct Permit {
    base: Instant,
    until: AtomicU64,
    outbox_rows: AtomicI64,
}

impl Permit {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            until: AtomicU64::new(0),
            outbox_rows: AtomicI64::new(-1),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX).max(1)
    }

    fn valid(&self) -> bool {
        self.nanos(Instant::now()) < self.until.load(Ordering::Acquire)
    }
}

/// Key of a cached movement: `wm:movement:<id>`.
pub fn movement_key(movement_id: Uuid) -> String {
    key("movement", &[movement_id])
}

/// Key of a cached stock answer: `wm:stock:<warehouse id>:<product id>`.
pub fn stock_key(warehouse_id: Uuid, product_id: Uuid) -> String {
    key("stock", &[warehouse_id, product_id])
}

/// `KEY_PREFIX`, `kind`, then the ids (hyphenated, lower case), separated by
/// colons, in one allocation: a batch makes one key per changed row, and
/// `format!` growing the string piece by piece was 5% of the service's CPU
/// in a 200 000-event ingest (perf).
fn key(kind: &str, ids: &[Uuid]) -> String {
    let mut key = String::with_capacity(
        KEY_PREFIX.len() + kind.len() + ids.len() * (1 + uuid::fmt::Hyphenated::LENGTH),
    );
    key.push_str(KEY_PREFIX);
    key.push_str(kind);
    for id in ids {
        key.push(':');
        key.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    }
    key
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
        // fred would build TLS of its own for rediss://: parse the rest, set ours.
        let plain_url = settings.url.replacen("rediss://", "redis://", 1);
        let mut config = Config::from_url(&plain_url).map_err(CacheError::Url)?;
        let tls = if settings.tls() {
            let tls =
                tls::client_config(Verify::Full, settings.ca_file()).map_err(CacheError::Tls)?;
            Some(tokio_rustls::TlsConnector::from(tls))
        } else {
            None
        };
        config.tls = tls.clone().map(Into::into);
        let timeout = Duration::from_millis(250);
        let near = near_target(&config, tls, timeout)
            .filter(|_| settings.near_cache_entries > 0)
            .map(|target| {
                let ttl = Duration::from_secs(settings.cache_ttl_secs);
                Near::start(target, settings.near_cache_entries, ttl, timeout)
            });
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
            tracing::warn!(url = %redact::url(&settings.url), "Redis not reachable yet; answering from PostgreSQL until it is");
        }
        Ok(Self {
            client,
            ttl_secs: settings.cache_ttl_secs,
            timeout,
            metrics,
            permit: Arc::new(Permit::new()),
            near,
        })
    }

    /// True when reads may use the cache: connected, and a permit held.
    fn usable(&self) -> bool {
        self.client.is_connected() && self.permit.valid()
    }

    /// True while the client is connected to Redis.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Lets reads use the cache until `deadline`: the outbox was found empty
    /// by a look that started `permit` before it ([`crate::outbox`]).
    pub fn permit_until(&self, deadline: Instant) {
        let until = self.permit.nanos(deadline);
        self.permit.until.store(until, Ordering::Release);
        self.permit.outbox_rows.store(0, Ordering::Relaxed);
    }

    /// Withdraws the permit at once: the outbox holds `rows` rows.
    pub fn withdraw(&self, rows: i64) {
        self.permit.until.store(0, Ordering::Release);
        self.permit.outbox_rows.store(rows, Ordering::Relaxed);
    }

    /// Rows in the cache outbox at the last look; `None` before the first.
    pub fn outbox_rows(&self) -> Option<i64> {
        Some(self.permit.outbox_rows.load(Ordering::Relaxed)).filter(|n| *n >= 0)
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
    /// again. `None` means "ask PostgreSQL": a miss, a lease, an error, or
    /// an entry that does not parse (counted as an error and logged, never as
    /// a hit).
    pub async fn get_json(&self, key: &str) -> Option<String> {
        if !self.usable() {
            self.metrics.cache_bypassed();
            return None;
        }
        if let Some(near) = &self.near {
            let result = match near.get(key).await {
                Lookup::Hit { payload, near } => {
                    self.metrics.cache(CacheResult::Hit);
                    if near {
                        self.metrics.cache_near_hit();
                    }
                    return Some(payload);
                }
                Lookup::Miss => CacheResult::Miss,
                Lookup::Failed => CacheResult::Error,
                Lookup::Down => return self.get_json_from_redis(key).await,
            };
            self.metrics.cache(result);
            return None;
        }
        self.get_json_from_redis(key).await
    }

    /// [`Self::get_json`] through fred: without a near cache, or while it has
    /// no tracking connection.
    async fn get_json_from_redis(&self, key: &str) -> Option<String> {
        let payload = self.payload(key).await?;
        match serde_json::from_str::<serde::de::IgnoredAny>(&payload) {
            Ok(_) => {
                self.metrics.cache(CacheResult::Hit);
                Some(payload)
            }
            Err(e) => {
                self.metrics.cache(CacheResult::Error);
                static PARSE: Throttle = Throttle::per_second();
                if let Some(suppressed) = PARSE.allow() {
                    tracing::warn!(key, error = %e, suppressed, "cached entry does not parse; answering from PostgreSQL");
                }
                None
            }
        }
    }

    /// The payload stored under `key`, if Redis holds a value there
    /// (misses, leases and errors are counted).
    async fn payload(&self, key: &str) -> Option<String> {
        let result: Result<Option<String>, _> = self.client.get(key).await;
        let mut raw = match result {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                self.metrics.cache(CacheResult::Miss);
                return None;
            }
            Err(e) => {
                self.metrics.cache(CacheResult::Error);
                static READ: Throttle = Throttle::per_second();
                if let Some(suppressed) = READ.allow() {
                    tracing::warn!(error = %e, suppressed, "cache read failed; answering from PostgreSQL");
                }
                return None;
            }
        };
        // `version:payload`: the payload is served in place, not copied out.
        let Some(payload_at) = payload_start(&raw) else {
            self.metrics.cache(CacheResult::Miss); // a lease, or no version
            return None;
        };
        raw.drain(..payload_at);
        Some(raw)
    }

    /// Takes the lease that lets this reader fill `key` after it reads
    /// PostgreSQL: `None` while reads may not use the cache, when Redis does
    /// not answer, or when the key holds a value or another reader's lease
    /// (that reader fills it).
    pub async fn claim(&self, key: &str) -> Option<Lease> {
        if !self.usable() {
            return None;
        }
        let token = format!("lease:{}", Uuid::new_v4().simple());
        let args = vec![LEASE_MS.to_string(), token.clone()];
        let result: Result<String, _> = self.client.eval(CLAIM, vec![key.to_owned()], args).await;
        match result {
            Ok(entry) if entry == token => Some(Lease {
                key: key.to_owned(),
                token,
            }),
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
        self.end_lease(lease, format!("{version}:{payload}")).await;
    }

    /// Gives `lease` up without a value (the read cannot be cached).
    pub async fn release(&self, lease: Lease) {
        self.end_lease(lease, String::new()).await;
    }

    async fn end_lease(&self, lease: Lease, entry: String) {
        if !self.usable() {
            return; // the lease lapses on its own
        }
        let args = vec![self.ttl_secs.to_string(), lease.token, entry];
        let result: Result<i64, _> = self.client.eval(FILL, vec![lease.key], args).await;
        if let Err(e) = result {
            self.metrics.cache(CacheResult::Error);
            static WRITE: Throttle = Throttle::per_second();
            if let Some(suppressed) = WRITE.allow() {
                tracing::warn!(error = %e, suppressed, "cache write failed");
            }
        }
    }

    /// Deletes `keys`; true when Redis acknowledged every one of them.
    /// Answers false at once while the client is disconnected. A `DEL` that
    /// Redis did not acknowledge in time and that lands later is harmless:
    /// it can only remove an entry, never bring an old one back.
    pub async fn invalidate(&self, keys: Vec<String>) -> bool {
        let count = keys.len();
        if count == 0 {
            return true;
        }
        if !self.client.is_connected() {
            return false;
        }
        // Each command has its own timeout; this bounds the pipeline as a whole.
        let sent = tokio::time::timeout(self.timeout * 2, self.send_deletes(keys)).await;
        match sent {
            Ok(Ok(())) => {
                self.metrics.cache_invalidated(count);
                true
            }
            Ok(Err(e)) => {
                self.metrics.cache(CacheResult::Error);
                static INVALIDATE: Throttle = Throttle::per_second();
                if let Some(suppressed) = INVALIDATE.allow() {
                    tracing::warn!(error = %e, keys = count, suppressed, "cache invalidation failed");
                }
                false
            }
            Err(_) => {
                self.metrics.cache(CacheResult::Error);
                static INVALIDATE_TIMEOUT: Throttle = Throttle::per_second();
                if let Some(suppressed) = INVALIDATE_TIMEOUT.allow() {
                    tracing::warn!(keys = count, suppressed, "cache invalidation timed out");
                }
                false
            }
        }
    }

    /// The raw entry under `key`, permit or not (for tests and tools).
    pub async fn peek(&self, key: &str) -> Option<Entry> {
        let raw: Option<String> = self.client.get(key).await.ok()?;
        parse(&raw?)
    }

    /// Deletes the keys with one `DEL` per [`KEYS_PER_DEL`] keys, in one
    /// pipeline: a round trip per batch, not one per key. The keys move into
    /// the commands, uncopied.
    async fn send_deletes(&self, keys: Vec<String>) -> Result<(), fred::error::Error> {
        let pipeline = self.client.pipeline();
        let mut keys = keys.into_iter();
        loop {
            let chunk: Vec<String> = keys.by_ref().take(KEYS_PER_DEL).collect();
            if chunk.is_empty() {
                break;
            }
            let () = pipeline.del(chunk).await?;
        }
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Entries in the near cache now (0 without one).
    pub fn near_entries(&self) -> usize {
        self.near.as_ref().map_or(0, Near::len)
    }

    /// True while the near cache has its tracking connection.
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

/// Where the near cache connects: the host of a single Redis server (none
/// for a cluster or sentinels), with the URL's credentials, database and TLS.
fn near_target(
    config: &Config,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
) -> Option<near::Target> {
    let fred::types::config::ServerConfig::Centralized { server } = &config.server else {
        return None;
    };
    Some(near::Target {
        host: server.host.to_string(),
        port: server.port,
        username: config.username.clone(),
        password: config.password.clone(),
        database: config.database,
        tls,
        timeout: timeout * 4,
    })
}

/// Where the payload of a stored `version:payload` value starts; `None` for a
/// lease, a tombstone or an entry without a version.
fn payload_start(raw: &str) -> Option<usize> {
    let (version, payload) = raw.split_once(':')?;
    (version.parse::<i64>().is_ok() && !payload.is_empty()).then_some(version.len() + 1)
}

/// Splits a stored `version:payload` string.
pub fn parse(raw: &str) -> Option<Entry> {
    let (version, payload) = raw.split_once(':')?;
    Some(Entry {
        version: version.parse().ok()?,
        payload: (!payload.is_empty()).then(|| payload.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_old_tombstones_but_not_leases() {
        assert_eq!(
            parse("7:{\"a\":1}"),
            Some(Entry {
                version: 7,
                payload: Some("{\"a\":1}".into())
            })
        );
        assert_eq!(
            parse("8:"),
            Some(Entry {
                version: 8,
                payload: None
            })
        );
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("lease:0123456789abcdef0123456789abcdef"), None);
        assert_eq!(payload_start("lease:0123456789abcdef"), None);
    }

    #[test]
    fn keys_are_prefixed_and_distinct() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert!(movement_key(a).starts_with(KEY_PREFIX));
        assert_ne!(stock_key(a, b), stock_key(b, a));
        // The keys other instances and versions read and delete.
        assert_eq!(movement_key(a), format!("wm:movement:{a}"));
        assert_eq!(stock_key(a, b), format!("wm:stock:{a}:{b}"));
    }
}
