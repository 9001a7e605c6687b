//! A Redis Cluster (three masters, a replica each) with the cache on: reads
//! are cached on every master (over TLS, with a password), each through a
//! tracking connection of its own; a master killed while events arrive is followed to its replica with
//! every answer right; and a shard whose master fails over to a replica that
//! missed a delete never serves what it lost, while the other shards'
//! entries were never at risk.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use uuid::Uuid;
use warehouse_monitor::cache::Key;

use crate::support::{
    helpers::{Ev, TestApp, eventually, stock_path, test_settings},
    metrics::scrape,
    pki::Pki,
    redis::{
        Access, Cluster, Watch, cache_hits, read_between_two_halves_then_check_every_answer,
        redis_cli, wait_cached,
    },
    stream,
};

/// How far a server is in its replication stream (a master: what it wrote;
/// a replica: what it applied).
fn repl_offset(port: u16) -> i64 {
    redis_cli(port, &["INFO", "replication"])
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|o| o.trim().parse().ok())
        .unwrap_or(-1)
}

/// An application on `cluster`, with `partitions` partitions.
async fn app_on(cluster: &Cluster, partitions: i32) -> TestApp {
    let mut settings = test_settings(partitions);
    settings.redis.url = cluster.url().into();
    TestApp::spawn_with(settings).await
}

#[tokio::test]
async fn a_cluster_over_tls_with_a_password_is_cached_on_every_master_and_answers_right() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let cluster = Cluster::start_with(Access {
        password: Some("cluster-secret"),
        tls: Some(&pki),
    })
    .await;
    let mut settings = test_settings(2);
    settings.redis.url = cluster.url().into();
    settings.redis.ca_file = pki.ca_str();
    let app = TestApp::spawn_with(settings).await;
    let stream = stream::generate(32, 400, 2, false);
    let pairs: Vec<_> = stream.expected_stock.keys().copied().collect();
    let took = read_between_two_halves_then_check_every_answer(&app, &stream, 2).await;
    println!("redis-cluster:// URL: second half ingested in {took:?}");
    wait_cached(&app, &pairs, 30, "cache hits on the cluster").await;
    let m = scrape(&app).await;
    let queued: f64 = m
        .find("wm_cache_outbox_queued_total", &[])
        .map(|s| s.value)
        .sum();
    let deleted: f64 = m
        .find("wm_cache_invalidations_total", &[])
        .map(|s| s.value)
        .sum();
    let near: f64 = m
        .find("wm_cache_near_hits_total", &[])
        .map(|s| s.value)
        .sum();
    assert_eq!(queued, 0.0, "no batch's deletes went to the outbox");
    assert!(
        deleted > 0.0,
        "the batches' deletes, by hash slot, acknowledged"
    );
    assert!(near > 0.0, "hits answered from the near caches");
    // Each master holds the epoch's marker in a slot of its own.
    let epoch = app.cache_epoch().await;
    let pattern = format!("wm:{epoch}:marker:*");
    let masters: Vec<usize> = (0..cluster.nodes.len())
        .filter(|n| cluster.cli(*n, &["ROLE"]).starts_with("master"))
        .collect();
    assert_eq!(masters.len(), 3);
    for node in masters {
        let markers = cluster.cli(node, &["KEYS", &pattern]);
        assert_eq!(markers.lines().count(), 1, "master {node}: {markers:?}");
    }
    app.stop().await;
    drop(cluster);
}

