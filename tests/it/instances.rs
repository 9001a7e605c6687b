//! Several instances side by side: each partition is consumed by one instance
//! at a time (the holder of its lock), partitions are shared fairly when an
//! instance joins, and those of an instance that stops, or dies, are taken
//! over by another (how fast: tests/it/failover.rs).

use warehouse_monitor::kafka;

use crate::support::{
    helpers::{self, TestApp, eventually, test_settings},
    stream::{self, Stream},
};

/// Produces one half (`part` 0 or 1) of every partition's records.
async fn produce_half(app: &TestApp, stream: &Stream, part: usize) {
    for (p, values) in (0..).zip(&stream.partitions) {
        let mid = values.len() / 2;
        let half = if part == 0 {
            &values[..mid]
        } else {
            &values[mid..]
        };
        app.produce(p, half.to_vec()).await;
    }
}

#[tokio::test]
async fn a_joining_instance_gets_a_fair_share_and_a_stopped_ones_partitions_are_taken_over() {
    let settings = test_settings(3);
    let first = TestApp::spawn_with(settings.clone()).await;
    eventually(5, || async {
        (first.owned().len() == 3)
            .then_some(())
            .ok_or("the first instance holds every partition")
    })
    .await;
    let second = TestApp::spawn_with(settings).await;
    // ceil(3 / 2) = 2 for the first; the one it hands back goes to the newcomer.
    eventually(5, || async {
        let (a, b) = (first.owned(), second.owned());
        (a.len() == 2 && b.len() == 1)
            .then_some(())
            .ok_or_else(|| format!("the partitions are shared 2 + 1: {a:?} and {b:?}"))
    })
    .await;
    let (a, b) = (first.owned(), second.owned());
    assert!(a.iter().all(|p| !b.contains(p)), "{a:?} and {b:?} overlap");

    let stream = stream::generate(5, 600, 3, false);
    produce_half(&first, &stream, 0).await;
    first.wait_consumed().await;
    let by_second = second
        .statuses
        .snapshot()
        .iter()
        .filter(|s| s.committed().is_some())
        .count();
    assert!(by_second >= 1, "the second instance consumed its partition");

    first.stop_keeping_data().await; // releases its partitions and closes its session
    eventually(5, || async {
        (second.owned().len() == 3)
            .then_some(())
            .ok_or("the second instance holds every partition")
    })
    .await;
    produce_half(&second, &stream, 1).await;
    helpers::wait_consumed(&second.pool, &second.settings.kafka.topic, &second.producer).await;
    stream.assert_stock(&second.pool).await;
    second.stop().await;
}

#[tokio::test]
async fn a_killed_instances_partitions_are_taken_over() {
    let settings = test_settings(3);
    let client = kafka::connect(&settings.kafka).await.unwrap();
    kafka::ensure_topic(&client, &settings.kafka).await.unwrap();
    let _migrated = warehouse_monitor::app::startup::migrate(&settings)
        .await
        .unwrap();
    let pool = warehouse_monitor::store::pool(&settings.postgres).unwrap();

    // The first instance is a separate process, so that it can be SIGKILLed.
    let mut first = helpers::ServiceProcess::start(&settings);
    let topic = settings.kafka.topic.clone();
    let held = || async {
        let c = pool.get().await.unwrap();
        c.query_one(
            "SELECT count(*) FROM partition_owners WHERE topic = $1",
            &[&topic],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    eventually(5, || async {
        let held = held().await;
        (held == 3)
            .then_some(())
            .ok_or_else(|| format!("the first instance holds every partition: {held} of 3"))
    })
    .await;
    let second = TestApp::spawn_with(settings).await;

    eventually(5, || async {
        (second.owned().len() == 1)
            .then_some(())
            .ok_or("the newcomer gets its share")
    })
    .await;

    let stream = stream::generate(6, 600, 3, false);
    produce_half(&second, &stream, 0).await;
    second.wait_consumed().await;

    first.kill();
    produce_half(&second, &stream, 1).await;
    second.wait_consumed().await;
    assert_eq!(
        second.owned().len(),
        3,
        "the second instance took every partition over"
    );
    stream.assert_stock(&second.pool).await;
    second.stop().await;
}
