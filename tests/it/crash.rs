//! Crash safety: a consumer killed with SIGKILL in the middle of a stream and
//! started again leaves exactly the tables one uninterrupted run leaves.

use std::time::Duration;

use deadpool_postgres::Pool;
use warehouse_monitor::{kafka, store};

use crate::support::{
    helpers::{self, Patience, Producer, TestApp, committed_offsets, eventually, test_settings},
    stream,
};

#[tokio::test]
async fn killed_and_restarted_consumer_leaves_the_same_tables_as_one_run() {
    let stream = stream::generate(11, 2_500, 3, true);
    let mut crash = test_settings(3);
    crash.batch.size = 20;
    crash.batch.wait_ms = 20;

    // The topic and its records exist before either consumer starts.
    let client = kafka::connect(&crash.kafka).await.unwrap();
    kafka::ensure_topic(&client, &crash.kafka).await.unwrap();
    let producer = Producer::connect(&crash).await;
    for (p, values) in (0..).zip(&stream.partitions) {
        let mut values = values.clone();
        values.insert(values.len() / 2, b"\xff not json".to_vec());
        producer.produce(p, values).await;
    }
    let total = producer.total();

    // Crashing run: SIGKILL twice in the middle, then run to the end.
    store::ensure_database(crash.postgres.url.expose())
        .await
        .unwrap();
    let _migrated = warehouse_monitor::app::startup::migrate(&crash)
        .await
        .unwrap();
    let pool = warehouse_monitor::store::pool(&crash.postgres).unwrap();
    for round in 1..=2 {
        let mut child = helpers::ServiceProcess::start(&crash);
        let progress = wait_for_progress(&pool, &crash.kafka.topic, round * total / 4).await;
        child.kill();
        assert!(
            progress < total,
            "round {round}: the whole stream was consumed before the kill"
        );
    }
    let mut child = helpers::ServiceProcess::start(&crash);
    helpers::wait_consumed(&pool, &crash.kafka.topic, &producer).await;
    child.kill();

    // Reference run: the same topic, its own database, never interrupted.
    let mut reference = test_settings(3);
    reference.kafka.topic = crash.kafka.topic.clone();
    let app = TestApp::spawn_with(reference).await;
    helpers::wait_consumed(&app.pool, &app.settings.kafka.topic, &producer).await;
    let expected = helpers::dump(&app.pool).await;
    app.stop().await;

    let actual = helpers::dump(&pool).await;
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(&expected) {
        if a != e {
            let diff = a.lines().zip(e.lines()).find(|(x, y)| x != y);
            panic!(
                "tables differ: {}\n{} vs {}\nfirst difference: {diff:?}",
                head(a),
                a.len(),
                e.len()
            );
        }
    }
    pool.close();
    store::drop_database(crash.postgres.url.expose())
        .await
        .unwrap();
    assert!(
        expected[4].starts_with("3 rows"),
        "three malformed records rejected"
    );
}

fn head(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Waits until at least `at_least` records are committed; returns the count.
/// Checked every 5 ms, so that the kill comes soon after.
async fn wait_for_progress(pool: &Pool, topic: &str, at_least: i64) -> i64 {
    let patience = Patience::secs(60).every(Duration::from_millis(5));
    eventually(patience, || async {
        let committed: i64 = committed_offsets(pool, topic).await.values().sum();
        if committed >= at_least {
            Ok(committed)
        } else {
            Err(format!("progress to {at_least}: {committed}"))
        }
    })
    .await
}
