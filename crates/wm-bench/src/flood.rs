//! `wm-bench flood`: random unknown movement ids at full speed, a fresh id
//! per request, for N seconds, against the service on a fresh database and
//! a Redis of this tool's own (so that its memory is the service's alone).
//! Prints Redis' `used_memory` and key count before, during and after, and
//! whether every answer was the right 404: the cached 404s of unknown ids
//! must stay bounded however long the flood lasts.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;
use wm_devtools::{free_port, redis_server::RedisServer};

use crate::{
    error::BenchError,
    http::{Conn, Reconnecting},
    under_test::{self, Fresh, Launch},
    wm::Settings,
};

/// The growth of `used_memory` the flood must stay under.
const LIMIT: u64 = 64 << 20;

/// Options of `wm-bench flood`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Seconds of flooding.
    #[arg(long, default_value_t = 300)]
    pub(crate) secs: u64,
    /// Concurrent connections, each sending its next request when the
    /// previous answer arrived.
    #[arg(long, default_value_t = 64)]
    pub(crate) users: usize,
    /// Where the service's log goes.
    #[arg(long, default_value = "target/flood")]
    pub(crate) out: std::path::PathBuf,
    #[command(flatten)]
    pub(crate) common: crate::Common,
}

/// `used_memory` (bytes) and the number of keys of `redis`.
fn memory(redis: &RedisServer) -> (u64, u64) {
    let info = redis.cli(&["INFO", "memory"]).unwrap_or_default();
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let keys = redis
        .cli(&["DBSIZE"])
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (used, keys)
}

/// Answers counted by the flood.
#[derive(Debug, Default)]
struct Counts {
    right: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
}

/// Runs the flood; returns the report and whether it passed.
pub(crate) async fn run(options: Options) -> Result<(String, bool), BenchError> {
    let settings = Settings::load(&options.common.config_dir, None)?;
    let dir = crate::run_dir(&options.out)?;
    let port = free_port().map_err(BenchError::io("127.0.0.1:0"))?;
    let redis = RedisServer::start(port, &[])
        .await
        .map_err(BenchError::io("redis-server"))?;
    let mut fresh = Fresh::new(&settings, "flood");
    fresh.redis_url = Some(redis.url());
    let launch = Launch {
        binary: options.common.service_binary(),
        config_dir: options.common.config_dir.clone(),
        partitions: 1,
        batch_size: settings.batch.size,
        log: dir.join("service.log"),
    };
    let service = launch.start(&fresh).await?;
    wait_for_cache(service.addr()).await?;
    let before = memory(&redis);
    println!(
        "before: used_memory {:.1} MiB, {} keys",
        mib(before.0),
        before.1
    );

    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(options.secs);
    let users: Vec<_> = (0..options.users.max(1))
        .map(|_| tokio::spawn(user(service.addr(), deadline, Arc::clone(&counts))))
        .collect();
    let started = Instant::now();
    let mut peak = before;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10).min(deadline - Instant::now())).await;
        let now = memory(&redis);
        peak = (peak.0.max(now.0), peak.1.max(now.1));
        let sent = counts.right.load(Ordering::Relaxed) + counts.wrong.load(Ordering::Relaxed);
        println!(
            "{:>4.0} s: {sent} requests ({:.0}/s), used_memory {:.1} MiB, {} keys",
            started.elapsed().as_secs_f64(),
            sent as f64 / started.elapsed().as_secs_f64(),
            mib(now.0),
            now.1
        );
    }
    for user in users {
        let _ = user.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = memory(&redis);
    let right = counts.right.load(Ordering::Relaxed);
    let wrong = counts.wrong.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let growth = peak
        .0
        .saturating_sub(before.0)
        .max(after.0.saturating_sub(before.0));
    let passed = wrong == 0 && failed == 0 && growth < LIMIT;
    let report = format!(
        "flood of unknown movement ids, {} users, {elapsed:.0} s: {} requests ({:.0}/s), \
         {right} answered 404 not_found, {wrong} other answers, {failed} failed requests\n\
         Redis used_memory: {:.1} MiB before, {:.1} MiB after, {:.1} MiB at the highest sample; \
         keys: {} before, {} after, {} at most; growth {:.1} MiB (limit {:.0} MiB): {}",
        options.users,
        right + wrong,
        (right + wrong) as f64 / elapsed,
        mib(before.0),
        mib(after.0),
        mib(peak.0),
        before.1,
        after.1,
        peak.1,
        mib(growth),
        mib(LIMIT),
        if passed { "PASS" } else { "FAIL" },
    );
    under_test::stop(service).await;
    Ok((report, passed))
}

/// One user: a fresh random id per request until `deadline`; a right answer
/// is 404 with the `not_found` code.
async fn user(addr: SocketAddr, deadline: Instant, counts: Arc<Counts>) {
    let mut conn = Reconnecting::new(addr);
    while Instant::now() < deadline {
        let id = Uuid::new_v4();
        match conn.get_with_body(&format!("/api/movements/{id}")).await {
            Ok((404, body)) if body.windows(11).any(|w| w == b"\"not_found\"") => {
                counts.right.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                counts.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Waits until the service reads the cache (its outbox look found it
/// empty): the flood measures the cache, not its absence.
async fn wait_for_cache(addr: SocketAddr) -> Result<(), BenchError> {
    for _ in 0..300 {
        if let Ok(mut conn) = Conn::open(addr).await
            && let Ok(text) = conn.get_text("/health/ready").await
            && text.contains("\"cache_outbox\":0")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BenchError::Task(
        "the service's cache outbox did not empty".into(),
    ))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}
