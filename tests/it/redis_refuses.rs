//! A Redis that answers but refuses, or does not answer at all, never stops
//! ingestion, and never makes an answer wrong: a read-only replica (what a
//! client still connected to an old master sees after a failover), a server
//! that hangs, one out of memory under `noeviction`, one still loading its
//! data (`LOADING`), and one node of a Redis Cluster behind a plain URL
//! (`MOVED`, `CROSSSLOT`). The service ingests as it does with Redis down.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::support::{
    helpers::{Ev, TestApp, eventually, free_port, stock_path, test_settings},
    redis::{
        Cluster, OwnRedis, cache_hits, read_between_two_halves_then_check_every_answer, redis_cli,
    },
    stream,
};

#[tokio::test]
async fn a_read_only_replica_neither_stalls_ingestion_nor_serves_a_stale_answer() {
    let master = OwnRedis::start(free_port()).await;
    let port = free_port();
    let master_port = master.port.to_string();
    // The copy of the master's data it receives goes to a directory of its own.
    let dir = std::env::temp_dir().join(format!("wm-replica-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.display().to_string();
    let replica = OwnRedis::start_with(
        port,
        &["--replicaof", "127.0.0.1", &master_port, "--dir", &dir_arg],
    )
    .await;
    eventually(10, || async {
        redis_cli(port, &["INFO", "replication"])
            .contains("master_link_status:up")
            .then_some(())
            .ok_or("the replica follows its master")
    })
    .await;
    let mut settings = test_settings(2);
    settings.redis.url = replica.url().into();
    let app = TestApp::spawn_with(settings).await;

    // Read a stock pair first, so that its answer is cached (reads work on a
    // replica), then change it: the delete is refused with READONLY.
    let (w, p) = (Uuid::new_v4(), Uuid::new_v4());
    let path = stock_path(w, p);
    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), w, p, 3).bytes()])
        .await;
    app.wait_consumed().await;
    assert_eq!(app.get_json(&path).await.1["quantity"], 3);

    let stream = stream::generate(21, 1500, 2, false);
    let started = Instant::now();
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, values.clone()).await;
    }
    app.produce(1, vec![Ev::arrival(Uuid::new_v4(), w, p, 4).bytes()])
        .await;
    app.wait_consumed().await;
    println!(
        "read-only replica: {} records ingested in {:?}",
        stream.events + 2,
        started.elapsed()
    );
    assert_eq!(
        app.get_json(&path).await.1["quantity"],
        7,
        "the answer cached before is never served again"
    );
    let errors: Vec<Option<String>> = app
        .statuses
        .snapshot()
        .iter()
        .map(|s| s.last_error())
        .collect();
    assert!(
        errors.iter().all(Option::is_none),
        "no partition failed: {errors:?}"
    );

    // Promoted, it takes writes: what is ingested from then on shows too.
    assert_eq!(redis_cli(port, &["REPLICAOF", "NO", "ONE"]), "OK");
    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), w, p, 5).bytes()])
        .await;
    app.wait_consumed().await;
    for _ in 0..20 {
        assert_eq!(app.get_json(&path).await.1["quantity"], 12);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the cache comes back by itself on the promoted server.
    let hits = cache_hits(&app).await;
    eventually(20, || async {
        assert_eq!(app.get_json(&path).await.1["quantity"], 12);
        (cache_hits(&app).await > hits)
            .then_some(())
            .ok_or("cache hits on the promoted replica")
    })
    .await;
    app.stop().await;
    drop(replica);
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_redis_that_hangs_does_not_make_every_batch_wait_for_it() {
    let redis = OwnRedis::start_with(free_port(), &["--enable-debug-command", "yes"]).await;
    let mut settings = test_settings(2);
    settings.redis.url = redis.url().into();
    // Many small batches: each would wait out the Redis timeout.
    settings.batch.size = 20;
    let app = TestApp::spawn_with(settings).await;
    let stream = stream::generate(22, 600, 2, false);
    let hang = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "DEBUG", "SLEEP", "20"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, values.clone()).await;
    }
    app.wait_consumed().await;
    let took = started.elapsed();
    println!(
        "hanging Redis: {} records in batches of 20 ingested in {took:?}",
        stream.events
    );
    // Waiting out the Redis timeout in each batch, this took 8.5 s in
    // batches of 50 (1.9 s without), and takes about 20 s in batches of 20.
    assert!(
        took < Duration::from_secs(8),
        "ingestion waited for a hanging Redis: {took:?}"
    );
    stream.assert_stock(&app.pool).await;
    // The API answers while Redis still hangs (stock below 0 reads as 0).
    for ((w, p), quantity) in stream.expected_stock.iter().take(20) {
        let path = stock_path(*w, *p);
        assert_eq!(app.get_json(&path).await.1["quantity"], (*quantity).max(0));
    }
    app.stop().await;
    let mut hang = hang;
    let _ = hang.kill();
    let _ = hang.wait();
    drop(redis);
}

