//! The cache outbox stays small through a long Redis outage: a key waits
//! once however many batches change its row, and past `outbox.max_keys` one
//! mark stands for every key. Redis is down (a server of the test's own,
//! killed) while a stream is ingested; then the outbox's rows and bytes are
//! bounded, its WAL is compared with the same stream ingested with Redis up
//! (on a PostgreSQL of the test's own, so that no other test's WAL counts),
//! and once Redis is back (empty, on the same port) the mark is delivered in
//! one step, caching resumes within seconds, and every answer is right.
//!
//! `make test` ingests about 20 000 events with `outbox.max_keys` 2 000; the
//! figures for 200 000 events with the default 10 000 come from the same test
//! run by hand: `WM_OUTBOX_BOUND_FULL=1 cargo test --features faults --test
//! it -- outbox_bound --nocapture`.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::support::{
    helpers::{TestApp, eventually, free_port, stock_path, test_settings},
    postgres::OwnPostgres,
    redis::{OwnRedis, cache_hits},
    stream::{self, Stream},
};

/// The WAL written so far by the server, in bytes.
async fn wal(pool: &Pool) -> i64 {
    let client = pool.get().await.unwrap();
    let sql = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint";
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Announcements and marks, keys waiting, and the bytes of both tables.
async fn outbox_size(pool: &Pool) -> (i64, i64, i64, i64) {
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM cache_outbox WHERE NOT mark),
                    (SELECT count(*) FROM cache_outbox WHERE mark),
                    (SELECT count(*) FROM cache_outbox_keys),
                    pg_total_relation_size('cache_outbox')
                      + pg_total_relation_size('cache_outbox_keys')",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// Every stock pair of `stream` answers what the stream adds up to.
async fn all_answers_right(app: &TestApp, stream: &Stream) {
    for ((w, p), expected) in &stream.expected_stock {
        let (status, body) = app.get_json(&stock_path(*w, *p)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["quantity"], (*expected).max(0), "{w}/{p}");
    }
}

/// Ingests `stream` on a fresh database of `pg_port`'s server with Redis
/// at `redis`; with `outage`, Redis is killed first (and started again, empty,
/// once the stream is committed). Returns the WAL the ingest wrote.
async fn ingest(
    pg_port: u16,
    redis: &mut OwnRedis,
    stream: &Stream,
    max_keys: i64,
    outage: bool,
) -> i64 {
    let mut settings = test_settings(3);
    let db = Uuid::new_v4().simple().to_string();
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{pg_port}/wm_{db}").into();
    settings.redis.url = redis.url().into();
    settings.outbox.max_keys = max_keys;
    let app = TestApp::spawn_with(settings).await;
    eventually(10, || async {
        let (_, marks, _, _) = outbox_size(&app.pool).await;
        (marks == 0).then_some(()).ok_or("the first epoch began")
    })
    .await;
    let label = if outage { "Redis down" } else { "Redis up" };
    if outage {
        redis.kill();
    }
    let wal_before = wal(&app.pool).await;
    let started = Instant::now();
    for (p, values) in (0..).zip(&stream.partitions) {
        app.produce(p, values.clone()).await;
    }
    app.wait_consumed().await;
    let took = started.elapsed();
    let written = wal(&app.pool).await - wal_before;
    let (announcements, marks, keys, bytes) = outbox_size(&app.pool).await;
    println!(
        "{label}: {} events in {:.1} s; WAL {:.1} MiB; outbox: {announcements} announcements, \
         {marks} mark, {keys} keys, {bytes} bytes",
        stream.events,
        took.as_secs_f64(),
        mib(written)
    );
    stream.assert_stock(&app.pool).await;
    if outage {
        assert!(keys <= max_keys + 3 * 2_000, "{keys} keys wait");
        assert_eq!(marks, 1, "past {max_keys} keys, the mark stands for them");
        assert!(announcements <= 3, "{announcements} announcements");
        assert!(bytes < 8 << 20, "the outbox holds {bytes} bytes");

        // Redis is back, empty: one delivery, and caching resumes.
        let back = Instant::now();
        *redis = OwnRedis::start(redis.port).await;
        let ((w, p), expected) = stream.expected_stock.iter().next().unwrap();
        let path = stock_path(*w, *p);
        let hits = cache_hits(&app).await;
        let off = eventually(30, || async {
            assert_eq!(app.get_json(&path).await.1["quantity"], (*expected).max(0));
            (cache_hits(&app).await > hits).then(|| back.elapsed())
        })
        .await;
        let (announcements, marks, keys, _) = outbox_size(&app.pool).await;
        println!(
            "Redis back: the cache served again {:.2} s after Redis started; outbox then: \
             {announcements} announcements, {marks} marks, {keys} keys",
            off.as_secs_f64()
        );
        assert_eq!((marks, keys), (0, 0), "delivered in one step");
        assert!(
            off < Duration::from_secs(10),
            "the cache stayed off {off:?}"
        );
    }
    all_answers_right(&app, stream).await;
    all_answers_right(&app, stream).await; // again, from the cache
    app.stop().await;
    written
}

fn mib(bytes: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let bytes = bytes as f64;
    bytes / f64::from(1 << 20)
}

async fn outbox_stays_bounded(movements: usize, max_keys: i64) {
    let pg_port = free_port();
    let pg = OwnPostgres::init(pg_port);
    pg.start();
    let mut redis = OwnRedis::start(free_port()).await;
    let stream = stream::generate(7, movements, 3, true);
    let reference = ingest(pg_port, &mut redis, &stream, max_keys, false).await;
    let outage = ingest(pg_port, &mut redis, &stream, max_keys, true).await;
    println!(
        "WAL of {} events: {:.1} MiB with Redis up, {:.1} MiB with Redis down \
         ({:+.1} MiB for the outbox and its announcements)",
        stream.events,
        mib(reference),
        mib(outage),
        mib(outage - reference)
    );
    assert!(
        outage - reference < 32 << 20,
        "the outage wrote {} more bytes of WAL",
        outage - reference
    );
}

/// About 20 000 events with `outbox.max_keys` 2 000; with
/// `WM_OUTBOX_BOUND_FULL=1`, the 200 000 events with the default 10 000 whose
/// figures the docs quote (about two minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_redis_outage_keeps_the_outbox_bounded() {
    if std::env::var_os("WM_OUTBOX_BOUND_FULL").is_some() {
        outbox_stays_bounded(52_000, 10_000).await;
    } else {
        outbox_stays_bounded(5_200, 2_000).await;
    }
}
