//! One librdkafka consumer per instance: a partition's position moves by
//! seeking, partitions join and leave the consumer as they are taken and
//! released, and an instance holding many partitions costs a handful of
//! threads and one connection per broker.
//!
//! librdkafka 2.12 aborts the process when a partition is removed from the
//! assignment while an earlier removal's stop is pending
//! (confluentinc/librdkafka#5573); these tests move and release partitions
//! far more often than a service does, on busy cores, where that race shows.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rand::Rng;
use warehouse_monitor::{
    config::Settings,
    kafka::{
        self, Kafka, PartitionReader,
        partition_reader::{DRAIN_RECORDS, Fetched},
    },
};

use crate::support::{
    helpers::{Producer, TestApp, eventually, test_settings},
    metrics::scrape,
    stream,
};

/// Records in the test partition, each produced as a batch of its own (a
/// seek into the middle of a batch is answered from the next one by Tansu,
/// which the ingest's probe handles, not the reader).
const RECORDS: i64 = 200;

/// Threads spinning on every core until dropped.
struct BusyCores {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCores {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A one-partition topic of [`RECORDS`] records, `record {offset}` each.
async fn prepared() -> (Settings, Kafka) {
    let mut settings = test_settings(1);
    // Tansu holds each fetch this long: a move waits for the fetch in flight.
    settings.kafka.fetch_max_wait_ms = 5;
    let kafka = kafka::connect(&settings.kafka).await.unwrap();
    kafka::ensure_topic(&kafka, &settings.kafka).await.unwrap();
    let producer = Producer::connect(&settings).await;
    for i in 0..RECORDS {
        producer
            .produce(0, vec![format!("record {i}").into_bytes()])
            .await;
    }
    assert_eq!(producer.produced()[&0], RECORDS);
    (settings, kafka)
}

/// Reads the records from `from` on, `n` of them (fewer at the log's end),
/// and checks each is the one at its offset, once.
async fn read_from(reader: &PartitionReader, from: i64, n: i64) {
    let want: Vec<i64> = (from..(from + n).min(RECORDS)).collect();
    let mut got = Vec::new();
    let mut queued = VecDeque::with_capacity(DRAIN_RECORDS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < want.len() {
        if queued.is_empty() && reader.drain(&mut queued) == 0 {
            tokio::select! {
                () = reader.readable() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "records from {from}: got only {got:?}"
            );
            continue;
        }
        match queued.pop_front().unwrap() {
            Fetched::Record(record) => {
                let value = String::from_utf8(record.value.clone().unwrap()).unwrap();
                assert_eq!(value, format!("record {}", record.offset));
                got.push(record.offset);
            }
            Fetched::End(_) => {}
            Fetched::Failed(e) => panic!("fetch failed: {e}"),
        }
    }
    assert_eq!(got, want, "read from {from}: nothing lost, nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_moved_a_thousand_times_on_busy_cores_reads_each_record_once() {
    let (_settings, kafka) = prepared().await;
    let _busy = BusyCores::start();
    let mut reader = kafka.reader(0).unwrap();
    reader.start_from(0).await.unwrap();
    read_from(&reader, 0, 3).await;
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let at = rng.gen_range(0..RECORDS);
        reader.seek(at).await.unwrap();
        read_from(&reader, at, 2).await;
    }
    reader.release().await;
    assert_eq!(kafka.assigned(), (vec![], vec![]), "released, not parked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_taken_and_released_again_and_again_is_read_from_where_it_was_put() {
    let (_settings, kafka) = prepared().await;
    let _busy = BusyCores::start();
    let mut rng = rand::thread_rng();
    for round in 0..300 {
        let at = rng.gen_range(0..RECORDS);
        let mut reader = kafka.reader(0).unwrap();
        reader.start_from(at).await.unwrap();
        // Every third round releases before anything was read: the
        // assignment may not have started, and an earlier stop may pend.
        if round % 3 != 0 {
            read_from(&reader, at, 2).await;
        }
        reader.release().await;
        let (held, parked) = kafka.assigned();
        assert!(held.is_empty(), "round {round}: still held {held:?}");
        assert!(parked.is_empty(), "round {round}: parked {parked:?}");
    }
    // A reader dropped without a release (its task panicked) parks the
    // partition; taking it again resumes it where it is put.
    let reader = kafka.reader(0).unwrap();
    reader.start_from(10).await.unwrap();
    drop(reader);
    assert_eq!(kafka.assigned(), (vec![], vec![0]));
    let mut reader = kafka.reader(0).unwrap();
    reader.start_from(50).await.unwrap();
    read_from(&reader, 50, 3).await;
    reader.release().await;
}

/// Waits until `app`'s consumer has as many partitions assigned as it holds,
/// and none parked, as its metrics say.
async fn assignment_follows_ownership(app: &TestApp) {
    eventually(10, || async {
        let owned = app.owned();
        let m = scrape(app).await;
        let held = m.value("wm_consumer_partitions_assigned", &[("state", "held")]);
        let parked = m.value("wm_consumer_partitions_assigned", &[("state", "parked")]);
        let owned_gauge = m.value("wm_consumer_partitions_owned", &[]);
        #[allow(clippy::cast_precision_loss)]
        let counted = owned.len() as f64;
        (held == counted && owned_gauge == counted && parked == 0.0)
            .then_some(())
            .ok_or_else(|| format!("held {owned:?}, assigned {held}, parked {parked}"))
    })
    .await;
}

#[tokio::test]
async fn an_instance_takes_and_releases_partitions_while_another_holds_the_rest() {
    let settings = test_settings(4);
    let first = TestApp::spawn_with(settings.clone()).await;
    eventually(10, || async {
        (first.owned().len() == 4)
            .then_some(())
            .ok_or("the first instance holds every partition")
    })
    .await;
    assignment_follows_ownership(&first).await;
    let stream = stream::generate(11, 400, 4, false);
    // The k-th quarter of every partition's records.
    let produce_quarter = |k: usize| {
        let first = &first;
        let stream = &stream;
        async move {
            for (p, values) in (0..).zip(&stream.partitions) {
                let (from, to) = (k * values.len() / 4, (k + 1) * values.len() / 4);
                first.produce(p, values[from..to].to_vec()).await;
            }
        }
    };
    for round in 0..2 {
        // Another instance joins: the first hands two partitions back.
        let second = TestApp::spawn_with(settings.clone()).await;
        eventually(10, || async {
            let (a, b) = (first.owned(), second.owned());
            (a.len() == 2 && b.len() == 2)
                .then_some(())
                .ok_or_else(|| format!("shared 2 + 2 in round {round}: {a:?} and {b:?}"))
        })
        .await;
        assignment_follows_ownership(&first).await;
        assignment_follows_ownership(&second).await;
        produce_quarter(2 * round).await;
        first.wait_consumed().await;
        // It leaves: the first takes the two partitions again.
        second.stop_keeping_data().await;
        eventually(10, || async {
            (first.owned().len() == 4)
                .then_some(())
                .ok_or("the first instance holds every partition again")
        })
        .await;
        assignment_follows_ownership(&first).await;
        produce_quarter(2 * round + 1).await;
        first.wait_consumed().await;
    }
    // Every record applied, none lost, across both instances' hands.
    stream.assert_stock(&first.pool).await;
    first.stop().await;
}

/// A reader may be the last to let go of the consumer: a service stopping
/// drops its consumer handle while a partition's task still holds a reader.
/// The partition's fetch queue then goes before the consumer it belongs to;
/// the other way round it was destroyed inside a freed client, and the
/// process died of a segmentation fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_outlives_its_consumer_handle_reads_and_closes_cleanly() {
    let (_settings, kafka) = prepared().await;
    for round in 0..20 {
        let reader = kafka.reader(0).unwrap();
        let at = i64::from(round) * 7;
        reader.start_from(at).await.unwrap();
        let handle = kafka.clone();
        drop(handle);
        read_from(&reader, at, 3).await;
        drop(reader);
    }
    let reader = kafka.reader(0).unwrap();
    reader.start_from(100).await.unwrap();
    drop(kafka);
    read_from(&reader, 100, 5).await;
    // The last hold on the consumer: its queue, then the consumer, close.
    drop(reader);
}
