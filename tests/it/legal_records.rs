//! Records any producer may legally write, to the local broker: null keys,
//! null and empty values, headers with null values or bytes that are not
//! UTF-8, and record timestamps of every kind (by librdkafka: 1 and 10^16 ms;
//! written by hand, since librdkafka stamps 0 and -1 with the time of
//! sending: -1, 0, 10^16 and the 64-bit extremes). None of them stops the
//! partition: the events among them are applied, the rest are rejected with
//! their reason, and the offset reaches the end of the log.

use std::collections::HashMap;

use rdkafka::message::{Header, OwnedHeaders};
use uuid::Uuid;
use warehouse_monitor::kafka::{self, Codec, Outgoing};

use crate::{
    support::helpers::{Ev, TestApp, wait_committed},
    wire,
};

#[tokio::test]
async fn no_legal_record_stops_its_partition() {
    let app = TestApp::spawn(1).await;
    let topic = app.settings.kafka.topic.clone();
    let (warehouse, product) = (Uuid::new_v4(), Uuid::new_v4());
    let event = |quantity| Some(Ev::arrival(Uuid::new_v4(), warehouse, product, quantity).bytes());
    let odd_headers = OwnedHeaders::new()
        .insert(Header {
            key: "traceparent",
            value: None::<&[u8]>,
        })
        .insert(Header {
            key: "binary",
            value: Some(&[0xff, 0xfe, 0x00, 0xc3][..]),
        });
    let records = || {
        [
            // An event with a null key and headers with a null value and non-UTF-8 bytes.
            Outgoing {
                value: event(1),
                headers: Some(odd_headers.clone()),
                ..Outgoing::default()
            },
            // A record timestamp far beyond what a date can hold (year 318 857).
            Outgoing {
                value: event(2),
                timestamp: Some(10_i64.pow(16)),
                ..Outgoing::default()
            },
            // The first millisecond after the epoch, the epoch itself, and -1
            // ("none"; librdkafka writes the time of sending for 0 and -1).
            Outgoing {
                value: event(4),
                timestamp: Some(1),
                ..Outgoing::default()
            },
            Outgoing {
                value: event(16),
                timestamp: Some(0),
                ..Outgoing::default()
            },
            Outgoing {
                value: event(32),
                timestamp: Some(-1),
                ..Outgoing::default()
            },
            // A tombstone (null value) and an empty value, with odd headers.
            Outgoing {
                key: Some(b"k".to_vec()),
                value: None,
                headers: Some(odd_headers.clone()),
                ..Outgoing::default()
            },
            Outgoing {
                value: Some(Vec::new()),
                timestamp: Some(10_i64.pow(16)),
                ..Outgoing::default()
            },
            // An event after them all: the partition goes on.
            Outgoing {
                value: event(8),
                ..Outgoing::default()
            },
        ]
    };
    let mut end = 0;
    for codec in [Codec::None, Codec::Zstd] {
        let producer = kafka::producer(&app.settings.kafka, codec).expect("producer");
        let offsets = kafka::send_all(&producer, &topic, &records())
            .await
            .expect("the broker takes every record");
        end = offsets.last().unwrap() + 1;
    }
    wait_committed(&app.pool, &topic, &HashMap::from([(0, end)])).await;
    assert_eq!(
        app.stock(warehouse, product).await,
        Some(2 * (1 + 2 + 4 + 8 + 16 + 32)),
        "every event applied, with both codecs"
    );
    let rejected = app.rejected().await;
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    assert!(
        rejected.iter().all(|r| r.reason == "malformed_json"),
        "{rejected:?}"
    );
    // The timestamp of the rejected empty value could not be a date: unknown.
    let client = app.pool.get().await.unwrap();
    let unknown: i64 = client
        .query_one(
            "SELECT count(*) FROM rejected_events WHERE record_time IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unknown, 2, "the 10^16 ms timestamps are stored as unknown");
    let statuses = app.statuses.snapshot();
    assert!(statuses[0].last_error().is_none(), "no partition error");
    app.stop().await;
}

#[tokio::test]
async fn record_timestamps_none_zero_and_the_extremes_stop_nothing() {
    let app = TestApp::spawn(1).await;
    let topic = app.settings.kafka.topic.clone();
    let broker = app.settings.kafka.brokers[0].clone();
    let (warehouse, product) = (Uuid::new_v4(), Uuid::new_v4());
    // Written as sent, byte for byte: librdkafka would stamp 0 and -1 with
    // the time of sending.
    let stamps = [-1, 0, i64::MIN, i64::MAX, 10_i64.pow(16)];
    let mut last = 0;
    for (i, stamp) in stamps.into_iter().enumerate() {
        let quantity = 1 << i;
        let event = Ev::arrival(Uuid::new_v4(), warehouse, product, quantity).bytes();
        last = wire::append(&broker, &topic, &wire::data_batch(stamp, &event)).await;
    }
    // And one the service rejects, stamped -1: stored with no record time.
    let rejected_at = wire::append(&broker, &topic, &wire::data_batch(-1, b"not json")).await;
    assert_eq!(rejected_at, last + 1);
    wait_committed(&app.pool, &topic, &HashMap::from([(0, rejected_at + 1)])).await;
    assert_eq!(app.stock(warehouse, product).await, Some(0b11111));
    let client = app.pool.get().await.unwrap();
    let time: Option<time::OffsetDateTime> = client
        .query_one("SELECT record_time FROM rejected_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(time, None, "-1 is no timestamp");
    assert!(app.statuses.get(0).unwrap().last_error().is_none());
    app.stop().await;
}
