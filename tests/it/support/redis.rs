//! Redis servers of the test's own, `redis-cli`, the cache hits an
//! application counts, and a cache client that believes an epoch.

use std::{sync::Arc, time::Duration};

use warehouse_monitor::{
    cache::{Cache, Epoch, Key},
    config::RedisSettings,
};
use wm_devtools::redis_server::{self, RedisServer};

use super::{
    helpers::{Patience, TestApp, eventually},
    metrics::{Exposition, scrape},
};

/// Reads the cache-hit counter of the app from its own /metrics.
pub(crate) async fn cache_hits(app: &TestApp) -> f64 {
    hits_in(&scrape(app).await)
}

/// The cache hits a /metrics page counts.
pub(crate) fn hits_in(metrics: &Exposition) -> f64 {
    metrics
        .find("wm_cache_requests_total", &[("result", "hit")])
        .map(|s| s.value)
        .sum()
}

/// `redis-cli -p port args…`, its answer as text.
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> String {
    redis_server::cli(port, args).expect("redis-cli runs")
}

/// A Redis server of the test's own, on a free port.
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    server: RedisServer,
}

impl OwnRedis {
    pub(crate) async fn start(port: u16) -> Self {
        Self::start_with(port, &[]).await
    }

    /// Starts with more options, which override the defaults (no persistence).
    pub(crate) async fn start_with(port: u16, options: &[&str]) -> Self {
        let server = RedisServer::start(port, options)
            .await
            .unwrap_or_else(|e| panic!("own redis on {port}: {e}"));
        OwnRedis { port, server }
    }

    pub(crate) fn url(&self) -> String {
        self.server.url()
    }

    pub(crate) fn signal(&self, signal: &str) {
        self.server.signal(signal).unwrap();
    }

    pub(crate) fn kill(&mut self) {
        self.server.kill();
    }
}

/// A cache of its own, as an instance has one, believing `epoch` (whose
/// marker this writes) with a permit granted by hand: no outbox watch here.
pub(crate) async fn trusted_cache(
    redis: &RedisSettings,
    epoch: Epoch,
) -> (Cache, Arc<warehouse_monitor::metrics::Metrics>) {
    let metrics = Arc::new(warehouse_monitor::metrics::Metrics::new().unwrap());
    let cache = Cache::start(redis, Arc::clone(&metrics)).await.unwrap();
    cache.mark_epoch(epoch, Epoch::random()).await.unwrap();
    cache.permit_until(std::time::Instant::now() + Duration::from_secs(600), epoch);
    let patience = Patience::secs(5).every(Duration::from_millis(10));
    eventually(patience, || async {
        (cache.trusted_epoch() == Some(epoch))
            .then_some(())
            .ok_or("the tracking connection believes the epoch")
    })
    .await;
    (cache, metrics)
}

/// A plain Redis client of the test's own, to look at what the server holds
/// under a cache key, whatever the service believes about it. Each look is
/// a connection of its own, bounded in time, so that a look across a Redis
/// restart sees the new server.
pub(crate) struct RawRedis {
    url: String,
}

impl RawRedis {
    pub(crate) async fn connect(url: &str) -> Self {
        let raw = Self {
            url: url.to_owned(),
        };
        raw.client().await.expect("Redis reachable");
        raw
    }

    async fn client(&self) -> Option<fred::clients::Client> {
        use fred::prelude::{Builder, ClientLike, Config};
        let config = Config::from_url(&self.url).expect("a Redis URL");
        let client = Builder::from_config(config).build().ok()?;
        tokio::time::timeout(Duration::from_secs(5), client.init())
            .await
            .ok()?
            .ok()?;
        Some(client)
    }

    /// The raw entry under `key` in `epoch`, if Redis holds one (`None` too
    /// when Redis cannot be reached).
    pub(crate) async fn entry(&self, key: Key, epoch: Epoch) -> Option<String> {
        use fred::prelude::{ClientLike, KeysInterface};
        let client = self.client().await?;
        let get = client.get::<Option<String>, _>(key.in_epoch(epoch));
        let value = tokio::time::timeout(Duration::from_secs(5), get).await;
        let _ = client.quit().await;
        value.ok()?.ok()?
    }
}
