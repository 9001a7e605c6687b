//! Compressed record batches, as real producers send them: a stream produced
//! with each codec Kafka defines is applied exactly, and the stock comes out
//! as the test computes it.

use warehouse_monitor::kafka::Codec;

use crate::support::{helpers::TestApp, stream};

async fn stream_with(codec: Codec, seed: u64) {
    let app = TestApp::spawn(2).await;
    let stream = stream::generate(seed, 300, 2, true);
    for (p, values) in (0..).zip(&stream.partitions) {
        app.producer.produce_with(p, values.clone(), codec).await;
    }
    app.wait_consumed().await;
    stream.assert_stock(&app.pool).await;
    assert!(app.rejected().await.is_empty(), "nothing is rejected");
    app.stop().await;
}

#[tokio::test]
async fn gzip_batches_are_applied() {
    stream_with(Codec::Gzip, 31).await;
}

#[tokio::test]
async fn snappy_batches_are_applied() {
    stream_with(Codec::Snappy, 32).await;
}

#[tokio::test]
async fn lz4_batches_are_applied() {
    stream_with(Codec::Lz4, 33).await;
}

#[tokio::test]
async fn zstd_batches_are_applied() {
    stream_with(Codec::Zstd, 34).await;
}
