//! A master under Sentinel, with the cache on, every connection over TLS
//! and a password, followed through a failover: every answer is right, ingestion goes on, and the cache serves
//! hits again after the failover. A Redis Cluster is `redis_cluster.rs`.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use uuid::Uuid;

use crate::support::{
    helpers::{TestApp, eventually, free_port, stock_path, test_settings},
    pki::Pki,
    redis::{OwnRedis, redis_cli, tls_only, wait_cached},
    stream,
};

/// The name the sentinels know the master by.
const SERVICE: &str = "wm";

/// Three `redis-server --sentinel` processes watching one master, every
/// connection (to them, between them, to the servers) over TLS, and every
/// server and sentinel asking for [`PASSWORD`].
struct Sentinels {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
    ca: String,
}

/// The password of the servers and the sentinels (fred asks both with the
/// URL's).
const PASSWORD: &str = "sentinel-Pw-1";

/// A server speaking TLS only, asking for [`PASSWORD`], with `more` options.
async fn tls_redis(pki: &Pki, more: &[&str]) -> OwnRedis {
    let port = free_port();
    let tls = tls_only(pki, port);
    let options: Vec<&str> = tls
        .iter()
        .map(String::as_str)
        .chain(["--requirepass", PASSWORD, "--masterauth", PASSWORD])
        .chain(more.iter().copied())
        .collect();
    OwnRedis::start_with(port, &options).await
}

impl Sentinels {
    fn start(master: u16, pki: &Pki) -> Self {
        let dir = std::env::temp_dir().join(format!("wm-sentinel-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut ports, mut children) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{port}.conf"));
            // Each `--option value` pair of the servers' TLS is a line here.
            let tls: String = tls_only(pki, port)
                .chunks(2)
                .map(|kv| format!("{} {}\n", kv[0].trim_start_matches("--"), kv[1]))
                .collect();
            std::fs::write(
                &conf,
                format!(
                    "{tls}bind 127.0.0.1\ndir {dir}\nrequirepass {PASSWORD}\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n\
                     sentinel auth-pass {SERVICE} {PASSWORD}\n\
                     sentinel sentinel-pass {PASSWORD}\n\
                     sentinel down-after-milliseconds {SERVICE} 1000\n\
                     sentinel failover-timeout {SERVICE} 5000\n",
                    dir = dir.display()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            ports.push(port);
            children.push(child);
        }
        Self {
            ports,
            children,
            dir,
            ca: pki.ca_str(),
        }
    }

    /// What `redis-cli` printed for `args` on the first sentinel (or a
    /// server: `port`), over TLS.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let tls = [
            "--tls",
            "--cacert",
            self.ca.as_str(),
            "-a",
            PASSWORD,
            "--no-auth-warning",
        ];
        let all: Vec<&str> = tls.iter().chain(args).copied().collect();
        redis_cli(port, &all)
    }

    /// The port of the master the first sentinel names now.
    fn master_port(&self) -> Option<u16> {
        let out = self.cli(
            self.ports[0],
            &["SENTINEL", "get-master-addr-by-name", SERVICE],
        );
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// The URL the service is given.
    fn url(&self) -> String {
        let nodes: Vec<String> = self.ports[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect();
        format!(
            "rediss-sentinel://:{PASSWORD}@127.0.0.1:{}?{}&sentinelServiceName={SERVICE}",
            self.ports[0],
            nodes.join("&")
        )
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_master_under_sentinel_over_tls_with_a_password_is_cached_and_followed_through_a_failover()
 {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let mut master = tls_redis(&pki, &[]).await;
    let replica_of = master.port.to_string();
    let replica = tls_redis(&pki, &["--replicaof", "127.0.0.1", &replica_of]).await;
    let sentinels = Sentinels::start(master.port, &pki);
    eventually(20, || async {
        let seen = sentinels.cli(sentinels.ports[0], &["SENTINEL", "replicas", SERVICE]);
        (sentinels.master_port() == Some(master.port) && seen.contains(&replica.port.to_string()))
            .then_some(())
            .ok_or("the sentinels know the master and its replica")
    })
    .await;

    let mut settings = test_settings(2);
    settings.redis.url = sentinels.url().into();
    settings.redis.ca_file = pki.ca_str();
    let app = TestApp::spawn_with(settings).await;
    let stream = stream::generate(31, 300, 2, false);
    let path = |(w, p): &(Uuid, Uuid)| stock_path(*w, *p);
    let pairs: Vec<_> = stream.expected_stock.keys().copied().collect();
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, values[..values.len() / 2].to_vec())
            .await;
    }
    app.wait_consumed().await;
    // Reads are cached through the master the sentinels name.
    wait_cached(
        &app,
        &pairs[..20],
        20,
        "cache hits through the sentinels' master",
    )
    .await;

    // The master dies; the sentinels promote its replica.
    master.kill();
    eventually(30, || async {
        (sentinels.master_port() == Some(replica.port))
            .then_some(())
            .ok_or("the sentinels promoted the replica")
    })
    .await;
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, values[values.len() / 2..].to_vec())
            .await;
    }
    app.wait_consumed().await;
    stream.assert_stock(&app.pool).await;
    for (pair, quantity) in &stream.expected_stock {
        let answer = app.get_json(&path(pair)).await.1;
        assert_eq!(answer["quantity"], (*quantity).max(0), "{pair:?}");
    }
    // The cache comes back by itself, on the new master.
    wait_cached(
        &app,
        &pairs[20..40],
        30,
        "cache hits again after the failover",
    )
    .await;
    for (pair, quantity) in &stream.expected_stock {
        let answer = app.get_json(&path(pair)).await.1;
        assert_eq!(
            answer["quantity"],
            (*quantity).max(0),
            "{pair:?} after caching resumed"
        );
    }
    app.stop().await;
    drop(sentinels);
}
