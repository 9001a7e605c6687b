//! The near cache (entries kept in the instance's memory, kept exact by
//! Redis' client tracking): hits come from memory, and once a write elsewhere
//! is acknowledged, no read serves what it replaced, even when the write comes
//! from another instance or the tracking connection is cut.

use std::{process::Command, time::Duration};

use uuid::Uuid;
use warehouse_monitor::{
    cache::{Cache, Epoch, Key},
    metrics::Metrics,
};

use crate::support::{
    helpers::{eventually, free_port, test_settings},
    metrics::parse_exposition,
    redis::{OwnRedis, trusted_cache as instance},
};

/// `wm_cache_near_hits_total` as the instance's metrics render it.
fn near_hits(metrics: &Metrics) -> f64 {
    parse_exposition(&metrics.render())
        .find("wm_cache_near_hits_total", &[])
        .map(|s| s.value)
        .sum()
}

/// Stores `payload` under `key` (of `epoch`) as a reader on `cache` would,
/// replacing whatever is there: a batch's delete, a lease, a fill.
/// (A cache whose tracking connection was just cut takes no lease until it
/// believes the epoch again: the lease is waited for.)
async fn store(cache: &Cache, epoch: Epoch, key: Key, version: i64, payload: &str) {
    assert!(cache.invalidate(epoch, vec![key.in_epoch(epoch)]).await);
    let patience = crate::support::helpers::Patience::secs(5).every(Duration::from_millis(5));
    let lease = eventually(patience, || cache.claim(key)).await;
    cache.fill(lease, version, payload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_come_from_memory_and_no_read_after_a_write_elsewhere_serves_the_old_value() {
    let settings = test_settings(1);
    let epoch = Epoch::random();
    let (writer, _) = instance(&settings.redis, epoch).await;
    let (reader, reader_metrics) = instance(&settings.redis, epoch).await;
    let key = Key::Stock {
        warehouse_id: Uuid::new_v4(),
        product_id: Uuid::new_v4(),
    };

    let rounds = 300_i64;
    for round in 1..=rounds {
        let value = format!("{{\"round\":{round}}}");
        // Another instance caches version `round`; the reader reads it from
        // Redis (filling its near cache), then from memory.
        store(&writer, epoch, key, 2 * round, &value).await;
        assert_eq!(reader.get_json(key).await.as_deref(), Some(value.as_str()));
        let hits = near_hits(&reader_metrics);
        assert_eq!(reader.get_json(key).await.as_deref(), Some(value.as_str()));
        let more = near_hits(&reader_metrics) - hits;
        assert!(
            (more - 1.0).abs() < 0.5,
            "round {round}: {more} hits from memory, not 1"
        );
        // A batch on the other instance deletes the key; from its
        // acknowledgement on, the reader must not serve the old value.
        assert!(writer.invalidate(epoch, vec![key.in_epoch(epoch)]).await);
        assert_eq!(
            reader.get_json(key).await,
            None,
            "round {round}: the value removed by an acknowledged delete was served"
        );
    }
    assert!(reader.near_entries() <= 1);
    reader.quit().await;
    writer.quit().await;
}

/// The ids of the near caches' connections, from `CLIENT LIST` of `port`.
fn near_connection_ids(port: u16) -> Vec<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CLIENT", "LIST"])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains("name=wm-near-cache"))
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tracking_connection_empties_the_near_cache_and_tracking_resumes() {
    let redis = OwnRedis::start(free_port()).await;
    let mut settings = test_settings(1).redis;
    settings.url = redis.url().into();
    let epoch = Epoch::random();
    let (writer, _) = instance(&settings, epoch).await;
    let (reader, metrics) = instance(&settings, epoch).await;
    let key = Key::Movement(Uuid::new_v4());

    store(&writer, epoch, key, 1, "\"one\"").await;
    assert_eq!(reader.get_json(key).await.as_deref(), Some("\"one\""));
    assert_eq!(reader.near_entries(), 1);

    // Cut the reader's tracking connection (the writer's is killed too:
    // both are named alike), then change the entry: the push for it is lost
    // with the connection, so the entry held in memory must go with it.
    // The connections of one look, once each: the clients reconnect at
    // once, and killing until none is listed could go on for ever.
    let ids = near_connection_ids(redis.port);
    assert!(!ids.is_empty(), "no tracking connection to cut");
    for id in ids {
        let _ = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "CLIENT", "KILL", "ID", &id])
            .output();
    }
    store(&writer, epoch, key, 2, "\"two\"").await;
    assert_eq!(
        reader.get_json(key).await.as_deref().unwrap_or("\"two\""),
        "\"two\"",
        "the entry of the cut connection was served"
    );
    let patience = crate::support::helpers::Patience::secs(5).every(Duration::from_millis(20));
    let hits = near_hits(&metrics);
    eventually(patience, || async {
        // Until the new connection believes the epoch, reads answer from
        // PostgreSQL (`None` here); never from the old entry.
        let seen = reader.get_json(key).await;
        assert_ne!(
            seen.as_deref(),
            Some("\"one\""),
            "the entry of the cut connection was served"
        );
        (seen.as_deref() == Some("\"two\"") && reader.near_is_up() && near_hits(&metrics) > hits)
            .then_some(())
            .ok_or("near hits resume on a new tracking connection")
    })
    .await;
    reader.quit().await;
    writer.quit().await;
}
