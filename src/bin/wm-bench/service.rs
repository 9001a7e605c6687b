//! The service under test, run as its own process (the release binary with
//! `WM_*` variables), so that the load generator and the service never share
//! a runtime. Also the fresh database and topic names of a run, and waiting
//! for consumption by reading `consumer_offsets`, the service's public record
//! of what it committed.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::{
    error::BenchError,
    http::Conn,
    wm::{Settings, Store},
};

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
        let base = settings.postgres.url.as_str();
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
        pg.url = self.database_url.clone();
        pg.pool_size = size;
        Ok(Store::new(&pg)?.pool())
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

/// A running service process; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub(crate) struct Service {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: PathBuf,
}

impl Service {
    /// Starts `serve` on `fresh` and returns once `/health/live` answers.
    pub(crate) async fn start(launch: &Launch, fresh: &Fresh) -> Result<Self, BenchError> {
        let addr = free_port()?;
        let log = std::fs::File::create(&launch.log).map_err(BenchError::io(&launch.log))?;
        let log_err = log.try_clone().map_err(BenchError::io(&launch.log))?;
        let mut command = Command::new(&launch.binary);
        if let Some(url) = &fresh.redis_url {
            command.env("WM_REDIS__URL", url);
        }
        let child = command
            .arg("--config-dir")
            .arg(&launch.config_dir)
            .arg("serve")
            .env("WM_POSTGRES__URL", &fresh.database_url)
            .env("WM_KAFKA__TOPIC", &fresh.topic)
            .env("WM_KAFKA__PARTITIONS", launch.partitions.to_string())
            .env("WM_BATCH__SIZE", launch.batch_size.to_string())
            .env("WM_HTTP__ADDR", addr.to_string())
            // The service logs warnings only, unless WMBENCH_SERVICE_LOG
            // asks for more (a RUST_LOG filter, to diagnose a run).
            .env(
                "RUST_LOG",
                std::env::var("WMBENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                path: launch.binary.clone(),
                source,
            })?;
        let mut service = Self {
            child,
            addr,
            log: launch.log.clone(),
        };
        service.wait_live(Duration::from_secs(60)).await?;
        Ok(service)
    }

    async fn wait_live(&mut self, limit: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_running()?;
            if let Ok(mut conn) = Conn::open(self.addr).await {
                if let Ok(200) = conn.get("/health/live").await {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::NotLive {
                    addr: self.addr,
                    secs: limit.as_secs(),
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The most memory the process has held resident so far (`VmHWM` in
    /// `/proc`), in bytes; `None` where `/proc` cannot be read.
    pub(crate) fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Fails if the process has exited.
    pub(crate) fn check_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(BenchError::Exited {
                status,
                log: self.log.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Graceful stop: SIGTERM, then SIGKILL after 15 s.
    pub(crate) async fn stop(mut self) {
        self.terminate().await;
    }

    async fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("127.0.0.1:0"))?;
    listener.local_addr().map_err(BenchError::io("127.0.0.1:0"))
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

/// The `config/` directory of this checkout.
pub(crate) const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
