//! Settings of the service: the defaults of `config/default.toml`, compiled
//! into the binary (so it runs from any directory, with no file), then an
//! optional config directory and an optional extra file, then
//! `WM_<SECTION>__<KEY>` environment variables, validated once at start-up so
//! that a bad value is an error naming the setting instead of a surprise later.
//! Printed (`warehouse-monitor config`, `Debug`), secrets show as `***`.

mod layers;
mod security;

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

pub use self::{
    layers::DEFAULTS,
    security::{PgSslMode, SaslMechanism},
};
use crate::redact::{Secret, SecretUrl};

/// Prefix of the environment variables that override the files.
pub const ENV_PREFIX: &str = "WM";

/// Everything the service can be told. Serialized, it is what
/// `warehouse-monitor config` prints: TOML, secrets masked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// What this instance does: everything, only the API, or only consuming.
    pub role: Role,
    pub kafka: KafkaSettings,
    pub batch: BatchSettings,
    pub consumer: ConsumerSettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub outbox: OutboxSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    /// Test-only fault injection; absent in `config/default.toml`, and from
    /// every build without the `faults` feature (a `[fault]` section is then
    /// refused as unknown).
    #[cfg(feature = "faults")]
    #[serde(default, skip_serializing_if = "FaultSettings::is_off")]
    pub fault: FaultSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: Vec<String>,
    pub topic: String,
    pub partitions: i32,
    /// Replicas of each partition when the service creates the topic: 1 suits
    /// the local single broker; a real cluster wants 3.
    pub replication_factor: i16,
    pub create_topic: bool,
    pub fetch_max_bytes: i32,
    pub fetch_max_wait_ms: i32,
    pub offset_out_of_range: OffsetReset,
    /// A record value over this many bytes is rejected as `too_large`.
    pub max_record_bytes: usize,
    /// Bytes of fetched records that may wait per partition for their batch.
    pub max_buffered_bytes: usize,
    /// How often the topic's partition list is read again (new partitions
    /// are consumed without a restart).
    pub metadata_refresh_ms: u64,
    /// TLS to the brokers, verifying their certificates and host names.
    pub tls: bool,
    /// PEM file of the CA certificates the brokers' certificates are checked
    /// against; empty: the system's roots.
    pub ca_file: String,
    /// SASL authentication: `none`, `plain`, `scram-sha-256` or `scram-sha-512`.
    pub sasl_mechanism: SaslMechanism,
    pub sasl_username: String,
    pub sasl_password: Secret,
}

impl KafkaSettings {
    pub fn metadata_refresh(&self) -> Duration {
        Duration::from_millis(self.metadata_refresh_ms)
    }

    /// Each half of `max_buffered_bytes`: one bounds librdkafka's prefetch
    /// queue, the other the records handed to batches (at least one byte).
    pub fn buffered_half(&self) -> usize {
        (self.max_buffered_bytes / 2).max(1)
    }

    /// The CA file, if one is set.
    pub fn ca_file(&self) -> Option<&Path> {
        non_empty(&self.ca_file)
    }
}

fn non_empty(path: &str) -> Option<&Path> {
    (!path.is_empty()).then(|| Path::new(path))
}

/// What an instance runs. API and consumer instances can be scaled apart, so
/// that API load does not slow ingestion and the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Consume the topic and serve the whole HTTP API.
    All,
    /// Serve the HTTP API only; never hold partitions.
    Api,
    /// Consume only; HTTP serves health and metrics.
    Consumer,
}

impl Role {
    /// True when this role consumes partitions.
    pub fn consumes(self) -> bool {
        matches!(self, Role::All | Role::Consumer)
    }

    /// True when this role answers the queries.
    pub fn serves_queries(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }
}

/// Policy when a stored offset is outside the broker's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// Resume from the earliest offset the broker still holds.
    Earliest,
    /// Stop consuming the partition and report the error.
    Fail,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    pub size: usize,
    /// A batch also closes once its record values reach this many bytes.
    pub max_bytes: usize,
    pub wait_ms: u64,
}