#[tokio::test]
async fn a_cluster_node_behind_a_plain_url_never_serves_a_stale_answer() {
    let cluster = Cluster::start().await;
    let mut settings = test_settings(2);
    settings.redis.url = cluster.nodes[0].url().into();
    let app = TestApp::spawn_with(settings).await;
    let stream = stream::generate(23, 400, 2, false);
    let took = read_between_two_halves_then_check_every_answer(&app, &stream, 2).await;
    println!("cluster node behind a plain URL: second half ingested in {took:?}");
    app.stop().await;
    drop(cluster);
}

#[tokio::test]
async fn a_redis_out_of_memory_under_noeviction_neither_stalls_ingestion_nor_serves_a_stale_answer()
{
    // Any write that needs memory is refused with OOM; deletes still pass.
    let redis = OwnRedis::start_with(
        free_port(),
        &["--maxmemory", "1", "--maxmemory-policy", "noeviction"],
    )
    .await;
    let mut settings = test_settings(2);
    settings.redis.url = redis.url().into();
    let app = TestApp::spawn_with(settings).await;
    let stream = stream::generate(24, 400, 2, false);
    read_between_two_halves_then_check_every_answer(&app, &stream, 1).await;
    assert!(
        redis_cli(redis.port, &["SET", "probe", "1"]).contains("OOM"),
        "Redis refused writes all along"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_redis_still_loading_its_data_neither_stalls_ingestion_nor_serves_a_stale_answer() {
    // A snapshot of 200 000 keys, loaded 50 µs a key: Redis answers LOADING
    // to every command for about 10 s after its start.
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("wm-loading-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.display().to_string();
    let persisted = [
        "--dir",
        dir_arg.as_str(),
        "--save",
        "",
        "--dbfilename",
        "dump.rdb",
    ];
    let mut first = OwnRedis::start_with(
        port,
        &[&persisted[..], &["--enable-debug-command", "yes"]].concat(),
    )
    .await;
    assert_eq!(redis_cli(port, &["DEBUG", "POPULATE", "200000"]), "OK");
    let mut settings = test_settings(2);
    settings.redis.url = first.url().into();
    let app = TestApp::spawn_with(settings).await;
    let stream = stream::generate(25, 400, 2, false);
    let path = |(w, p): &(Uuid, Uuid)| stock_path(*w, *p);
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, values[..values.len() / 2].to_vec())
            .await;
    }
    app.wait_consumed().await;
    for pair in stream.expected_stock.keys() {
        app.get_json(&path(pair)).await;
        app.get_json(&path(pair)).await;
    }
    assert_eq!(redis_cli(port, &["SAVE"]), "OK");
    first.kill();
    let _loading = OwnRedis::start_with(
        port,
        &[&persisted[..], &["--key-load-delay", "50"]].concat(),
    )
    .await;
    assert!(
        redis_cli(port, &["GET", "any"]).contains("LOADING"),
        "Redis answers LOADING"
    );

    let started = Instant::now();
    for (partition, values) in (0..).zip(&stream.partitions) {
        app.produce(partition, values[values.len() / 2..].to_vec())
            .await;
    }
    app.wait_consumed().await;
    let took = started.elapsed();
    println!("Redis loading its data: second half ingested in {took:?}");
    assert!(
        redis_cli(port, &["GET", "any"]).contains("LOADING"),
        "the second half was ingested while Redis still loaded"
    );
    stream.assert_stock(&app.pool).await;
    for (pair, quantity) in &stream.expected_stock {
        assert_eq!(
            app.get_json(&path(pair)).await.1["quantity"],
            (*quantity).max(0)
        );
    }
    // Once loaded, the older entries are never served: every answer stays right.
    eventually(60, || async {
        (!redis_cli(port, &["PING"]).contains("LOADING"))
            .then_some(())
            .ok_or("Redis loaded its data")
    })
    .await;
    for (pair, quantity) in &stream.expected_stock {
        assert_eq!(
            app.get_json(&path(pair)).await.1["quantity"],
            (*quantity).max(0),
            "{pair:?} after the load"
        );
    }
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
