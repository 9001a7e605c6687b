//! The start-up check: settings outside the service that it cannot change
//! but that cost an operator ingest rate, the cache or data, told once
//! instead of found out under load. PostgreSQL's WAL settings (Debian's
//! defaults halved the ingest rate of a grown database, docs/postgresql.md),
//! a Redis without a memory limit or one that refuses writes when full, and
//! stored offsets the topic's retention has passed (records deleted before
//! they were read). `serve` logs each finding once, as a warning, without
//! waiting for the check; `warehouse-monitor check` prints them and exits
//! non-zero. A check that cannot run is said at info level and skipped: it
//! never stops the service.

use std::{fmt, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    cache::{
        CacheError,
        eviction::{self, Eviction},
    },
    config::{RedisSettings, Settings},
    kafka::{self, Kafka, KafkaError},
    store::{
        Store, StoreError, offsets,
        server_settings::{self, ServerSetting},
    },
};

/// A smaller `max_wal_size` is warned about. The 1 GB default brought a
/// checkpoint every few seconds under ingest and halved the rate of a grown
/// database; the shipped 16 GB restored it. Between them nothing was
/// measured: 4 GB spaces checkpoints four times as far apart as the default,
/// and what is flagged is the range that holds the default.
pub const WAL_BUDGET_FLOOR_MB: u64 = 4096;

/// A shorter `checkpoint_timeout` is warned about: past the WAL budget, the
/// timeout is what brings checkpoints, and the shipped value is 15 min
/// against the default 5.
pub const CHECKPOINT_TIMEOUT_FLOOR_SECS: u64 = 600;

/// The PostgreSQL settings the check reads.
pub const POSTGRES_SETTINGS: [&str; 3] = ["max_wal_size", "wal_compression", "checkpoint_timeout"];

/// How long each check may take, so that a server that does not answer
/// leaves a line rather than a check that never ends.
pub const CHECK_WITHIN: Duration = Duration::from_secs(15);

/// How long `warehouse-monitor check` waits for the brokers.
const KAFKA_WITHIN: Duration = Duration::from_secs(5);

/// One thing an operator should change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// `max_wal_size` below [`WAL_BUDGET_FLOOR_MB`].
    WalBudget { max_wal_size_mb: u64 },
    /// `wal_compression` off.
    WalUncompressed,
    /// `checkpoint_timeout` below [`CHECKPOINT_TIMEOUT_FLOOR_SECS`].
    CheckpointsFrequent { checkpoint_timeout_secs: u64 },
    /// Redis has no `maxmemory`.
    RedisUnbounded,
    /// Redis has a `maxmemory` and refuses writes once it is reached.
    RedisNoEviction { maxmemory: u64 },
    /// A stored offset below the partition's log start: the records between
    /// were deleted by retention before the service read them.
    RetentionPassed {
        partition: i32,
        stored: i64,
        log_start: i64,
        /// Seconds since the stored offset last moved.
        age_secs: i64,
    },
}

