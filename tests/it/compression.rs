//! Compressed record batches, as real producers send them: a stream produced
//! with each codec Kafka defines is applied exactly, and the stock comes out
//! as the test computes it.

use rskafka::client::partition::Compression;

use crate::{helpers::TestApp, stream};

async fn stream_with(compression: Compression, seed: u64) {
    let app = TestApp::spawn(2).await;
    let stream = stream::generate(seed, 300, 2, true);
    for (p, values) in (0..).zip(&stream.partitions) {
        app.producer
            .produce_with(p, values.clone(), compression)
            .await;
    }
    app.wait_consumed().await;
    stream.assert_stock(&app.pool).await;
    assert!(app.rejected().await.is_empty(), "nothing is rejected");
    app.stop().await;
}

#[tokio::test]
async fn gzip_batches_are_applied() {
    stream_with(Compression::Gzip, 31).await;
}

#[tokio::test]
async fn snappy_batches_are_applied() {
    stream_with(Compression::Snappy, 32).await;
}

#[tokio::test]
async fn lz4_batches_are_applied() {
    stream_with(Compression::Lz4, 33).await;
}

#[tokio::test]
async fn zstd_batches_are_applied() {
    stream_with(Compression::Zstd, 34).await;
}
