//! Where consumption resumes: inside a producer's record batch (Tansu answers
//! such a fetch with the next batch), and from an offset the broker's log no
//! longer has, under each policy.

use uuid::Uuid;
use warehouse_monitor::{config::OffsetReset, kafka};

use crate::support::helpers::{Ev, TestApp, eventually, test_settings};

/// Creates the topic, produces `n` arrivals in one producer batch, and stores
/// `offset` as partition 0's committed offset, before any consumer runs.
async fn prepare(settings: &warehouse_monitor::config::Settings, n: usize, offset: i64) -> Vec<Ev> {
    let client = kafka::connect(&settings.kafka).await.unwrap();
    kafka::ensure_topic(&client, &settings.kafka).await.unwrap();
    let producer = crate::support::helpers::Producer::connect(settings).await;
    let events: Vec<Ev> = (0..n)
        .map(|_| Ev::arrival(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), 1))
        .collect();
    producer
        .produce(0, events.iter().map(Ev::bytes).collect())
        .await;
    let _migrated = warehouse_monitor::app::startup::migrate(settings)
        .await
        .unwrap();
    let pool = warehouse_monitor::store::pool(&settings.postgres).unwrap();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES ($1, 0, $2)",
            &[&settings.kafka.topic, &offset],
        )
        .await
        .unwrap();
    events
}

#[tokio::test]
async fn resuming_inside_a_producer_batch_loses_nothing() {
    let settings = test_settings(1);
    let events = prepare(&settings, 300, 120).await;
    let app = TestApp::spawn_with(settings).await;
    eventually(10, || async {
        let committed = app.statuses.get(0).unwrap().committed();
        (committed == Some(300))
            .then_some(())
            .ok_or_else(|| format!("offset 300 is committed: {committed:?}"))
    })
    .await;
    // Exactly the records from offset 120 on were applied, none skipped.
    assert_eq!(app.count("movement_events").await, 180);
    for ev in &events[120..] {
        assert_eq!(app.stock(ev.warehouse_id, ev.product_id).await, Some(1));
    }
    assert_eq!(
        app.stock(events[119].warehouse_id, events[119].product_id)
            .await,
        None
    );
    app.stop().await;
}

#[tokio::test]
async fn offset_beyond_the_log_resumes_from_the_earliest_offset_and_is_counted() {
    let settings = test_settings(1);
    prepare(&settings, 10, 5_000).await;
    let app = TestApp::spawn_with(settings).await;
    eventually(10, || async {
        let committed = app.statuses.get(0).unwrap().committed();
        (committed == Some(10))
            .then_some(())
            .ok_or_else(|| format!("the log is re-read to offset 10: {committed:?}"))
    })
    .await;
    assert_eq!(app.count("movement_events").await, 10);
    let metrics = app.metrics.render();
    assert!(
        metrics.contains("wm_offset_resets_total{partition=\"0\"} 1"),
        "reset counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("offset_resets"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    app.stop().await;
}

#[tokio::test]
async fn offset_beyond_the_log_stops_the_partition_under_the_fail_policy() {
    let mut settings = test_settings(1);
    settings.kafka.offset_out_of_range = OffsetReset::Fail;
    prepare(&settings, 10, 5_000).await;
    let app = TestApp::spawn_with(settings).await;
    eventually(10, || async {
        let status = app.statuses.get(0).unwrap();
        status
            .last_error()
            .map(drop)
            .ok_or("the partition reports its error")
    })
    .await;
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    let error = body["partitions"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("outside the broker's log"), "{error}");
    assert_eq!(app.count("movement_events").await, 0);
    assert_eq!(
        app.statuses.get(0).unwrap().committed(),
        Some(5_000),
        "the stored offset is left alone"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_topic_deleted_and_created_again_under_its_name_is_read_from_its_start() {
    let settings = test_settings(1);
    let app = TestApp::spawn_with(settings.clone()).await;
    let old: Vec<Ev> = (0..20)
        .map(|_| Ev::arrival(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), 1))
        .collect();
    app.produce(0, old.iter().map(Ev::bytes).collect()).await;
    app.wait_consumed().await;
    assert_eq!(app.statuses.get(0).unwrap().committed(), Some(20));

    // The same name, a new log: its offsets start again at 0, below ours.
    // Deleted while the service is stopped: Tansu answers a fetch of a
    // deleted topic with a leader-change tag for a topic without an id, on
    // which librdkafka 2.12 crashes (SPEC section 8).
    app.stop_keeping_data().await;
    let client = kafka::connect(&settings.kafka).await.unwrap();
    client.delete_topic(&settings.kafka.topic).await.unwrap();
    eventually(30, || async {
        client
            .create_topic(&settings.kafka.topic, 1, 1)
            .await
            .map_err(|e| format!("topic created again: {e}"))
    })
    .await;
    let new: Vec<Ev> = (0..3)
        .map(|_| Ev::arrival(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), 5))
        .collect();
    let producer = kafka::producer(&settings.kafka, kafka::Codec::None).unwrap();
    let records: Vec<kafka::Outgoing> = new
        .iter()
        .map(|ev| kafka::Outgoing {
            value: Some(ev.bytes()),
            ..kafka::Outgoing::default()
        })
        .collect();
    let offsets = kafka::send_all(&producer, &settings.kafka.topic, &records)
        .await
        .unwrap();
    assert_eq!(offsets, vec![0, 1, 2], "a new log");
    let app = TestApp::spawn_with(settings.clone()).await;

    // Not skipped: the stored offset 20 is past the new log's end, so the
    // out-of-range policy (earliest) applies and the new records are read.
    for ev in &new {
        let (w, p) = (ev.warehouse_id, ev.product_id);
        eventually(30, || async {
            let stock = app.stock(w, p).await;
            (stock == Some(5))
                .then_some(())
                .ok_or_else(|| format!("the new log's event is applied: {stock:?}"))
        })
        .await;
    }
    eventually(10, || async {
        let committed = app.statuses.get(0).unwrap().committed();
        (committed == Some(3))
            .then_some(())
            .ok_or_else(|| format!("offset 3 of the new log committed: {committed:?}"))
    })
    .await;
    app.stop().await;
}
