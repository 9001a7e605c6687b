//! The service under test, run as its own process (the release binary with
//! `WM_*` variables, through the library's `devtools::child`), so that the
//! load generator and the service never share a runtime. Also the fresh
//! database and topic names of a run, and waiting for consumption by reading
//! `consumer_offsets`, the service's public record of what it committed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::{
    error::BenchError,
    wm::{Service, Settings, store},
};

/// How long the service may take to answer `/health/live` after its start.
const LIVE_WITHIN: Duration = Duration::from_secs(60);

/// A fresh database URL and topic name for one run, and the Redis the
/// service uses when not the configured one.
#[derive(Debug, Clone)]
pub(crate) struct Fresh {
    pub(crate) database_url: String,
    pub(crate) topic: String,
    pub(crate) redis_url: Option<String>,
}

impl Fresh {
    pub(crate) fn new(settings: &Settings, label: &str) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let short = &id[..12];
        let base = settings.postgres.url.expose();
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        Self {
            database_url: format!("{server}/wm_{label}_{short}"),
            topic: format!("wm-{label}-{short}"),
            redis_url: None,
        }
    }

    /// A pool on the fresh database, for reading offsets and ids.
    pub(crate) fn pool(&self, settings: &Settings, size: usize) -> Result<Pool, BenchError> {
        let mut pg = settings.postgres.clone();
        pg.url = self.database_url.clone().into();
        pg.pool_size = size;
        Ok(store::pool(&pg)?)
    }
}

/// How to start the service.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) binary: PathBuf,
    pub(crate) config_dir: PathBuf,
    pub(crate) partitions: i32,
    pub(crate) batch_size: usize,
    pub(crate) log: PathBuf,
}

/// The release binary next to this tool's own executable.
pub(crate) fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("warehouse-monitor")))
        .unwrap_or_else(|| PathBuf::from("warehouse-monitor"))
}

impl Launch {
    /// Creates and migrates `fresh`'s database with the build's own
    /// `migrate` command, so that a baseline of an older schema runs on its
    /// own schema.
    pub(crate) async fn migrate(&self, fresh: &Fresh) -> Result<(), BenchError> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("migrate")
            .env("WM_POSTGRES__URL", &fresh.database_url)
            .env("RUST_LOG", "warn");
        let binary = self.binary.clone();
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|e| BenchError::Task(e.to_string()))?
            .map_err(BenchError::io(&binary))?;
        if output.status.success() {
            return Ok(());
        }
        Err(BenchError::Migrate {
            binary,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    /// Starts `serve` on `fresh` and returns once `/health/live` answers.
    pub(crate) async fn start(&self, fresh: &Fresh) -> Result<Service, BenchError> {
        let mut command = Command::new(&self.binary);
        if let Some(url) = &fresh.redis_url {
            command.env("WM_REDIS__URL", url);
        }
        command
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("serve")
            .env("WM_POSTGRES__URL", &fresh.database_url)
            .env("WM_KAFKA__TOPIC", &fresh.topic)
            .env("WM_KAFKA__PARTITIONS", self.partitions.to_string())
            .env("WM_BATCH__SIZE", self.batch_size.to_string())
            // The service logs warnings only, unless WMBENCH_SERVICE_LOG
            // asks for more (a RUST_LOG filter, to diagnose a run).
            .env(
                "RUST_LOG",
                std::env::var("WMBENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".to_owned()),
            );
        Ok(Service::start(command, &self.log, LIVE_WITHIN).await?)
    }
}

/// Stops the service gracefully: SIGTERM, then SIGKILL after 15 s. How it
/// exited is in its log; a run's figures were taken before.
pub(crate) async fn stop(service: Service) {
    if let Err(e) = service.stop(Duration::from_secs(15)).await {
        eprintln!("stopping the service: {e}");
    }
}

/// Committed next offset per partition of `topic`, from `consumer_offsets`.
pub(crate) async fn committed(pool: &Pool, topic: &str) -> Result<BTreeMap<i32, i64>, BenchError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1",
            &[&topic],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Waits until every partition's committed offset reaches `target`; returns
/// the instant the last one was seen reached.
pub(crate) async fn wait_committed(
    pool: &Pool,
    topic: &str,
    target: &BTreeMap<i32, i64>,
    service: &mut Service,
    limit: Duration,
) -> Result<Instant, BenchError> {
    let deadline = Instant::now() + limit;
    let want: i64 = target.values().sum();
    loop {
        service.check_running()?;
        let done = committed(pool, topic).await.unwrap_or_default();
        if target
            .iter()
            .all(|(p, end)| done.get(p).copied().unwrap_or(0) >= *end)
        {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(BenchError::NotConsumed {
                committed: done.values().sum(),
                target: want,
                secs: limit.as_secs(),
            });
        }
        tokio::time::sleep(poll_interval(done.values().sum(), want)).await;
    }
}

/// How long to wait before the next look at the offsets: 50 ms while less
/// than 90% is committed, then 5 ms. Each look is a query that PostgreSQL
/// answers while the service runs (at 10 ms throughout, the looks cost about
/// 0.1 s of the phase's CPU); the last stretch is timed to within 5 ms.
fn poll_interval(committed: i64, target: i64) -> Duration {
    if committed.saturating_mul(10) < target.saturating_mul(9) {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(5)
    }
}

/// The repository's `config/` (this crate lives in `crates/wm-bench`).
pub(crate) const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