impl BatchSettings {
    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.wait_ms)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// How long the server keeps the partitions of an instance it no longer
    /// hears from (network partition): it ends that instance's ownership
    /// session after this much silence. The holder itself stops consuming
    /// after half of it without an answer. A killed instance's partitions are
    /// free at once, whatever this is.
    pub lease_ttl_ms: u64,
    /// How often a standby tries to take a free partition, and how often the
    /// holder checks that its ownership session answers.
    pub takeover_poll_ms: u64,
    /// A held partition with records waiting and no commit for this long is
    /// reported as stalled.
    pub stall_after_ms: u64,
}

impl ConsumerSettings {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    pub fn takeover_poll(&self) -> Duration {
        Duration::from_millis(self.takeover_poll_ms)
    }

    pub fn stall_after(&self) -> Duration {
        Duration::from_millis(self.stall_after_ms)
    }
}

/// Faults injected on purpose, for tests only: the stage that panics and how
/// many times, and fetches that fail.
#[cfg(feature = "faults")]
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_in: Option<FaultStage>,
    /// Panics before the injection stops (0: every time).
    #[serde(default)]
    pub panic_times: u32,
    /// Every fetch fails with an injected error.
    #[serde(default)]
    pub fail_fetch: bool,
    /// The process aborts (`std::process::abort`) right after the COMMIT of
    /// its N-th batch, before anything that follows a commit. For tests that
    /// run the service as a process of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_after_commit_at_batch: Option<u64>,
}

#[cfg(feature = "faults")]
impl FaultSettings {
    /// True when no fault is injected (the section is then not printed).
    fn is_off(&self) -> bool {
        self.panic_in.is_none() && !self.fail_fetch && self.abort_after_commit_at_batch.is_none()
    }
}

/// A task of a partition's pipeline that a test can make panic (with the
/// `faults` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultStage {
    /// The fetcher, before its next fetch.
    Fetcher,
    /// The batch loop, before applying a batch.
    Pipeline,
    /// The partition's keeper (which stops the pipeline when the ownership
    /// session is lost), at its next check.
    Keeper,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// Printed with its password masked.
    pub url: SecretUrl,
    /// TLS, as libpq's `sslmode`: `disable`, `prefer`, `require` (encrypted,
    /// certificate not checked), `verify-ca` or `verify-full`.
    pub sslmode: PgSslMode,
    /// PEM file of the CA certificates for `verify-ca` and `verify-full`;
    /// empty: the system's roots.
    pub ca_file: String,
    /// Connections for batch transactions (the consumer).
    pub pool_size: usize,
    /// Connections for API reads, apart so that reads cannot starve ingestion.
    pub api_pool_size: usize,
    /// Server-side `statement_timeout` of API reads, ms.
    pub read_statement_timeout_ms: u64,
}

impl PostgresSettings {
    /// The CA file, if one is set.
    pub fn ca_file(&self) -> Option<&Path> {
        non_empty(&self.ca_file)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// One server: `redis://host:port`, or for TLS `rediss://`. A master
    /// under Sentinel: `redis-sentinel://host:26379?node=host2:26379&sentinelServiceName=name`
    /// (`rediss-sentinel://` for TLS to the master and the sentinels). A
    /// cluster: `redis-cluster://host:port?node=host2:port` (`rediss-cluster://`).
    /// A password goes in the URL (`rediss://:password@host:6380`), printed
    /// masked.
    pub url: SecretUrl,
    /// PEM file of the CA certificates a `rediss://` server's certificate is
    /// checked against; empty: the system's roots.
    pub ca_file: String,
    pub cache_ttl_secs: u64,
    /// TTL of an unknown movement's cached 404: short, so that a flood of
    /// random ids cannot hold Redis memory for long.
    pub absent_ttl_secs: u64,
    /// Unknown movements this instance caches per second at most; past it
    /// their 404s are answered from PostgreSQL without caching. With
    /// `absent_ttl_secs`, bounds what a flood of random ids holds in Redis.
    pub absent_fills_per_sec: u32,
    /// Entries this instance keeps in its own memory, kept exact by Redis'
    /// client tracking (0: every hit asks Redis).
    pub near_cache_entries: usize,
}

impl RedisSettings {
    /// The CA file, if one is set.
    pub fn ca_file(&self) -> Option<&Path> {
        non_empty(&self.ca_file)
    }

    /// True for a `rediss://`, `rediss-sentinel://` or `rediss-cluster://` URL.
    pub fn tls(&self) -> bool {
        REDIS_SCHEMES
            .iter()
            .any(|&(scheme, tls)| tls && self.url.expose().starts_with(scheme))
    }

