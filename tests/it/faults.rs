//! Tasks with owners: a panic in a partition's fetcher, pipeline or keeper
//! (injected through the test-only `[fault]` settings) restarts that
//! partition's pipeline with backoff, /health/ready reports it while it lasts,
//! and nothing is lost or counted twice. Fetches that keep failing leave the
//! lag and the stalled flag telling the truth.

use std::collections::HashMap;

use uuid::Uuid;
use warehouse_monitor::config::{FaultStage, Settings};

use crate::support::{
    helpers::{Ev, Producer, TestApp, eventually, test_settings, wait_committed},
    metrics::scrape,
    stream,
};

fn with_panic(stage: FaultStage, times: u32) -> Settings {
    let mut settings = test_settings(2);
    settings.fault.panic_in = Some(stage);
    settings.fault.panic_times = times;
    settings
}

/// Produces a stream, waits for it, checks the stock and the restart counter.
async fn survives(app: &TestApp, seed: u64) {
    let stream = stream::generate(seed, 200, 2, true);
    for (p, values) in (0..).zip(&stream.partitions) {
        app.produce(p, values.clone()).await;
    }
    app.wait_consumed().await;
    stream.assert_stock(&app.pool).await;
    let m = scrape(app).await;
    let restarts: f64 = m
        .find("wm_consumer_restarts_total", &[])
        .map(|s| s.value)
        .sum();
    assert!(restarts >= 1.0, "the panic was counted as a restart");
}

#[tokio::test]
async fn a_pipeline_panic_restarts_the_partition() {
    let app = TestApp::spawn_with(with_panic(FaultStage::Pipeline, 1)).await;
    survives(&app, 41).await;
    app.stop().await;
}

#[tokio::test]
async fn a_fetcher_panic_restarts_the_partition() {
    let app = TestApp::spawn_with(with_panic(FaultStage::Fetcher, 1)).await;
    survives(&app, 42).await;
    app.stop().await;
}

#[tokio::test]
async fn a_lease_keeper_panic_stops_the_pipeline_releases_the_lease_and_recovers() {
    let app = TestApp::spawn_with(with_panic(FaultStage::Keeper, 1)).await;
    // The first keeper to check its session (takeover_poll_ms in) panics,
    // on either partition; that partition reports it.
    eventually(10, || async {
        app.statuses.snapshot().iter().find_map(|s| {
            let error = s.last_error()?;
            let own = format!(
                "the partition keeper panicked: injected panic in the Keeper of partition {}",
                s.partition
            );
            error.contains(&own).then_some(())
        })
    })
    .await;
    survives(&app, 43).await;
    app.stop().await;
}

#[tokio::test]
async fn a_panic_that_persists_is_reported_by_readiness() {
    let app = TestApp::spawn_with(with_panic(FaultStage::Fetcher, 0)).await;
    let body = eventually(20, || async {
        let (status, body) = app.get_json("/health/ready").await;
        let error = body["partitions"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (status == 503 && error.contains("the fetcher panicked: injected panic")).then_some(body)
    })
    .await;
    assert_eq!(body["status"], "not_ready");
    app.stop().await;
}

#[tokio::test]
async fn failing_fetches_keep_the_lag_and_raise_the_stalled_flag() {
    let mut settings = test_settings(1);
    settings.consumer.stall_after_ms = 500;
    // Records wait on the broker before the service starts.
    let (wh, product) = (Uuid::new_v4(), Uuid::new_v4());
    let values: Vec<Vec<u8>> = (0..30)
        .map(|_| Ev::arrival(Uuid::new_v4(), wh, product, 1).bytes())
        .collect();
    let k = &settings.kafka;
    let client = warehouse_monitor::kafka::connect(k).await.unwrap();
    warehouse_monitor::kafka::ensure_topic(&client, k)
        .await
        .unwrap();
    Producer::connect(&settings).await.produce(0, values).await;
    let mut failing = settings.clone();
    failing.fault.fail_fetch = true;
    let app = TestApp::spawn_with(failing).await;
    let m = eventually(20, || async {
        let m = scrape(&app).await;
        let stalled = m
            .find("wm_consumer_stalled", &[("partition", "0")])
            .next()?
            .value;
        (stalled == 1.0).then_some(m)
    })
    .await;
    // Tansu's latest offset is the last batch's base offset + 1: a lower bound.
    let lag = m.value("wm_consumer_lag", &[("partition", "0")]);
    assert!(lag >= 1.0, "lag {lag} while 30 records wait");
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    let error = body["partitions"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("fault.fail_fetch"), "{body}");
    app.stop_keeping_data().await;

    // Without the fault the same records are consumed, from the start.
    let app = TestApp::spawn_with(settings).await;
    let target = HashMap::from([(0, 30)]);
    wait_committed(&app.pool, &app.settings.kafka.topic, &target).await;
    assert_eq!(app.stock(wh, product).await, Some(30));
    app.stop().await;
}