impl Finding {
    /// A stable name for logs and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Finding::WalBudget { .. } => "wal_budget",
            Finding::WalUncompressed => "wal_uncompressed",
            Finding::CheckpointsFrequent { .. } => "checkpoints_frequent",
            Finding::RedisUnbounded => "redis_unbounded",
            Finding::RedisNoEviction { .. } => "redis_noeviction",
            Finding::RetentionPassed { .. } => "retention_passed",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::WalBudget { max_wal_size_mb } => write!(
                f,
                "PostgreSQL max_wal_size is {}, below {}: under ingest checkpoints come every few \
                 seconds, after each one the next change of every page logs the whole page, and a \
                 grown database ingests at about half the rate; set 16GB (docs/postgresql.md)",
                megabytes(*max_wal_size_mb),
                megabytes(WAL_BUDGET_FLOOR_MB)
            ),
            Finding::WalUncompressed => f.write_str(
                "PostgreSQL wal_compression is off: the whole pages logged after each checkpoint \
                 go to the WAL uncompressed; set lz4 (docs/postgresql.md)",
            ),
            Finding::CheckpointsFrequent {
                checkpoint_timeout_secs,
            } => write!(
                f,
                "PostgreSQL checkpoint_timeout is {}, below {}: after each checkpoint the next \
                 change of every page logs the whole page again; set 15min (docs/postgresql.md)",
                duration(*checkpoint_timeout_secs),
                duration(CHECKPOINT_TIMEOUT_FLOOR_SECS)
            ),
            Finding::RedisUnbounded => f.write_str(
                "Redis has no maxmemory: the cache grows until the machine runs out of memory; \
                 set maxmemory, with maxmemory-policy allkeys-lru",
            ),
            Finding::RedisNoEviction { maxmemory } => write!(
                f,
                "Redis' maxmemory-policy is noeviction: once its maxmemory ({}) is full it \
                 refuses the cache's fills and reads go to PostgreSQL; set allkeys-lru",
                megabytes(maxmemory / (1 << 20))
            ),
            Finding::RetentionPassed {
                partition,
                stored,
                log_start,
                age_secs,
            } => write!(
                f,
                "partition {partition}: the stored offset {stored} is below the log start \
                 {log_start}: retention deleted offsets {stored} to {} before they were read \
                 (the stored offset last moved {} ago); the partition resumes as \
                 kafka.offset_out_of_range says",
                log_start - 1,
                age(*age_secs)
            ),
        }
    }
}

/// A check that could not run, and why.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("PostgreSQL settings not checked: {0}")]
    Postgres(StoreError),
    #[error(
        "PostgreSQL settings not checked: {name} is `{setting}` in unit {unit:?}, not understood"
    )]
    Unreadable {
        name: String,
        setting: String,
        unit: Option<String>,
    },
    #[error("Redis memory settings not checked: {0}")]
    Redis(CacheError),
    #[error("stored offsets not checked against the topic: {0}")]
    Offsets(StoreError),
    #[error("stored offsets not checked against the topic: {0}")]
    Kafka(KafkaError),
    #[error("the log start of partition {partition} not read: {cause}")]
    LogStart { partition: i32, cause: KafkaError },
    #[error("{0} not checked: no answer within {CHECK_WITHIN:?}")]
    Timeout(&'static str),
}

/// Everything one check found, and what it could not look at.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub unchecked: Vec<CheckError>,
}

impl Report {
    /// `warehouse-monitor check`'s exit code: 3 with a finding, 4 with none
    /// but something left unchecked, 0 when everything was checked and fine.
    pub fn exit_code(&self) -> u8 {
        match (self.findings.is_empty(), self.unchecked.is_empty()) {
            (false, _) => 3,
            (true, false) => 4,
            (true, true) => 0,
        }
    }

    /// One line per finding (`warn`) and per check that could not run
    /// (`info`).
    pub fn log(&self) {
        for finding in &self.findings {
            tracing::warn!(finding = finding.code(), "{finding}");
        }
        for unchecked in &self.unchecked {
            tracing::info!(reason = %unchecked, "a start-up check could not run");
        }
    }

    fn add(&mut self, checked: Result<Vec<Finding>, CheckError>) {
        match checked {
            Ok(findings) => self.findings.extend(findings),
            Err(e) => self.unchecked.push(e),
        }
    }
}

impl fmt::Display for Report {
    /// What `warehouse-monitor check` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "warning [{}]: {finding}", finding.code())?;
        }
        for unchecked in &self.unchecked {
            writeln!(f, "info: {unchecked}")?;
        }
        match (self.findings.len(), self.unchecked.len()) {
            (0, 0) => writeln!(f, "no warning"),
            (0, n) => writeln!(f, "no warning; {n} check(s) could not run"),
            (w, 0) => writeln!(f, "{w} warning(s)"),
            (w, n) => writeln!(f, "{w} warning(s); {n} check(s) could not run"),
        }
    }
}

