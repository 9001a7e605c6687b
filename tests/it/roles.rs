//! Roles: a consumer-only instance and an API-only instance, on the same
//! database and topic, together do what one `all` instance does. The API
//! instance never takes a partition; the consumer instance serves health and
//! metrics but not the queries.

use uuid::Uuid;
use warehouse_monitor::config::Role;

use crate::support::helpers::{Ev, TestApp, stock_path, test_settings};

#[tokio::test]
async fn a_consumer_instance_and_an_api_instance_split_the_work() {
    let mut settings = test_settings(2);
    settings.role = Role::Consumer;
    let consumer = TestApp::spawn_with(settings.clone()).await;
    settings.role = Role::Api;
    let api = TestApp::spawn_with(settings).await;

    let (m, from, to, product) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    consumer
        .produce(0, vec![Ev::departure(m, from, product, 7).bytes()])
        .await;
    consumer
        .produce(1, vec![Ev::arrival(m, to, product, 7).bytes()])
        .await;
    consumer.wait_consumed().await;

    // The API instance answers from what the consumer instance committed.
    let (status, body) = api.get_json(&format!("/api/movements/{m}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "delivered", "{body}");
    let (status, body) = api.get_json(&stock_path(to, product)).await;
    assert_eq!(
        (status, body["quantity"].as_i64()),
        (200, Some(7)),
        "{body}"
    );

    // Only the consumer holds partitions; both are ready.
    let (status, body) = consumer.get_json("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let owned: Vec<bool> = body["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["owned"] == true)
        .collect();
    assert_eq!(owned, vec![true, true], "{body}");
    let (status, body) = api.get_json("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partitions"], serde_json::json!([]), "{body}");
    let owned = api.count("partition_owners").await;
    assert_eq!(owned, 2, "one owner per partition, the consumer");
    assert!(api.statuses.snapshot().iter().all(|s| !s.is_owned()));

    // The consumer instance does not serve queries, but health and metrics.
    let (status, body) = consumer.get_json(&format!("/api/movements/{m}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let metrics = consumer
        .http
        .get(consumer.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let (status, _) = consumer.get_json("/health/live").await;
    assert_eq!(status, 200);

    api.stop_keeping_data().await;
    consumer.stop().await;
}
