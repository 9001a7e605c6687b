//! Transaction markers in the log. Neither broker here writes them (Tansu 0.6
//! has no EndTxn; the mock cluster answers EndTxn without a marker), so the
//! test writes a commit marker itself: a control batch, byte for byte as a
//! transaction coordinator appends it, sent to the local broker in a plain
//! Produce request. The service passes it, stores its offset past it, reads
//! lag 0, stays ready and rests; a marker between events changes nothing
//! either, nor does an abort marker.

use std::{collections::HashMap, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use uuid::Uuid;

use crate::helpers::{Ev, TestApp, eventually, wait_committed};

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
    let first_marker = append_marker(&broker, &topic, Marker::Commit).await;
    app.produce(0, vec![event()]).await;
    let abort = append_marker(&broker, &topic, Marker::Abort).await;
    let last_marker = append_marker(&broker, &topic, Marker::Commit).await;
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

/// The outcome a control record marks.
#[derive(Debug, Clone, Copy)]
enum Marker {
    Abort = 0,
    Commit = 1,
}

/// Appends a marker to partition 0 of `topic`; returns its offset.
async fn append_marker(broker: &str, topic: &str, marker: Marker) -> i64 {
    let batch = control_batch(4242, 0, marker);
    let mut body = Vec::new();
    // Request header v1: api key 0 (Produce), version 3, correlation id, client id.
    body.extend(0_i16.to_be_bytes());
    body.extend(3_i16.to_be_bytes());
    body.extend(7_i32.to_be_bytes());
    put_str(&mut body, "wm-test-marker");
    // Produce v3: no transactional id, acks -1, timeout, one topic, one partition.
    body.extend((-1_i16).to_be_bytes());
    body.extend((-1_i16).to_be_bytes());
    body.extend(10_000_i32.to_be_bytes());
    body.extend(1_i32.to_be_bytes());
    put_str(&mut body, topic);
    body.extend(1_i32.to_be_bytes());
    body.extend(0_i32.to_be_bytes());
    body.extend(i32::try_from(batch.len()).unwrap().to_be_bytes());
    body.extend(&batch);

    let mut stream = TcpStream::connect(broker).await.expect("broker");
    stream
        .write_all(&i32::try_from(body.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&body).await.unwrap();
    let size = stream.read_i32().await.unwrap();
    let mut reply = vec![0; usize::try_from(size).unwrap()];
    stream.read_exact(&mut reply).await.unwrap();
    // correlation id, topics (1), name, partitions (1), index, error, base offset.
    let mut at = 4 + 4;
    let name_len = usize::try_from(i16::from_be_bytes([reply[at], reply[at + 1]])).unwrap();
    at += 2 + name_len + 4 + 4;
    let error = i16::from_be_bytes([reply[at], reply[at + 1]]);
    assert_eq!(error, 0, "the broker took the marker");
    at += 2;
    i64::from_be_bytes(reply[at..at + 8].try_into().unwrap())
}

/// A record batch (magic 2) holding one control record of `producer_id`, as
/// a transaction coordinator writes it.
fn control_batch(producer_id: i64, epoch: i16, marker: Marker) -> Vec<u8> {
    // Control record key: version 0, type (0 abort, 1 commit); value:
    // version 0, coordinator epoch 0.
    let key = [0, 0, 0, marker as u8];
    let value = [0, 0, 0, 0, 0, 0];
    let mut record = vec![0]; // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, len(&key));
    record.extend(key);
    put_varint(&mut record, len(&value));
    record.extend(value);
    put_varint(&mut record, 0); // headers
    let mut records = Vec::new();
    put_varint(&mut records, len(&record));
    records.extend(record);

    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    // From the attributes on: what the CRC covers.
    let mut tail = Vec::new();
    tail.extend(0x30_i16.to_be_bytes()); // transactional | control
    tail.extend(0_i32.to_be_bytes()); // last offset delta
    tail.extend(now.to_be_bytes()); // base timestamp
    tail.extend(now.to_be_bytes()); // max timestamp
    tail.extend(producer_id.to_be_bytes());
    tail.extend(epoch.to_be_bytes());
    tail.extend((-1_i32).to_be_bytes()); // base sequence
    tail.extend(1_i32.to_be_bytes()); // records
    tail.extend(records);

    let mut batch = Vec::new();
    batch.extend(0_i64.to_be_bytes()); // base offset (the broker assigns it)
    let length = 4 + 1 + 4 + tail.len(); // leader epoch, magic, crc, tail
    batch.extend(i32::try_from(length).unwrap().to_be_bytes());
    batch.extend((-1_i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend(crc32c(&tail).to_be_bytes());
    batch.extend(tail);
    batch
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend(i16::try_from(s.len()).unwrap().to_be_bytes());
    out.extend(s.as_bytes());
}

fn len(bytes: &[u8]) -> i64 {
    i64::try_from(bytes.len()).unwrap()
}

/// A zigzag varint, as record fields are written.
fn put_varint(out: &mut Vec<u8>, v: i64) {
    // Zigzag: the sign goes to the lowest bit (a reinterpretation, no loss).
    let mut z = u64::from_ne_bytes(((v << 1) ^ (v >> 63)).to_ne_bytes());
    loop {
        let byte = u8::try_from(z & 0x7f).unwrap();
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// CRC-32C (Castagnoli), the checksum of record batches.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0_u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}