    /// True when the URL's scheme is one of [`REDIS_SCHEMES`].
    fn known_scheme(&self) -> bool {
        REDIS_SCHEMES
            .iter()
            .any(|(scheme, _)| self.url.expose().starts_with(scheme))
    }
}

/// The schemes of `redis.url` (fred's), and whether each is TLS: one
/// server, a master found through Sentinel, a cluster.
pub const REDIS_SCHEMES: [(&str, bool); 6] = [
    ("redis://", false),
    ("rediss://", true),
    ("redis-sentinel://", false),
    ("rediss-sentinel://", true),
    ("redis-cluster://", false),
    ("rediss-cluster://", true),
];

impl RedisSettings {
    /// The URL with its TLS scheme made plain (`rediss-sentinel://` becomes
    /// `redis-sentinel://`), for fred to parse: TLS is set up by
    /// [`crate::tls`], against `redis.ca_file`.
    pub fn plain_url(&self) -> String {
        let url = self.url.expose();
        match url.strip_prefix("rediss") {
            Some(rest) => format!("redis{rest}"),
            None => url.to_owned(),
        }
    }
}

/// The cache outbox watch ([`crate::cache::outbox_watch`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// How often every instance looks at the outbox (and delivers what it holds), ms.
    pub poll_ms: u64,
    /// How long a look that found the outbox empty lets reads use the cache,
    /// and how long a consumer waits after announcing undelivered
    /// invalidations before it commits them, ms. Must be the same on every instance.
    pub permit_ms: u64,
    /// Keys that may wait in the outbox; past them, one mark stands for
    /// every key (its delivery begins a new cache epoch), so that a long
    /// Redis outage costs PostgreSQL a bounded outbox.
    pub max_keys: i64,
}

impl OutboxSettings {
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    pub fn permit(&self) -> Duration {
        Duration::from_millis(self.permit_ms)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// A request that takes longer is answered 503 `unavailable`.
    pub request_timeout_ms: u64,
}

impl HttpSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(config::ConfigError),
    #[error("cannot print the settings: {0}")]
    Print(String),
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

// Not `#[from]`: the message already holds the cause, so it is not chained again.
impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        ConfigError::Load(e)
    }
}

