//! Transaction markers in the log. Neither broker here writes them (Tansu 0.6
//! has no EndTxn; the mock cluster answers EndTxn without a marker), so the
//! test writes a commit marker itself: a control batch, byte for byte as a
//! transaction coordinator appends it, sent to the local broker in a plain
//! Produce request. The service passes it, stores its offset past it, reads
//! lag 0 and stays ready; a marker between events changes nothing either.

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

    // Events, a marker, events, a marker: the log ends with the marker.
    app.produce(0, vec![event(), event()]).await;
    let first_marker = append_commit_marker(&broker, &topic).await;
    app.produce(0, vec![event()]).await;
    let last_marker = append_commit_marker(&broker, &topic).await;
    assert_eq!(
        (first_marker, last_marker),
        (2, 4),
        "markers take offsets 2 and 4"
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
    app.stop().await;
}

/// Appends a COMMIT marker to partition 0 of `topic`; returns its offset.
async fn append_commit_marker(broker: &str, topic: &str) -> i64 {
    let batch = control_batch(4242, 0);
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

/// A record batch (magic 2) holding one COMMIT control record of
/// `producer_id`, as a transaction coordinator writes it.
fn control_batch(producer_id: i64, epoch: i16) -> Vec<u8> {
    // Control record key: version 0, type 1 (commit); value: version 0,
    // coordinator epoch 0.
    let key = [0, 0, 0, 1];
    let value = [0, 0, 0, 0, 0, 0];
    let mut record = vec![0]; // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, key.len() as i64);
    record.extend(key);
    put_varint(&mut record, value.len() as i64);
    record.extend(value);
    put_varint(&mut record, 0); // headers
    let mut records = Vec::new();
    put_varint(&mut records, record.len() as i64);
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

/// A zigzag varint, as record fields are written.
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
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