/// Runs every check at once, each within [`CHECK_WITHIN`]; the stored
/// offsets only with a broker client.
pub async fn run(settings: &Settings, store: &Store, kafka: Option<&Kafka>) -> Report {
    let topic = settings.kafka.topic.as_str();
    let (pg, redis, retention) = tokio::join!(
        within("PostgreSQL settings", postgres(store)),
        within("Redis memory settings", redis(&settings.redis)),
        async {
            match kafka {
                Some(kafka) => within("stored offsets", retention(store, kafka, topic)).await,
                None => Ok(Vec::new()),
            }
        },
    );
    let mut report = Report::default();
    report.add(pg);
    report.add(redis);
    report.add(retention);
    report
}

/// `warehouse-monitor check`: connects as `serve` would (without creating
/// the database or the topic) and runs every check.
pub async fn standalone(settings: &Settings) -> Result<Report, StoreError> {
    let store = Store::new(&settings.postgres)?;
    let kafka = kafka::connect_within(&settings.kafka, KAFKA_WITHIN).await;
    let mut report = run(settings, &store, kafka.as_ref().ok()).await;
    if let Err(e) = kafka {
        report.unchecked.push(CheckError::Kafka(e));
    }
    store.close();
    Ok(report)
}

/// At start-up: runs the checks beside the service, logs what they found,
/// and gives up when the service stops first.
pub async fn at_start(settings: Settings, store: Store, kafka: Kafka, stop: CancellationToken) {
    tokio::select! {
        report = run(&settings, &store, Some(&kafka)) => report.log(),
        () = stop.cancelled() => {}
    }
}

async fn within(
    what: &'static str,
    check: impl Future<Output = Result<Vec<Finding>, CheckError>>,
) -> Result<Vec<Finding>, CheckError> {
    tokio::time::timeout(CHECK_WITHIN, check)
        .await
        .unwrap_or(Err(CheckError::Timeout(what)))
}

/// PostgreSQL's WAL and checkpoint settings.
pub async fn postgres(store: &Store) -> Result<Vec<Finding>, CheckError> {
    let client = store.client().await.map_err(CheckError::Postgres)?;
    let settings = server_settings::read(&client, &POSTGRES_SETTINGS)
        .await
        .map_err(CheckError::Postgres)?;
    judge_postgres(&settings)
}