impl Settings {
    /// Checks the values serde cannot: ranges and non-empty strings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(setting: &'static str, reason: &str) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_owned(),
            })
        }
        if self.kafka.brokers.is_empty() || self.kafka.brokers.iter().any(|b| !b.contains(':')) {
            return invalid("kafka.brokers", "expected one or more host:port");
        }
        if self.kafka.topic.trim().is_empty() {
            return invalid("kafka.topic", "must not be empty");
        }
        if self.kafka.partitions < 1 {
            return invalid("kafka.partitions", "must be at least 1");
        }
        if self.kafka.replication_factor < 1 {
            return invalid("kafka.replication_factor", "must be at least 1");
        }
        if self.kafka.fetch_max_bytes < 1024 {
            return invalid("kafka.fetch_max_bytes", "must be at least 1024");
        }
        if self.kafka.fetch_max_wait_ms < 1 {
            return invalid("kafka.fetch_max_wait_ms", "must be at least 1");
        }
        if self.kafka.max_record_bytes < 1024 {
            return invalid("kafka.max_record_bytes", "must be at least 1024");
        }
        if self.kafka.max_buffered_bytes < self.kafka.max_record_bytes {
            return invalid(
                "kafka.max_buffered_bytes",
                "must be at least kafka.max_record_bytes",
            );
        }
        if self.kafka.max_buffered_bytes > u32::MAX as usize {
            return invalid("kafka.max_buffered_bytes", "must be below 4 GiB");
        }
        if self.kafka.metadata_refresh_ms < 100 {
            return invalid("kafka.metadata_refresh_ms", "must be at least 100");
        }
        if self.batch.size < 1 {
            return invalid("batch.size", "must be at least 1");
        }
        if self.batch.max_bytes < 1024 {
            return invalid("batch.max_bytes", "must be at least 1024");
        }
        if self.consumer.stall_after_ms < 100 {
            return invalid("consumer.stall_after_ms", "must be at least 100");
        }
        if self.batch.wait_ms < 1 {
            return invalid("batch.wait_ms", "must be at least 1");
        }
        if self.consumer.lease_ttl_ms < 2000 {
            return invalid(
                "consumer.lease_ttl_ms",
                "must be at least 2000 (the server probes a silent client once a second)",
            );
        }
        if self.consumer.takeover_poll_ms < 10 {
            return invalid("consumer.takeover_poll_ms", "must be at least 10");
        }
        if self.consumer.takeover_poll_ms.saturating_mul(4) > self.consumer.lease_ttl_ms {
            return invalid(
                "consumer.takeover_poll_ms",
                "must be at most a quarter of consumer.lease_ttl_ms",
            );
        }
        if self.postgres.pool_size < 2 {
            return invalid("postgres.pool_size", "must be at least 2");
        }
        if self.postgres.api_pool_size < 1 {
            return invalid("postgres.api_pool_size", "must be at least 1");
        }
        if self.postgres.read_statement_timeout_ms < 10 {
            return invalid("postgres.read_statement_timeout_ms", "must be at least 10");
        }
        if self.http.request_timeout_ms <= self.postgres.read_statement_timeout_ms {
            return invalid(
                "http.request_timeout_ms",
                "must be above postgres.read_statement_timeout_ms",
            );
        }
        if self
            .postgres
            .url
            .expose()
            .parse::<tokio_postgres::Config>()
            .is_err()
        {
            return invalid("postgres.url", "not a valid PostgreSQL connection URL");
        }
        if !self.redis.known_scheme() {
            return invalid(
                "redis.url",
                "expected redis://, rediss://, redis-sentinel://, rediss-sentinel://, \
                 redis-cluster:// or rediss-cluster://",
            );
        }
        security::validate(self)?;
        if self.redis.cache_ttl_secs < 1 {
            return invalid("redis.cache_ttl_secs", "must be at least 1");
        }
        if !(1..=self.redis.cache_ttl_secs).contains(&self.redis.absent_ttl_secs) {
            return invalid(
                "redis.absent_ttl_secs",
                "must be from 1 to redis.cache_ttl_secs",
            );
        }
        if self.outbox.max_keys < 1 {
            return invalid("outbox.max_keys", "must be at least 1");
        }
        if self.outbox.poll_ms < 10 {
            return invalid("outbox.poll_ms", "must be at least 10");
        }
        if self.outbox.permit_ms < 2 * self.outbox.poll_ms {
            return invalid("outbox.permit_ms", "must be at least twice outbox.poll_ms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    #[test]
    fn default_file_loads_and_validates() {
        let settings = Settings::load(&config_dir(), None).expect("default config");
        assert_eq!(settings.kafka.offset_out_of_range, OffsetReset::Earliest);
        assert!(settings.batch.size >= 1);
    }

    #[cfg(feature = "faults")]
    #[test]
    fn the_printed_settings_show_every_active_fault() {
        let mut settings = Settings::load(&config_dir(), None).expect("default config");
        assert!(
            !settings.to_toml().unwrap().contains("[fault]"),
            "none by default"
        );
        settings.fault.abort_after_commit_at_batch = Some(3);
        let printed = settings.to_toml().unwrap();
        assert!(printed.contains("[fault]"), "{printed}");
        assert!(
            printed.contains("abort_after_commit_at_batch = 3"),
            "{printed}"
        );
    }

    #[test]
    fn bad_value_names_the_setting() {
        let mut settings = Settings::load(&config_dir(), None).expect("default config");
        settings.batch.size = 0;
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("batch.size"), "{err}");
    }

    #[test]
    fn the_holder_checks_its_session_several_times_before_giving_up() {
        let mut settings = Settings::load(&config_dir(), None).expect("default config");
        settings.consumer.takeover_poll_ms = settings.consumer.lease_ttl_ms / 3;
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("consumer.takeover_poll_ms"), "{err}");
        settings.consumer.takeover_poll_ms = 250;
        settings.consumer.lease_ttl_ms = 1000;
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("consumer.lease_ttl_ms"), "{err}");
    }

    #[test]
    fn wrong_type_in_file_names_the_key() {
        let dir = std::env::temp_dir().join(format!("wm-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = dir.join("bad.toml");
        std::fs::write(&extra, "[batch]\nsize = \"lots\"\n").unwrap();
        let err = Settings::load(&config_dir(), Some(&extra))
            .unwrap_err()
            .to_string();
        assert!(err.contains("size"), "{err}");
    }
}
