//! Bounded in bytes: a record over `kafka.max_record_bytes` is rejected as
//! `too_large` with a bounded prefix of its bytes kept, the records after it
//! apply, and a batch closes at `batch.max_bytes`.

use uuid::Uuid;

use crate::support::{
    helpers::{Ev, Rejected, TestApp, test_settings},
    metrics::scrape,
};

#[tokio::test]
async fn a_five_mebibyte_record_is_rejected_as_too_large_and_later_records_apply() {
    let app = TestApp::spawn(1).await;
    let (wh, product) = (Uuid::new_v4(), Uuid::new_v4());
    // A well-formed event padded to 5 MiB with an extra field.
    let mut huge = Ev::arrival(Uuid::new_v4(), wh, product, 100).json();
    huge["padding"] = "x".repeat(5 * 1024 * 1024).into();
    let huge = serde_json::to_vec(&huge).unwrap();
    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), wh, product, 1).bytes()])
        .await;
    app.produce(0, vec![huge.clone()]).await;
    let later: Vec<Vec<u8>> = (0..5)
        .map(|_| Ev::arrival(Uuid::new_v4(), wh, product, 2).bytes())
        .collect();
    app.produce(0, later).await;
    app.wait_consumed().await;

    let Rejected {
        offset,
        reason,
        detail,
        ..
    } = &app.only_rejected().await;
    assert_eq!((*offset, reason.as_str()), (1, "too_large"));
    assert!(detail.contains(&huge.len().to_string()), "{detail}");
    let raw = app.rejected_raw(1).await;
    assert_eq!(raw.len(), 4096, "a bounded prefix is kept");
    assert_eq!(raw[..], huge[..4096]);
    assert_eq!(app.stock(wh, product).await, Some(1 + 5 * 2));
    app.stop().await;
}

#[tokio::test]
async fn a_batch_closes_at_max_bytes() {
    let mut settings = test_settings(1);
    settings.batch.size = 1000;
    settings.batch.max_bytes = 4096;
    settings.batch.wait_ms = 2000;
    let app = TestApp::spawn_with(settings).await;
    let (wh, product) = (Uuid::new_v4(), Uuid::new_v4());
    let values: Vec<Vec<u8>> = (0..40)
        .map(|_| Ev::arrival(Uuid::new_v4(), wh, product, 1).bytes())
        .collect();
    let total: usize = values.iter().map(Vec::len).sum();
    let per_record = values[0].len();
    app.produce(0, values).await;
    app.wait_consumed().await;
    assert_eq!(app.stock(wh, product).await, Some(40));

    let m = scrape(&app).await;
    let batches = m.value("wm_batches_committed_total", &[("partition", "0")]);
    // Each batch holds at most 4096 bytes plus one record.
    let fewest = u32::try_from(total / (4096 + per_record)).unwrap();
    assert!(
        batches >= f64::from(fewest),
        "{batches} batches for {total} bytes"
    );
    assert!(batches >= 4.0, "{batches}");
    app.stop().await;
}
