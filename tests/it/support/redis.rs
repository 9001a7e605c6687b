//! Redis servers of the test's own, `redis-cli`, the cache hits an
//! application counts, and a cache client that believes an epoch.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use warehouse_monitor::{
    cache::{Cache, Epoch, Key},
    config::RedisSettings,
};
use wm_devtools::redis_server::{self, RedisServer};

use super::{
    helpers::{Patience, TestApp, eventually, free_port, stock_path},
    metrics::{Exposition, scrape},
    stream::Stream,
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

/// Six cluster-enabled servers joined as three masters with a replica each.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<OwnRedis>,
    dir: std::path::PathBuf,
    /// The password every node asks for, if any.
    password: Option<String>,
    /// The CA of the nodes' certificates, when they speak TLS only.
    tls_ca: Option<String>,
}

/// How a [`Cluster`]'s nodes are reached.
#[derive(Default)]
pub(crate) struct Access<'a> {
    /// Every node asks for it (clients and each other).
    pub(crate) password: Option<&'a str>,
    /// Every node speaks TLS only (clients, replication and the cluster
    /// bus), with a certificate of this PKI.
    pub(crate) tls: Option<&'a super::pki::Pki>,
}

impl Cluster {
    pub(crate) async fn start() -> Self {
        Self::start_with(Access::default()).await
    }

    /// A cluster whose nodes are reached as `access` says.
    pub(crate) async fn start_with(access: Access<'_>) -> Self {
        let mut extra: Vec<String> = Vec::new();
        if let Some(p) = access.password {
            extra.extend(["--requirepass", p, "--masterauth", p].map(str::to_owned));
        }
        let tls_ca = access.tls.map(super::pki::Pki::ca_str);
        let dir = std::env::temp_dir().join(format!("wm-cluster-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            // A node also listens on its port + 10000 (the cluster bus).
            let port = std::iter::repeat_with(free_port)
                .find(|p| *p < 55_000)
                .unwrap();
            let config = dir.join(format!("nodes-{port}.conf"));
            let (config, dir_arg) = (config.display().to_string(), dir.display().to_string());
            // Over TLS a node listens on its TLS port only, and speaks TLS
            // on the cluster bus too.
            let tls: Vec<String> = access.tls.map_or_else(Vec::new, |pki| {
                let mut tls = tls_only(pki, port);
                tls.extend(["--tls-cluster", "yes"].map(str::to_owned));
                tls
            });
            let options: Vec<&str> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &config,
                "--dir",
                &dir_arg,
                // A master that stops answering is failed over within
                // seconds, not the default 15.
                "--cluster-node-timeout",
                "1000",
                // A replica takes over however long ago it last heard from
                // its master (an idle link is enough to refuse with the
                // default).
                "--cluster-replica-validity-factor",
                "0",
            ]
            .into_iter()
            .chain(tls.iter().chain(&extra).map(String::as_str))
            .collect();
            nodes.push(OwnRedis::start_with(port, &options).await);
        }
        let cluster = Self {
            nodes,
            dir,
            password: access.password.map(str::to_owned),
            tls_ca,
        };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .args(cluster.cli_access())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(created.status.success(), "{created:?}");
        eventually(20, || async {
            cluster
                .cli(0, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
                .then_some(())
                .ok_or("the cluster is up")
        })
        .await;
        cluster
    }

    /// `redis-cli`'s options to reach a node: the password, TLS.
    fn cli_access(&self) -> Vec<String> {
        let mut access = Vec::new();
        if let Some(password) = &self.password {
            access.extend(["-a", password.as_str(), "--no-auth-warning"].map(str::to_owned));
        }
        if let Some(ca) = &self.tls_ca {
            access.extend(["--tls".to_owned(), "--cacert".to_owned(), ca.clone()]);
        }
        access
    }

    /// What `redis-cli` printed for `args` on node `node`, with the
    /// password and TLS it needs.
    pub(crate) fn cli(&self, node: usize, args: &[&str]) -> String {
        let access = self.cli_access();
        let all: Vec<&str> = access
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        redis_cli(self.nodes[node].port, &all)
    }
}

impl Cluster {
    /// The URL of the cluster, through its first three nodes (with the
    /// password, and over TLS, if the nodes ask for them).
    pub(crate) fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes[1..3]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port))
            .collect();
        let auth = self
            .password
            .as_ref()
            .map_or_else(String::new, |p| format!(":{p}@"));
        let scheme = if self.tls_ca.is_some() {
            "rediss-cluster"
        } else {
            "redis-cluster"
        };
        format!(
            "{scheme}://{auth}127.0.0.1:{}?{}",
            self.nodes[0].port,
            nodes.join("&")
        )
    }

    /// The nodes (indexes) of the master holding `key` (which exists) now,
    /// and of its replica.
    pub(crate) fn master_and_replica_of(&self, key: &str) -> (usize, usize) {
        let master = (0..self.nodes.len())
            .find(|i| {
                let port = self.nodes[*i].port;
                let value = redis_cli(port, &["GET", key]);
                role(port).first().is_some_and(|r| r == "master")
                    && !value.is_empty()
                    && !value.starts_with("MOVED")
            })
            .expect("a master serves the key");
        let master_port = self.nodes[master].port.to_string();
        let replica = (0..self.nodes.len())
            .find(|i| {
                let role = role(self.nodes[*i].port);
                role.first().is_some_and(|r| r == "slave") && role.get(2) == Some(&master_port)
            })
            .expect("the master has a replica");
        (master, replica)
    }

    /// Waits until the cluster is whole again, with `node` a master.
    pub(crate) async fn wait_master(&self, node: usize) {
        let port = self.nodes[node].port;
        eventually(30, || async {
            (role(port).first().is_some_and(|r| r == "master")
                && redis_cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            .then_some(())
            .ok_or("the replica is a master and the cluster whole")
        })
        .await;
    }
}

