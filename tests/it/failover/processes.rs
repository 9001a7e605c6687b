//! What the failover tests drive and read: service processes that die with
//! the test, a feed that keeps producing, a server process stopped while
//! idle, and who holds what, from the `partition_owners` and
//! `consumer_members` views.

use std::{
    collections::{BTreeMap, HashMap},
    process::Command,
    sync::Arc,
    time::Duration,
};

use deadpool_postgres::Pool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warehouse_monitor::{config::Settings, kafka};

use crate::support::{
    helpers::{Patience, Producer, ServiceProcess, committed_offsets, eventually, test_settings},
    stream::Stream,
};

/// A fresh topic and migrated database, before any instance starts.
pub(super) async fn prepare(partitions: i32) -> (Settings, Pool) {
    let settings = test_settings(partitions);
    let client = kafka::connect(&settings.kafka).await.unwrap();
    kafka::ensure_topic(&client, &settings.kafka).await.unwrap();
    let _migrated = warehouse_monitor::app::startup::migrate(&settings)
        .await
        .unwrap();
    let pool = warehouse_monitor::store::pool(&settings.postgres).unwrap();
    (settings, pool)
}

/// Partitions of `topic` held now, by the server process of the session
/// holding them (the `partition_owners` view of the lock table).
pub(super) async fn owners(pool: &Pool, topic: &str) -> BTreeMap<i32, Vec<i32>> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT pid, partition FROM partition_owners WHERE topic = $1 ORDER BY partition",
            &[&topic],
        )
        .await
        .unwrap();
    let mut owners = BTreeMap::new();
    for row in rows {
        owners
            .entry(row.get::<_, i32>(0))
            .or_insert_with(Vec::new)
            .push(row.get::<_, i32>(1));
    }
    owners
}

/// Server processes of the live instances' sessions (`consumer_members`).
pub(super) async fn members(pool: &Pool, topic: &str) -> Vec<i32> {
    let client = pool.get().await.unwrap();
    client
        .query(
            "SELECT pid FROM consumer_members WHERE topic = $1 ORDER BY pid",
            &[&topic],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Waits until each of `partitions` has committed at least `at_least` records.
pub(super) async fn wait_for_commits(pool: &Pool, topic: &str, partitions: i32, at_least: i64) {
    eventually(30, || async {
        let committed = committed_offsets(pool, topic).await;
        (0..partitions)
            .all(|p| committed.get(&p).copied().unwrap_or(0) >= at_least)
            .then_some(())
            .ok_or_else(|| format!("{at_least} records committed per partition: {committed:?}"))
    })
    .await;
}

/// The offsets committed when the killed instance is gone: once only the
/// survivor's session is left, the server has seen the killed process's
/// sockets close, so none of its transactions can still commit.
pub(super) async fn last_commits(pool: &Pool, topic: &str, survivor: i32) -> HashMap<i32, i64> {
    eventually(
        Patience::secs(5).every(Duration::from_millis(5)),
        || async {
            let members = members(pool, topic).await;
            (members == [survivor])
                .then_some(())
                .ok_or_else(|| format!("only the survivor's session is left: {members:?}"))
        },
    )
    .await;
    committed_offsets(pool, topic).await
}

/// Stops the feed-free survivor and drops the test's database.
pub(super) async fn finish(mut service: ServiceProcess, pool: Pool, settings: &Settings) {
    service.kill();
    pool.close();
    warehouse_monitor::store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
}

/// Produces a stream in the background, as warehouses would: three records
/// per partition every 20 ms, until stopped.
pub(super) struct Feed {
    stop: CancellationToken,
    task: JoinHandle<Vec<usize>>,
    producer: Arc<Producer>,
    stream: Arc<Stream>,
}

impl Feed {
    pub(super) fn start(producer: Arc<Producer>, stream: Arc<Stream>) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (stop, producer, stream) =
                (stop.clone(), Arc::clone(&producer), Arc::clone(&stream));
            async move {
                let mut sent = vec![0; stream.partitions.len()];
                while !stop.is_cancelled() {
                    let mut more = false;
                    for (p, values) in stream.partitions.iter().enumerate() {
                        let end = (sent[p] + 3).min(values.len());
                        if end > sent[p] {
                            let partition = i32::try_from(p).unwrap();
                            producer
                                .produce(partition, values[sent[p]..end].to_vec())
                                .await;
                            sent[p] = end;
                            more = true;
                        }
                    }
                    if !more {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                sent
            }
        });
        Self {
            stop,
            task,
            producer,
            stream,
        }
    }

    /// Stops the feed and sends what it had not sent yet.
    pub(super) async fn finish(self) {
        self.stop.cancel();
        let sent = self.task.await.expect("the feed");
        for (p, values) in self.stream.partitions.iter().enumerate() {
            if sent[p] < values.len() {
                let partition = i32::try_from(p).unwrap();
                self.producer
                    .produce(partition, values[sent[p]..].to_vec())
                    .await;
            }
        }
    }
}

/// A server process SIGSTOPped while idle (so that it holds no lock of the
/// server's own that everyone else would then wait for), resumed when dropped.
pub(super) struct StoppedBackend(i32);

impl StoppedBackend {
    pub(super) async fn stop_idle(pool: &Pool, pid: i32) -> Self {
        loop {
            signal("STOP", pid);
            let stopped = Self(pid);
            let client = pool.get().await.unwrap();
            let state: Option<String> = client
                .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .unwrap()
                .get(0);
            if state.as_deref() == Some("idle") {
                return stopped;
            }
            drop(stopped); // caught in the middle of a statement: try again
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

impl Drop for StoppedBackend {
    fn drop(&mut self) {
        signal("CONT", self.0);
    }
}

fn signal(name: &str, pid: i32) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}