#[tokio::test]
async fn a_master_killed_while_events_arrive_is_followed_to_its_replica() {
    let mut cluster = Cluster::start().await;
    let app = app_on(&cluster, 2).await;
    let stream = stream::generate(33, 3000, 2, false);
    let pairs: Vec<_> = stream.expected_stock.keys().copied().collect();
    let quarter = |values: &Vec<Vec<u8>>, q: usize| {
        let n = values.len();
        values[n * q / 4..n * (q + 1) / 4].to_vec()
    };
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, quarter(values, 0)).await;
        app.produce(partition, quarter(values, 1)).await;
    }
    app.wait_consumed().await;
    wait_cached(&app, &pairs[..20], 30, "cache hits before the failover").await;

    let epoch = app.cache_epoch().await;
    let (w, p) = pairs[0];
    let key = Key::Stock {
        warehouse_id: w,
        product_id: p,
    }
    .in_epoch(epoch);
    app.get_json(&stock_path(w, p)).await;
    let (master, replica) = cluster.master_and_replica_of(&key);
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, quarter(values, 2)).await;
    }
    cluster.nodes[master].kill();
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, quarter(values, 3)).await;
    }
    cluster.wait_master(replica).await;
    app.wait_consumed().await;
    stream.assert_stock(&app.pool).await;
    let check = |when: &'static str| {
        let (app, stream) = (&app, &stream);
        async move {
            for (pair, quantity) in &stream.expected_stock {
                let answer = app.get_json(&stock_path(pair.0, pair.1)).await.1;
                assert_eq!(answer["quantity"], (*quantity).max(0), "{pair:?} {when}");
            }
        }
    };
    check("after the failover").await;
    wait_cached(&app, &pairs[20..40], 30, "cache hits on the new master").await;
    check("once cached again").await;
    app.stop().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_failed_over_to_a_replica_that_missed_a_delete_never_serves_it() {
    let mut cluster = Cluster::start().await;
    let app = Arc::new(app_on(&cluster, 1).await);
    let (w, p) = (Uuid::new_v4(), Uuid::new_v4());
    let path = stock_path(w, p);
    let quantity = |body: serde_json::Value| body["quantity"].as_i64().unwrap();
    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), w, p, 5).bytes()])
        .await;
    app.wait_consumed().await;
    let hits = cache_hits(&app).await;
    eventually(30, || async {
        assert_eq!(quantity(app.get_json(&path).await.1), 5);
        (cache_hits(&app).await > hits)
            .then_some(())
            .ok_or("the 5 is cached")
    })
    .await;
    let epoch = app.cache_epoch().await;
    let key = Key::Stock {
        warehouse_id: w,
        product_id: p,
    }
    .in_epoch(epoch);
    let (master, replica) = cluster.master_and_replica_of(&key);
    let (master_port, replica_port) = (cluster.nodes[master].port, cluster.nodes[replica].port);
    let cached_five = redis_cli(master_port, &["GET", &key]);
    assert!(cached_five.contains("\"quantity\":5"), "{cached_five}");
    let written = repl_offset(master_port);
    eventually(10, || async {
        (repl_offset(replica_port) >= written)
            .then_some(())
            .ok_or("the replica holds the 5")
    })
    .await;

    // The replica stops, and its link is cut: what the master acknowledges
    // from here on never reaches it.
    cluster.nodes[replica].signal("-STOP");
    redis_cli(master_port, &["CLIENT", "KILL", "TYPE", "replica"]);
    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), w, p, 7).bytes()])
        .await;
    app.wait_consumed().await;
    for _ in 0..3 {
        assert_eq!(quantity(app.get_json(&path).await.1), 12);
    }

    // From here on every read must answer 12.
    let watch = Watch::start(Arc::clone(&app), path.clone(), 12);
    // The master dies; its lagging replica takes over.
    let lost_at = Instant::now();
    cluster.nodes[master].kill();
    cluster.nodes[replica].signal("-CONT");
    eventually(20, || async {
        (redis_cli(replica_port, &["CLUSTER", "FAILOVER", "TAKEOVER"]) == "OK")
            .then_some(())
            .ok_or("the replica takes over")
    })
    .await;
    cluster.wait_master(replica).await;
    // The test would fail without the markers: the 5 is back, under the
    // key and the epoch it had.
    assert_eq!(redis_cli(replica_port, &["GET", &key]), cached_five);

    // Caching resumes, in a new epoch, and every answer until then was 12.
    let hits = cache_hits(&app).await;
    let resumed = eventually(30, || async {
        (cache_hits(&app).await > hits).then(|| lost_at.elapsed())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (reads, wrong) = watch.stop().await;
    let stale = wrong.len();
    let now = app.cache_epoch().await;
    println!(
        "cluster shard lost a delete: {reads} reads, {stale} not 12; cache hits again \
         {resumed:?} after the takeover began; epoch {epoch} -> {now}"
    );
    assert_eq!(
        stale,
        0,
        "{stale} of {reads} reads did not answer 12, the first: {:?}",
        &wrong[..wrong.len().min(3)]
    );
    assert!(reads > 20, "only {reads} reads");
    assert_ne!(now, epoch, "a new cache epoch began");
    let m = scrape(&app).await;
    assert!(
        m.value("wm_cache_distrusted_total", &[("cause", "marker")]) >= 1.0,
        "detected by the shard's marker"
    );
    Arc::try_unwrap(app).ok().expect("reader done").stop().await;
    drop(cluster);
}