/// The options that make a redis-server speak TLS only, on `port`, with the
/// certificate of `pki`: to its clients (which show no certificate of their
/// own) and to its replicas.
pub(crate) fn tls_only(pki: &super::pki::Pki, port: u16) -> Vec<String> {
    let file = |name: &str| pki.dir.join(name).display().to_string();
    vec![
        "--port".to_owned(),
        "0".to_owned(),
        "--tls-port".to_owned(),
        port.to_string(),
        "--tls-cert-file".to_owned(),
        file("server.crt"),
        "--tls-key-file".to_owned(),
        file("server.key"),
        "--tls-ca-cert-file".to_owned(),
        file("ca.pem"),
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
        "--tls-replication".to_owned(),
        "yes".to_owned(),
    ]
}

/// `ROLE`'s reply, one line per item.
pub(crate) fn role(port: u16) -> Vec<String> {
    redis_cli(port, &["ROLE"])
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads the stock of each of `pairs` twice until `app` counts more cache
/// hits, within `secs`; `what` names the wait when it fails.
pub(crate) async fn wait_cached(
    app: &TestApp,
    pairs: &[(Uuid, Uuid)],
    secs: u64,
    what: &'static str,
) {
    eventually(secs, || async {
        let before = cache_hits(app).await;
        for (w, p) in pairs {
            app.get_json(&stock_path(*w, *p)).await;
            app.get_json(&stock_path(*w, *p)).await;
        }
        (cache_hits(app).await > before).then_some(()).ok_or(what)
    })
    .await;
}

/// A user reading one stock answer again and again while Redis loses
/// writes: every answer that is not a 200 with `quantity` = `want` is kept.
pub(crate) struct Watch {
    stop: tokio_util::sync::CancellationToken,
    reads: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<Vec<String>>,
}

impl Watch {
    pub(crate) fn start(app: Arc<TestApp>, path: String, want: i64) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let reads = Arc::new(AtomicU64::new(0));
        let reader = {
            let (stop, reads) = (stop.clone(), Arc::clone(&reads));
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                while !stop.is_cancelled() {
                    let (status, body) = app.get_json(&path).await;
                    if status != 200 || body["quantity"] != want {
                        wrong.push(format!("{status} {body}"));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                wrong
            })
        };
        Self {
            stop,
            reads,
            reader,
        }
    }

    /// Stops reading; returns how many reads there were, and the wrong
    /// answers among them.
    pub(crate) async fn stop(self) -> (u64, Vec<String>) {
        self.stop.cancel();
        let wrong = self.reader.await.expect("the reader");
        (self.reads.load(Ordering::Relaxed), wrong)
    }
}

/// Produces the first half of `stream`, reads every stock pair `reads`
/// times (cached where Redis lets it), produces the second half, then checks
/// the stock table and every answer of the API (stock below 0 reads as 0).
/// Returns how long the second half took to ingest.
pub(crate) async fn read_between_two_halves_then_check_every_answer(
    app: &TestApp,
    stream: &Stream,
    reads: usize,
) -> Duration {
    let path = |(w, p): &(Uuid, Uuid)| stock_path(*w, *p);
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, values[..values.len() / 2].to_vec())
            .await;
    }
    app.wait_consumed().await;
    for pair in stream.expected_stock.keys() {
        for _ in 0..reads {
            app.get_json(&path(pair)).await;
        }
    }
    let started = Instant::now();
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, values[values.len() / 2..].to_vec())
            .await;
    }
    app.wait_consumed().await;
    let took = started.elapsed();
    stream.assert_stock(&app.pool).await;
    let mut wrong = Vec::new();
    for (pair, quantity) in &stream.expected_stock {
        let answer = app.get_json(&path(pair)).await.1;
        if answer["quantity"] != (*quantity).max(0) {
            wrong.push((pair, quantity, answer));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers wrong: {:?}",
        wrong.len(),
        stream.expected_stock.len(),
        &wrong[..wrong.len().min(5)]
    );
    took
}