/// The findings about these PostgreSQL settings, in the order of
/// [`POSTGRES_SETTINGS`].
pub fn judge_postgres(settings: &[ServerSetting]) -> Result<Vec<Finding>, CheckError> {
    let mut findings = Vec::new();
    let in_order = POSTGRES_SETTINGS
        .iter()
        .filter_map(|name| settings.iter().find(|s| s.name == *name));
    for s in in_order {
        let unreadable = || CheckError::Unreadable {
            name: s.name.clone(),
            setting: s.setting.clone(),
            unit: s.unit.clone(),
        };
        match s.name.as_str() {
            "max_wal_size" => {
                let mb = bytes(&s.setting, s.unit.as_deref()).ok_or_else(unreadable)? >> 20;
                if mb < WAL_BUDGET_FLOOR_MB {
                    findings.push(Finding::WalBudget {
                        max_wal_size_mb: mb,
                    });
                }
            }
            // `off`, or `false` and the like of a boolean before PostgreSQL 15.
            "wal_compression" => {
                if matches!(s.setting.as_str(), "off" | "false" | "0" | "no") {
                    findings.push(Finding::WalUncompressed);
                }
            }
            "checkpoint_timeout" => {
                let secs = seconds(&s.setting, s.unit.as_deref()).ok_or_else(unreadable)?;
                if secs < CHECKPOINT_TIMEOUT_FLOOR_SECS {
                    findings.push(Finding::CheckpointsFrequent {
                        checkpoint_timeout_secs: secs,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(findings)
}

/// Redis' memory limit and eviction policy. A server that refuses `CONFIG
/// GET` (managed services rename it) is a check that could not run.
pub async fn redis(settings: &RedisSettings) -> Result<Vec<Finding>, CheckError> {
    let eviction = eviction::limits(settings)
        .await
        .map_err(CheckError::Redis)?;
    Ok(judge_redis(&eviction).into_iter().collect())
}

/// The finding about Redis' memory, if any. The cache's keys all expire, so
/// any policy that evicts (`allkeys-*` or `volatile-*`) keeps it working.
pub fn judge_redis(eviction: &Eviction) -> Option<Finding> {
    if eviction.maxmemory == 0 {
        Some(Finding::RedisUnbounded)
    } else if eviction.policy == "noeviction" {
        Some(Finding::RedisNoEviction {
            maxmemory: eviction.maxmemory,
        })
    } else {
        None
    }
}

/// Each stored offset of `topic` against its partition's log start.
pub async fn retention(
    store: &Store,
    kafka: &Kafka,
    topic: &str,
) -> Result<Vec<Finding>, CheckError> {
    let client = store.client().await.map_err(CheckError::Offsets)?;
    let stored = offsets::of_topic(&client, topic)
        .await
        .map_err(CheckError::Offsets)?;
    drop(client);
    let mut findings = Vec::new();
    for offset in stored {
        let (log_start, _) = kafka
            .log_bounds(topic, offset.partition)
            .await
            .map_err(|cause| CheckError::LogStart {
                partition: offset.partition,
                cause,
            })?;
        findings.extend(judge_offset(&offset, log_start));
    }
    Ok(findings)
}

/// The finding about one stored offset, given its partition's log start
/// (the first offset the broker still holds).
pub fn judge_offset(stored: &offsets::Stored, log_start: i64) -> Option<Finding> {
    (stored.next_offset < log_start).then_some(Finding::RetentionPassed {
        partition: stored.partition,
        stored: stored.next_offset,
        log_start,
        age_secs: stored.age_secs,
    })
}

/// A size setting in bytes: `setting` counted in `unit` (`8kB`, `MB`...).
fn bytes(setting: &str, unit: Option<&str>) -> Option<u64> {
    let (count, base) = split_unit(unit.unwrap_or("B"));
    let scale: u64 = match base {
        "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    setting
        .parse::<u64>()
        .ok()?
        .checked_mul(count?)?
        .checked_mul(scale)
}

/// A time setting in whole seconds: `setting` counted in `unit`.
fn seconds(setting: &str, unit: Option<&str>) -> Option<u64> {
    let (count, base) = split_unit(unit?);
    let value = setting.parse::<u64>().ok()?.checked_mul(count?)?;
    Some(match base {
        "ms" => value / 1000,
        "s" => value,
        "min" => value.checked_mul(60)?,
        "h" => value.checked_mul(3600)?,
        "d" => value.checked_mul(86_400)?,
        _ => return None,
    })
}

/// `8kB` into (8, `kB`), `MB` into (1, `MB`).
fn split_unit(unit: &str) -> (Option<u64>, &str) {
    let digits = unit.len() - unit.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let count = if digits == 0 {
        Some(1)
    } else {
        unit[..digits].parse().ok()
    };
    (count, &unit[digits..])
}

/// `4096` MB as `4 GB`, `1500` as `1500 MB`.
fn megabytes(mb: u64) -> String {
    if mb >= 1024 && mb % 1024 == 0 {
        format!("{} GB", mb / 1024)
    } else {
        format!("{mb} MB")
    }
}

/// Seconds as the largest unit that divides them: `5 min`, `90 s`, `3 d`.
fn duration(secs: u64) -> String {
    match secs {
        0 => "0 s".to_owned(),
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// An age in the unit that reads best: `45 s`, `12 min`, `5 h`, `3 d`.
fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests;
