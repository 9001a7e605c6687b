//! Logs written by transactional producers (Kafka Streams and Flink with
//! exactly-once, Debezium, Kafka Connect, Spring). On librdkafka's mock
//! cluster (several brokers, in-process), a transactional librdkafka producer
//! writes the stream in several committed transactions, in transactional
//! record batches; every event is applied once, the lag reads 0 at the end,
//! and nothing is rewritten there. The mock answers EndTxn without writing
//! markers and returns records of aborted transactions to every consumer, so
//! markers are tested on the local broker (`markers.rs`), and dropping aborted
//! records is left to librdkafka's own tests (SPEC section 8).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use rdkafka::{mocking::MockCluster, producer::Producer as _};
use warehouse_monitor::kafka::{self, Codec, Outgoing};

use crate::support::{
    helpers::{TestApp, committed_offsets, eventually, test_settings, wait_committed},
    stream,
};

const PARTITIONS: i32 = 4;

#[tokio::test]
async fn committed_transactions_are_applied_once_and_their_markers_passed() {
    let mock = MockCluster::new(3).expect("librdkafka's mock cluster starts");
    let mut settings = test_settings(PARTITIONS);
    settings.kafka.brokers = vec![mock.bootstrap_servers()];
    mock.create_topic(&settings.kafka.topic, PARTITIONS, 1)
        .expect("topic on the mock");
    let app = TestApp::spawn_with(settings.clone()).await;
    let topic = settings.kafka.topic.clone();

    let mut config = kafka::client_config(&settings.kafka);
    config
        .set("transactional.id", format!("wm-test-{topic}"))
        .set("compression.codec", Codec::Lz4.as_str());
    let producer: rdkafka::producer::FutureProducer<kafka::Reporter> = config
        .create_with_context(kafka::Reporter::default())
        .expect("transactional producer");
    let init = producer.clone();
    tokio::task::spawn_blocking(move || init.init_transactions(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("transactions initialised");

    // Three transactions, each spanning every partition.
    let generated = stream::generate(23, 300, PARTITIONS as usize, true);
    let mut ends = HashMap::new();
    for round in 0..3 {
        producer.begin_transaction().expect("begin");
        let records: Vec<Outgoing> = generated
            .partitions
            .iter()
            .enumerate()
            .flat_map(|(p, values)| {
                let share = values.len().div_ceil(3);
                values
                    .iter()
                    .skip(round * share)
                    .take(share)
                    .map(move |v| Outgoing {
                        partition: i32::try_from(p).unwrap(),
                        value: Some(v.clone()),
                        ..Outgoing::default()
                    })
            })
            .collect();
        let offsets = kafka::send_all(&producer, &topic, &records)
            .await
            .expect("produced in the transaction");
        for (r, offset) in records.iter().zip(offsets) {
            let end = ends.entry(r.partition).or_insert(0);
            *end = (*end).max(offset + 1);
        }
        let commit = producer.clone();
        tokio::task::spawn_blocking(move || commit.commit_transaction(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("committed");
    }

    // The end of each log as a read_committed consumer sees it (the mock of
    // librdkafka 2.12 writes no markers on EndTxn: it ends at the last record).
    let client = kafka::connect(&settings.kafka).await.expect("connects");
    let mut log_ends = HashMap::new();
    for p in 0..PARTITIONS {
        let (_, end) = client.log_bounds(&topic, p).await.unwrap();
        assert!(end >= ends[&p], "partition {p}: {end} < {}", ends[&p]);
        log_ends.insert(p, end);
    }
    // The stored offsets reach the end of each log, past the last marker.
    wait_committed(&app.pool, &topic, &log_ends).await;
    generated.assert_stock(&app.pool).await;
    let distinct: HashSet<&Vec<u8>> = generated.partitions.iter().flatten().collect();
    assert_eq!(
        app.count("movement_events").await,
        i64::try_from(distinct.len()).unwrap(),
        "every event stored once"
    );
    assert!(app.rejected().await.is_empty(), "no marker is a record");

    // Lag counts against the end past the marker: 0, and nothing stalls.
    eventually(10, || async {
        let lags: Vec<i64> = app.statuses.snapshot().iter().map(|s| s.lag()).collect();
        lags.iter()
            .all(|lag| *lag == 0)
            .then_some(())
            .ok_or_else(|| format!("lag 0 on every partition: {lags:?}"))
    })
    .await;
    let before = committed_offsets(&app.pool, &topic).await;
    let updated = offsets_updated(&app).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in app.statuses.snapshot() {
        assert_eq!(s.lag(), 0, "partition {}", s.partition);
        assert!(!s.is_stalled(), "partition {}", s.partition);
    }
    let (status, ready) = app.get_json("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    // At the end of the log nothing is written again and again.
    assert_eq!(committed_offsets(&app.pool, &topic).await, before);
    assert_eq!(
        offsets_updated(&app).await,
        updated,
        "no offset rewritten at the end of the log"
    );
    app.stop().await;
    // The clients go before the cluster they are connected to.
    drop(producer);
    drop(mock);
}

/// When each partition's offset row was last written.
async fn offsets_updated(app: &TestApp) -> Vec<String> {
    let client = app.pool.get().await.unwrap();
    client
        .query(
            "SELECT partition::text || ' ' || updated_at::text FROM consumer_offsets \
             WHERE topic = $1 ORDER BY partition",
            &[&app.settings.kafka.topic],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
