//! The cache is never stale after a commit's invalidation, under concurrent
//! reads, and Redis going away (paused, or killed) never breaks answers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use uuid::Uuid;
use warehouse_monitor::cache::{Epoch, Key};

use crate::support::{
    helpers::{Ev, TestApp, eventually, free_port, stock_path, test_settings},
    redis::RawRedis,
    redis::{OwnRedis, cache_hits, trusted_cache},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_an_invalidation_returns_an_older_value() {
    let app = Arc::new(TestApp::spawn(1).await);
    let (warehouse, product, movement, sender) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    // The lowest value a read that starts now may return.
    let stock_floor = Arc::new(AtomicI64::new(0));
    let lines_floor = Arc::new(AtomicI64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();

    let mut readers = Vec::new();
    for i in 0..6 {
        let (app, stop, reads) = (Arc::clone(&app), stop.clone(), Arc::clone(&reads));
        let (stock_floor, lines_floor) = (Arc::clone(&stock_floor), Arc::clone(&lines_floor));
        readers.push(tokio::spawn(async move {
            let mut violations = Vec::new();
            while !stop.is_cancelled() {
                if i % 2 == 0 {
                    let floor = stock_floor.load(Ordering::SeqCst);
                    let (_, body) = app.get_json(&stock_path(warehouse, product)).await;
                    let seen = body["quantity"].as_i64().unwrap();
                    if seen < floor {
                        violations.push(format!("stock {seen} < {floor}"));
                    }
                } else {
                    let floor = lines_floor.load(Ordering::SeqCst);
                    let (status, body) = app.get_json(&format!("/api/movements/{movement}")).await;
                    let seen = if status == 200 {
                        i64::try_from(body["products"].as_array().unwrap().len()).unwrap()
                    } else {
                        0
                    };
                    if seen < floor {
                        violations.push(format!("movement lines {seen} < {floor}"));
                    }
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            violations
        }));
    }

    // 30 batches; each adds 1 to the stock and one product line to the movement.
    for k in 1..=30_i64 {
        app.produce(
            0,
            vec![
                Ev::arrival(Uuid::new_v4(), warehouse, product, 1).bytes(),
                Ev::departure(movement, sender, Uuid::new_v4(), 1).bytes(),
            ],
        )
        .await;
        app.wait_consumed().await;
        stock_floor.store(k, Ordering::SeqCst);
        lines_floor.store(k, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let mut violations = Vec::new();
    for r in readers {
        violations.extend(r.await.unwrap());
    }
    let hits = cache_hits(&app).await;
    let total = reads.load(Ordering::Relaxed);
    assert!(
        violations.is_empty(),
        "{} stale reads of {total}: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    assert!(total > 300, "readers made only {total} reads");
    assert!(hits > 0.0, "the cache was never hit ({total} reads)");
    Arc::try_unwrap(app)
        .ok()
        .expect("readers done")
        .stop()
        .await;
}

#[tokio::test]
async fn answers_stay_correct_while_redis_is_paused_or_killed_and_caching_resumes() {
    let mut redis = OwnRedis::start(free_port()).await;
    let mut settings = test_settings(1);
    settings.redis.url = redis.url().into();
    let app = TestApp::spawn_with(settings).await;
    let (w, p) = (Uuid::new_v4(), Uuid::new_v4());
    let quantity = |body: serde_json::Value| body["quantity"].as_i64().unwrap();

    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), w, p, 10).bytes()])
        .await;
    app.wait_consumed().await;
    assert_eq!(quantity(app.get_json(&stock_path(w, p)).await.1), 10);
    assert_eq!(quantity(app.get_json(&stock_path(w, p)).await.1), 10);
    let hits_before = cache_hits(&app).await;
    assert!(hits_before >= 1.0, "second read is a hit");

    // Redis unreachable but keeping its (now stale) data: reads bypass it and
    // the consumer keeps committing.
    redis.signal("-STOP");
    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), w, p, 5).bytes()])
        .await;
    app.wait_consumed().await;
    assert!(
        app.count("cache_outbox_keys").await >= 1,
        "the unacknowledged invalidation waits in the outbox"
    );
    assert_eq!(quantity(app.get_json(&stock_path(w, p)).await.1), 15);
    let (status, _) = app.get_json("/health/ready").await;
    assert_eq!(status, 200, "Redis does not decide readiness");

    // Back: the owed invalidation is delivered before the cache is read again,
    // so the stale 10 never comes back.
    redis.signal("-CONT");
    // A loop, not `eventually`: every read for a second must be 15, not just one.
    for _ in 0..50 {
        assert_eq!(quantity(app.get_json(&stock_path(w, p)).await.1), 15);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cache_hits(&app).await > hits_before,
        "caching resumed after the pause"
    );
    assert_eq!(
        app.count("cache_outbox").await + app.count("cache_outbox_keys").await,
        0,
        "the outbox is delivered"
    );

    // Killed outright, then restarted empty on the same port.
    redis.kill();
    app.produce(0, vec![Ev::departure(Uuid::new_v4(), w, p, 3).bytes()])
        .await;
    app.wait_consumed().await;
    assert_eq!(quantity(app.get_json(&stock_path(w, p)).await.1), 12);
    let _redis = OwnRedis::start(redis.port).await;
    let hits_down = cache_hits(&app).await;
    // Every answer until then is right too.
    eventually(5, || async {
        assert_eq!(quantity(app.get_json(&stock_path(w, p)).await.1), 12);
        (cache_hits(&app).await > hits_down)
            .then_some(())
            .ok_or("caching resumes after Redis came back, without a restart")
    })
    .await;
    app.stop().await;
}

