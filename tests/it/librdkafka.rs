//! A stock producer we did not write: librdkafka (confluent-kafka from PyPI, in
//! the venv `scripts/stack.sh up` makes) sends the stream with each
//! `compression.type` it offers, as real deployments configure it, and the
//! service applies every record exactly.

use std::{
    collections::HashMap,
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use crate::support::{
    helpers::{TestApp, wait_committed},
    stream::{self, Stream},
};

fn python() -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".stack/venv/bin/python");
    assert!(
        venv.is_file(),
        "{} missing: run scripts/stack.sh up (it installs confluent-kafka)",
        venv.display()
    );
    venv
}

/// Produces `values` to `partition` with librdkafka; returns the next offset.
fn produce(app: &TestApp, partition: i32, values: &[Vec<u8>], compression: &str) -> i64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/librdkafka_produce.py");
    let mut child = Command::new(python())
        .arg(script)
        .args(["--brokers", &app.settings.kafka.brokers.join(",")])
        .args(["--topic", &app.settings.kafka.topic])
        .args(["--partition", &partition.to_string()])
        .args(["--compression", compression])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut stdin = child.stdin.take().unwrap();
    for value in values {
        assert!(!value.contains(&b'\n'), "one record per line");
        stdin.write_all(value).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "librdkafka producer failed");
    let offsets: HashMap<String, i64> = serde_json::from_slice(&output.stdout).unwrap();
    offsets[&partition.to_string()]
}

#[tokio::test]
async fn librdkafka_batches_with_every_codec_are_applied() {
    let app = TestApp::spawn(1).await;
    let mut expected = Stream {
        partitions: Vec::new(),
        expected_stock: HashMap::new(),
        events: 0,
    };
    let mut end = 0;
    for (i, codec) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
        let stream = stream::generate(60 + i as u64, 150, 1, true);
        end = produce(&app, 0, &stream.partitions[0], codec);
        for (key, quantity) in stream.expected_stock {
            *expected.expected_stock.entry(key).or_default() += quantity;
        }
    }
    let target = HashMap::from([(0, end)]);
    wait_committed(&app.pool, &app.settings.kafka.topic, &target).await;
    expected.assert_stock(&app.pool).await;
    assert!(app.rejected().await.is_empty(), "nothing is rejected");
    app.stop().await;
}
