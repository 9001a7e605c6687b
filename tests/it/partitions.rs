//! Partitions added to the topic while the service runs are consumed within
//! one metadata refresh, without a restart.
//!
//! Tansu 0.6 has no CreatePartitions request (nor does librdkafka's mock
//! cluster), so the test grows the topic the only way the local broker allows:
//! it deletes the topic while it is still empty and creates it again with three
//! partitions. The service sees what it would see after `kafka-topics --alter
//! --partitions 3` on Apache Kafka: the same topic, more partitions.
//!
//! The service must not be fetching the topic while it is deleted: Tansu
//! answers such a fetch with a leader-change tag for a topic without an id,
//! on which librdkafka 2.12 crashes (a lookup of a null topic name). So the
//! test holds partition 0's ownership lock while it regrows the topic: the
//! running service stands by for it, and takes it once the lock is released.

use std::time::Duration;

use crate::support::{
    helpers::{Producer, TestApp, eventually, test_settings, wait_consumed},
    stream,
};

#[tokio::test]
async fn partitions_added_while_running_are_consumed() {
    let mut settings = test_settings(1);
    settings.kafka.metadata_refresh_ms = 300;
    let (store, _) = warehouse_monitor::app::startup::migrate(&settings)
        .await
        .unwrap();
    let holder = warehouse_monitor::store::pool(&settings.postgres)
        .unwrap()
        .get()
        .await
        .unwrap();
    let key: i32 = holder
        .query_one(
            include_str!("../../sql/queries/register_topic.sql"),
            &[&settings.kafka.topic],
        )
        .await
        .unwrap()
        .get(0);
    holder
        .execute("SELECT pg_advisory_lock($1::int4, 0)", &[&key])
        .await
        .unwrap();
    let app = TestApp::spawn_with(settings.clone()).await;
    assert_eq!(app.statuses.len(), 1);

    let client = warehouse_monitor::kafka::connect(&settings.kafka)
        .await
        .unwrap();
    let topic = &settings.kafka.topic;
    client.delete_topic(topic).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.create_topic(topic, 3, 1).await.unwrap();

    eventually(10, || async { (app.statuses.len() == 3).then_some(()) }).await;
    holder
        .execute("SELECT pg_advisory_unlock($1::int4, 0)", &[&key])
        .await
        .unwrap();
    drop(holder);
    store.close();
    // A new client: the test's producer cached the one-partition metadata.
    let producer = Producer::connect(&settings).await;
    let stream = stream::generate(51, 300, 3, true);
    for (p, values) in (0..).zip(&stream.partitions) {
        producer.produce(p, values.clone()).await;
    }
    wait_consumed(&app.pool, topic, &producer).await;
    stream.assert_stock(&app.pool).await;
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(body["partitions"].as_array().unwrap().len(), 3, "{body}");
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}
