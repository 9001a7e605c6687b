//! Kafka's wire format written by hand, for what no producer here writes:
//! transaction markers (neither local broker writes them) and record
//! timestamps librdkafka replaces (0 and -1 become the time of sending). A
//! record batch (magic 2, CRC-32C) in a Produce request (v3) to partition 0.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The outcome a control record marks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Marker {
    Abort = 0,
    Commit = 1,
}

/// Appends `batch` (a record batch, magic 2) to partition 0 of `topic` in a
/// Produce request (v3); returns the offset the broker gave its first record.
pub(crate) async fn append(broker: &str, topic: &str, batch: &[u8]) -> i64 {
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
    body.extend(batch);

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

/// A record batch holding one control record of a transactional producer,
/// as a transaction coordinator writes it.
pub(crate) fn control_batch(marker: Marker) -> Vec<u8> {
    // Control record key: version 0, type (0 abort, 1 commit); value:
    // version 0, coordinator epoch 0.
    let key = [0, 0, 0, marker as u8];
    let value = [0, 0, 0, 0, 0, 0];
    // Attributes: transactional | control.
    record_batch(0x30, 4242, now_ms(), Some(&key), &value)
}

/// A record batch of one plain record holding `value`, stamped `timestamp`
/// (CreateTime, epoch ms: any 64-bit value, as a producer may write).
pub(crate) fn data_batch(timestamp: i64, value: &[u8]) -> Vec<u8> {
    record_batch(0, -1, timestamp, None, value)
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// One record in a batch (magic 2) with the given attributes and producer id.
fn record_batch(
    attributes: i16,
    producer_id: i64,
    timestamp: i64,
    key: Option<&[u8]>,
    value: &[u8],
) -> Vec<u8> {
    let mut record = vec![0]; // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    match key {
        Some(key) => {
            put_varint(&mut record, len(key));
            record.extend(key);
        }
        None => put_varint(&mut record, -1),
    }
    put_varint(&mut record, len(value));
    record.extend(value);
    put_varint(&mut record, 0); // headers
    let mut records = Vec::new();
    put_varint(&mut records, len(&record));
    records.extend(record);

    // From the attributes on: what the CRC covers.
    let mut tail = Vec::new();
    tail.extend(attributes.to_be_bytes());
    tail.extend(0_i32.to_be_bytes()); // last offset delta
    tail.extend(timestamp.to_be_bytes()); // base timestamp
    tail.extend(timestamp.to_be_bytes()); // max timestamp
    tail.extend(producer_id.to_be_bytes());
    tail.extend(0_i16.to_be_bytes()); // producer epoch
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
