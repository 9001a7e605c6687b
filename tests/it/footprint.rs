//! What an instance costs the machine and the brokers: the real binary,
//! holding 64 or 256 partitions and reading each, runs a bounded number of
//! threads and at most two connections per broker (librdkafka's bootstrap
//! connection and the broker's own), however many partitions it holds.

use std::{collections::HashSet, time::Duration};

use uuid::Uuid;

use crate::support::{
    eventually::Patience,
    helpers::{Ev, Producer, ServiceProcess, eventually, test_settings, wait_consumed},
    metrics::parse_exposition,
};

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// Established TCP connections of process `pid` to `port` on any host.
fn connections_to(pid: u32, port: u16) -> usize {
    let sockets: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    link.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .map(|line| {
                    line.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .filter(|fields| {
            let remote_port = fields
                .get(2)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // State 01: established.
            remote_port == Some(port)
                && fields.get(3).map(String::as_str) == Some("01")
                && fields.get(9).is_some_and(|inode| sockets.contains(inode))
        })
        .count()
}

#[tokio::test]
async fn sixty_four_partitions_take_few_threads_and_two_connections_per_broker() {
    holding(64).await;
}

#[tokio::test]
async fn two_hundred_fifty_six_partitions_are_each_read_on_the_same_bounds() {
    holding(256).await;
}

/// Starts the binary on a fresh topic of `partitions` partitions, waits
/// until it holds them all, reads a record from each, then counts its
/// threads and broker connections.
async fn holding(partitions: i32) {
    let settings = test_settings(partitions);
    let child = ServiceProcess::start(&settings);
    let pid = child.pid();
    let http = reqwest::Client::new();
    eventually(
        Patience::secs(60).every(Duration::from_millis(250)),
        || async {
            let text = http
                .get(format!("{}/metrics", child.base()))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            let owned = parse_exposition(&text)
                .find("wm_consumer_partitions_owned", &[])
                .map(|s| s.value)
                .sum::<f64>();
            (owned == f64::from(partitions))
                .then_some(())
                .ok_or_else(|| format!("{owned} of {partitions} partitions held"))
        },
    )
    .await;
    // A record on every partition, each read and committed: they all work.
    let producer = Producer::connect(&settings).await;
    for p in 0..partitions {
        let ev = Ev::arrival(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), 1);
        producer.produce(p, vec![ev.bytes()]).await;
    }
    let (store, _) = warehouse_monitor::app::startup::migrate(&settings)
        .await
        .unwrap();
    wait_consumed(
        &warehouse_monitor::store::pool(&settings.postgres).unwrap(),
        &settings.kafka.topic,
        &producer,
    )
    .await;

    let broker_port: u16 = settings.kafka.brokers[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the broker's port");
    let (threads, connections) = (threads(pid), connections_to(pid, broker_port));
    assert!(
        threads <= 40,
        "{threads} threads for {partitions} partitions"
    );
    assert!(
        connections <= 2,
        "{connections} connections to the one broker for {partitions} partitions"
    );
    assert!(connections >= 1, "the service is connected to the broker");
    drop(child);
    store.close();
    warehouse_monitor::store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
}
