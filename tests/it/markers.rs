//! Transaction markers in the log. Neither broker here writes them (Tansu 0.6
//! has no EndTxn; the mock cluster answers EndTxn without a marker), so the
//! test writes them itself ([`crate::wire`]): control batches, byte for byte
//! as a transaction coordinator appends them, sent to the local broker in a
//! plain Produce request. The service passes it, stores its offset past it, reads
//! lag 0, stays ready and rests; a marker between events changes nothing
//! either, nor does an abort marker.

use std::{collections::HashMap, time::Duration};

use uuid::Uuid;

use crate::{
    support::helpers::{Ev, TestApp, eventually, wait_committed},
    wire::{Marker, append, control_batch},
};

#[tokio::test]
async fn commit_markers_are_passed_and_lag_reads_zero_after_the_last() {
    let app = TestApp::spawn(1).await;
    let topic = app.settings.kafka.topic.clone();
    let broker = app.settings.kafka.brokers[0].clone();
    let (warehouse, product) = (Uuid::new_v4(), Uuid::new_v4());
    let event = || Ev::arrival(Uuid::new_v4(), warehouse, product, 3).bytes();

    // Events, a commit marker, an event, an abort marker (of a transaction
    // that wrote nothing here) and a commit marker: the log ends with markers.
    app.produce(0, vec![event(), event()]).await;
    let first_marker = append(&broker, &topic, &control_batch(Marker::Commit)).await;
    app.produce(0, vec![event()]).await;
    let abort = append(&broker, &topic, &control_batch(Marker::Abort)).await;
    let last_marker = append(&broker, &topic, &control_batch(Marker::Commit)).await;
    assert_eq!(
        (first_marker, abort, last_marker),
        (2, 4, 5),
        "markers take offsets 2, 4 and 5"
    );

    // The stored offset goes past the last marker: nothing is left to read.
    wait_committed(&app.pool, &topic, &HashMap::from([(0, last_marker + 1)])).await;
    assert_eq!(app.stock(warehouse, product).await, Some(9));
    assert!(app.rejected().await.is_empty(), "a marker is not a record");
    eventually(10, || async {
        let lag = app.statuses.get(0).unwrap().lag();
        (lag == 0).then_some(()).ok_or(format!("lag 0: {lag}"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = app.statuses.get(0).unwrap();
    assert_eq!(status.lag(), 0);
    assert!(!status.is_stalled());
    let (code, body) = app.get_json("/health/ready").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["partitions"][0]["lag"], 0, "{body}");
    // At the end of the log nothing is written again and again.
    let written = offset_written(&app).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(offset_written(&app).await, written, "the offset row rests");
    app.stop().await;
}

/// When partition 0's offset row was last written.
async fn offset_written(app: &TestApp) -> String {
    let client = app.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT updated_at::text FROM consumer_offsets WHERE topic = $1 AND partition = 0",
            &[&app.settings.kafka.topic],
        )
        .await
        .unwrap()
        .get(0)
}
