//! Records PostgreSQL refuses do not stop their partition: the batch is split
//! until the refused record is isolated, that record is stored as rejected
//! (`unprocessable`, with the database's SQLSTATE and message), and the rest
//! of the batch and everything after it is applied.

use uuid::Uuid;

use crate::support::{
    helpers::{Ev, Rejected, TestApp, test_settings},
    metrics::scrape,
};

#[tokio::test]
async fn a_record_the_database_refuses_is_quarantined_and_the_rest_applies() {
    let mut settings = test_settings(1);
    settings.batch.size = 64;
    settings.batch.wait_ms = 500;
    let app = TestApp::spawn_with(settings).await;
    // The test's own database refuses one quantity, as a site-specific rule would.
    let client = app.pool.get().await.unwrap();
    client
        .batch_execute(
            "ALTER TABLE movement_events ADD CONSTRAINT test_refuses_777 CHECK (quantity <> 777)",
        )
        .await
        .unwrap();

    let (wh, product) = (Uuid::new_v4(), Uuid::new_v4());
    // 40 departures of 1 each; the one at offset 23 carries 777.
    let values: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let quantity = if i == 23 { 777 } else { 1 };
            Ev::departure(Uuid::new_v4(), wh, product, quantity).bytes()
        })
        .collect();
    app.produce(0, values.clone()).await;
    app.wait_consumed().await;

    let Rejected {
        partition,
        offset,
        reason,
        detail,
    } = &app.only_rejected().await;
    assert_eq!(
        (*partition, *offset, reason.as_str()),
        (0, 23, "unprocessable")
    );
    assert!(
        detail.starts_with("copy failed: SQLSTATE 23514: ") && detail.contains("test_refuses_777"),
        "{detail}"
    );
    assert_eq!(
        app.rejected_raw(23).await,
        values[23],
        "the raw record is kept"
    );
    assert_eq!(app.count("movement_events").await, 39);
    assert_eq!(app.stock(wh, product).await, Some(-39));

    // Later records on the partition go on.
    app.produce(
        0,
        vec![Ev::departure(Uuid::new_v4(), wh, product, 2).bytes()],
    )
    .await;
    app.wait_consumed().await;
    assert_eq!(app.stock(wh, product).await, Some(-41));

    let m = scrape(&app).await;
    let unprocessable = m.value("wm_events_rejected_total", &[("reason", "unprocessable")]);
    assert_eq!(unprocessable, 1.0);
    let failures = m.value(
        "wm_batch_failures_total",
        &[("step", "copy"), ("class", "data")],
    );
    assert!(
        failures >= 2.0,
        "the batch and its halves failed: {failures}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_broken_schema_is_reported_with_step_sqlstate_and_message_then_recovers() {
    let mut settings = test_settings(1);
    settings.consumer.stall_after_ms = 500;
    let app = TestApp::spawn_with(settings).await;
    let (wh, product) = (Uuid::new_v4(), Uuid::new_v4());
    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), wh, product, 5).bytes()])
        .await;
    app.wait_consumed().await;

    // Not a data error: retrying or splitting cannot help, an operator must.
    let client = app.pool.get().await.unwrap();
    client
        .batch_execute("ALTER TABLE stock RENAME TO stock_away")
        .await
        .unwrap();
    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), wh, product, 7).bytes()])
        .await;

    let expected = "stock failed: SQLSTATE 42P01: relation \"stock\" does not exist";
    let body = crate::support::helpers::eventually(20, || async {
        let (status, body) = app.get_json("/health/ready").await;
        let partition = &body["partitions"][0];
        let stalled = partition["stalled"] == true;
        let error = partition["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (status == 503 && stalled && error.contains(expected)).then_some(body)
    })
    .await;
    let error = body["partitions"][0]["last_error"].as_str().unwrap();
    assert_eq!(
        error.matches("does not exist").count(),
        1,
        "said once: {error}"
    );
    assert!(
        body["partitions"][0]["lag"].as_i64().unwrap() >= 1,
        "{body}"
    );

    let m = scrape(&app).await;
    assert!(
        m.value(
            "wm_batch_failures_total",
            &[("step", "stock"), ("class", "other")]
        ) >= 1.0
    );
    assert_eq!(m.value("wm_consumer_stalled", &[("partition", "0")]), 1.0);
    assert!(m.value("wm_consumer_seconds_since_commit", &[("partition", "0")]) >= 0.5);

    // The operator repairs it: the partition goes on by itself.
    client
        .batch_execute("ALTER TABLE stock_away RENAME TO stock")
        .await
        .unwrap();
    app.wait_consumed().await;
    assert_eq!(app.stock(wh, product).await, Some(12));
    crate::support::helpers::eventually(20, || async {
        let (status, _) = app.get_json("/health/ready").await;
        (status == 200).then_some(())
    })
    .await;
    let m = scrape(&app).await;
    assert_eq!(m.value("wm_consumer_stalled", &[("partition", "0")]), 0.0);
    app.stop().await;
}