/// The races the leases close, replayed step by step on the real Redis: a
/// reader that took its lease before a batch's delete cannot store what it
/// read, and only one reader at a time fills a key.
#[tokio::test]
async fn a_fill_lands_only_over_its_own_untouched_lease() {
    let settings = test_settings(1);
    let epoch = Epoch::random();
    let (cache, _) = trusted_cache(&settings.redis, epoch).await;
    let key = Key::Stock {
        warehouse_id: Uuid::new_v4(),
        product_id: Uuid::new_v4(),
    };
    let raw = key.in_epoch(epoch);
    // Cached values are JSON text; `get_json` checks that they parse.
    let (old, new) = ("\"old\"", "\"new\"");

    // Reader A misses, takes the lease and reads version 1 ("old") from
    // PostgreSQL; reader B misses too and gets no lease.
    let a = cache.claim(key).await.expect("a lease on an absent key");
    assert!(cache.claim(key).await.is_none(), "one lease at a time");
    // Meanwhile a batch locks the row, writes version 2 and deletes the key
    // before its COMMIT: A's late fill must not land.
    assert!(
        cache.invalidate(epoch, vec![raw.clone()]).await,
        "acknowledged"
    );
    cache.fill(a, 1, old).await;
    assert_eq!(
        RawRedis::connect(settings.redis.url.expose())
            .await
            .entry(key, epoch)
            .await,
        None,
        "the delete voided A's lease"
    );
    assert_eq!(cache.get_json(key).await, None);

    // Reader C takes a lease after the delete, reads version 2, fills it.
    let c = cache.claim(key).await.expect("a lease after the delete");
    cache.fill(c, 2, new).await;
    assert_eq!(cache.get_json(key).await.as_deref(), Some(new));
    assert!(cache.claim(key).await.is_none(), "no lease over a value");

    // A reader that gives its lease back leaves the key free for the next.
    assert!(cache.invalidate(epoch, vec![raw.clone()]).await);
    let d = cache.claim(key).await.expect("a lease");
    cache.release(d).await;
    let e = cache.claim(key).await.expect("the key is free again");
    // An entry that does not parse is never served as a hit.
    cache.fill(e, 4, "not json").await;
    assert_eq!(cache.get_json(key).await, None);

    // Without a permit the cache is not read at all, though the entry is there.
    assert!(cache.invalidate(epoch, vec![raw.clone()]).await);
    let f = cache.claim(key).await.expect("a lease");
    cache.fill(f, 5, new).await;
    cache.withdraw(1, epoch);
    assert_eq!(cache.get_json(key).await, None);
    assert!(
        cache.claim(key).await.is_none(),
        "no lease without a permit"
    );
    let entry = RawRedis::connect(settings.redis.url.expose())
        .await
        .entry(key, epoch)
        .await
        .expect("the entry stays in Redis");
    assert_eq!(entry, format!("5:{new}"));

    // A delete in an epoch whose marker Redis lost is not acknowledged, and
    // the epoch is not believed again.
    let lost = Epoch::random();
    assert!(
        !cache
            .invalidate(lost, vec![Key::Movement(Uuid::new_v4()).in_epoch(lost)])
            .await
    );
    assert!(cache.distrusts(lost) && !cache.distrusts(epoch));
    cache.quit().await;
}
