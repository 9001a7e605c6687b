//! A flood of distinct unknown movement ids: every one is answered 404
//! `not_found`, and Redis holds a bounded number of keys for them, each for
//! `redis.absent_ttl_secs` at most, however many come (docs/SPEC.md section
//! 8). A Redis of the test's own, so that its key count is this test's.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use uuid::Uuid;

use crate::support::{
    helpers::{Ev, TestApp, free_port, test_settings},
    redis::{OwnRedis, redis_cli},
};

fn keys(port: u16) -> u64 {
    redis_cli(port, &["DBSIZE"]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_ids_is_answered_404_and_holds_few_redis_keys() {
    let redis = OwnRedis::start(free_port()).await;
    let mut settings = test_settings(1);
    settings.redis.url = redis.url().into();
    settings.redis.absent_fills_per_sec = 50;
    settings.redis.absent_ttl_secs = 5;
    let app = Arc::new(TestApp::spawn_with(settings.clone()).await);
    // A known movement, cached like any answer.
    let known = Uuid::new_v4();
    app.produce(
        0,
        vec![Ev::departure(known, Uuid::new_v4(), Uuid::new_v4(), 3).bytes()],
    )
    .await;
    app.wait_consumed().await;
    for _ in 0..2 {
        assert_eq!(
            app.get_json(&format!("/api/movements/{known}")).await.0,
            200
        );
    }
    let before = keys(redis.port);

    let (answered, wrong) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (app, answered, wrong) =
                (Arc::clone(&app), Arc::clone(&answered), Arc::clone(&wrong));
            tokio::spawn(async move {
                for _ in 0..500 {
                    let id = Uuid::new_v4();
                    let (status, body) = app.get_json(&format!("/api/movements/{id}")).await;
                    if status != 404 || body["error"] != "not_found" {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let took = started.elapsed();
    let added = keys(redis.port).saturating_sub(before);
    let (answered, wrong) = (
        answered.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
    );
    // At most absent_fills_per_sec in each of the service's one-second
    // windows the flood touched (a span of t seconds touches at most
    // floor(t) + 2 of them, since the windows start with the service), and
    // the leases of the 8 clients' requests in flight.
    let bound = 50 * (took.as_secs() + 2) + 10;
    println!(
        "{answered} distinct unknown ids in {took:?}: {wrong} wrong answers, {added} Redis keys added \
         (bound {bound})"
    );
    assert_eq!(wrong, 0, "every unknown id answers 404 not_found");
    assert_eq!(answered, 4_000);
    assert!(added <= bound, "{added} keys for {answered} unknown ids");
    assert!(added > 0, "some 404s are cached");
    // Every cached 404 goes within absent_ttl_secs; the known movement stays.
    let epoch = app.cache_epoch().await;
    let pattern = format!("wm:{epoch}:movement:*");
    let cached = redis_cli(redis.port, &["--scan", "--pattern", &pattern]);
    let mut absent = 0;
    for key in cached.lines().filter(|k| !k.ends_with(&known.to_string())) {
        let ttl: i64 = redis_cli(redis.port, &["TTL", key]).parse().unwrap();
        assert!(ttl <= 5, "{key} lives {ttl} s");
        absent += 1;
    }
    assert!(absent > 0);
    let (status, body) = app.get_json(&format!("/api/movements/{known}")).await;
    assert_eq!(
        (status, &body["quantity_sent"]),
        (200, &serde_json::json!(3))
    );
    Arc::try_unwrap(app)
        .ok()
        .expect("clients done")
        .stop()
        .await;
}
