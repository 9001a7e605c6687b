//! PostgreSQL crashing under load: a server of the test's own is stopped with
//! `pg_ctl -m immediate` (no checkpoint, connections cut) in the middle of a
//! stream and started again; the consumer recovers by itself and nothing is
//! lost or counted twice.

use std::time::Duration;

use crate::support::{
    helpers::{Ev, Patience, TestApp, committed_offsets, eventually, free_port, test_settings},
    postgres::OwnPostgres,
    stream,
};

#[tokio::test]
async fn postgres_crash_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let port = free_port();
    let pg = OwnPostgres::init(port);
    pg.start();
    let mut settings = test_settings(3);
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/wm_outage").into();
    settings.batch.size = 50;
    let app = TestApp::spawn_with(settings).await;

    let stream = stream::generate(21, 2_000, 3, true);
    let total: usize = stream.partitions.iter().map(Vec::len).sum();
    for (p, values) in (0..).zip(&stream.partitions) {
        app.produce(p, values.clone()).await;
    }
    // Crash once some, but not all, of the stream is committed (checked
    // every 5 ms, so that the crash comes soon after the first commit).
    let patience = Patience::secs(10).every(Duration::from_millis(5));
    let committed = eventually(patience, || async {
        let committed = committed_offsets(&app.pool, &app.settings.kafka.topic)
            .await
            .values()
            .sum::<i64>();
        (committed > 0).then_some(committed)
    })
    .await;
    pg.crash();
    assert!(
        usize::try_from(committed).unwrap() < total,
        "the crash came after the whole stream"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(
        (status, body["database"].as_str()),
        (503, Some("down")),
        "{body}"
    );
    pg.start();

    app.wait_consumed().await;
    stream.assert_stock(&app.pool).await;
    let client = app.pool.get().await.unwrap();
    let report = warehouse_monitor::store::verify::stock(&client)
        .await
        .unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    drop(client);
    app.stop().await;
}

/// A hung PostgreSQL (every process SIGSTOPped: connections stay open, nothing
/// answers) makes reads answer 503 `unavailable` within the request timeout
/// instead of hanging, and readiness says the database is down.
#[tokio::test]
async fn a_hung_postgres_answers_503_within_the_request_timeout() {
    let port = free_port();
    let pg = OwnPostgres::init(port);
    pg.start();
    let mut settings = test_settings(1);
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/wm_hung").into();
    let limit = settings.http.request_timeout();
    let app = TestApp::spawn_with(settings).await;
    let (m, wh, product) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    app.produce(0, vec![Ev::arrival(m, wh, product, 4).bytes()])
        .await;
    app.wait_consumed().await;

    pg.signal("STOP");
    let paths = [
        format!("/api/movements/{}", uuid::Uuid::new_v4()),
        format!(
            "/api/warehouses/{}/products/{product}",
            uuid::Uuid::new_v4()
        ),
    ];
    for path in &paths {
        let started = std::time::Instant::now();
        let (status, body) = app.get_json(path).await;
        let took = started.elapsed();
        pg.processes(); // still there, still stopped
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("unavailable")),
            "{path}: {body}"
        );
        assert!(
            took < limit + Duration::from_millis(500),
            "{path} took {took:?}"
        );
        println!("hung database: {path} answered {status} in {took:?} (limit {limit:?})");
    }
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(
        (status, body["database"].as_str()),
        (503, Some("down")),
        "{body}"
    );
    pg.signal("CONT");

    // Once it answers again, so does the API.
    let (status, body) = eventually(10, || async {
        let answer = app.get_json(&format!("/api/movements/{m}")).await;
        (answer.0 == 200).then_some(answer)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

/// A batch that needs more advisory locks than the server's lock table holds
/// (53200, out of shared memory) is split until its halves fit, instead of
/// failing forever: a server of the test's own with a tiny lock table.
#[tokio::test]
async fn a_batch_too_big_for_the_lock_table_is_split() {
    let port = free_port();
    let pg = OwnPostgres::init(port);
    // 10 slots per backend (about 40 backends with the workers): a few hundred
    // lock slots for the whole server, plus whatever spare shared memory it borrows.
    pg.start_with("-c max_locks_per_transaction=10 -c max_connections=20");
    let mut settings = test_settings(1);
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/wm_locks").into();
    settings.postgres.pool_size = 2;
    settings.postgres.api_pool_size = 1;
    settings.batch.size = 4000;
    settings.batch.wait_ms = 3000;
    let app = TestApp::spawn_with(settings).await;
    let (wh, product) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // 4 000 movements, in one batch (or a few, if the broker is slow): well
    // over the lock table even with the spare shared memory it may borrow.
    let values: Vec<Vec<u8>> = (0..4000)
        .map(|_| Ev::arrival(uuid::Uuid::new_v4(), wh, product, 1).bytes())
        .collect();
    app.produce(0, values).await;
    app.wait_consumed().await;
    assert_eq!(app.stock(wh, product).await, Some(4000));
    assert!(app.rejected().await.is_empty(), "nothing is quarantined");
    let m = crate::support::metrics::scrape(&app).await;
    let split = m.value(
        "wm_batch_failures_total",
        &[("step", "lock"), ("class", "resources")],
    );
    assert!(split >= 1.0, "the whole batch did not fit: {split}");
    app.stop().await;
}
