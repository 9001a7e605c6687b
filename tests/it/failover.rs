//! Failover in seconds: a partition is held as an advisory lock on its
//! instance's own PostgreSQL session, so when the instance is
//! SIGKILLed the server frees its partitions at once, and a standby takes
//! them on its next try (`consumer.takeover_poll_ms`). Measured here on real
//! processes while events keep arriving; the survivor takes every partition
//! (the dead instance stops counting for the fair share at once), and no
//! event is lost or applied twice. A holder whose session stops answering, or
//! that a real network partition cuts off ([`netsplit`]), gives its
//! partitions up on its own, before the server could hand them to anyone
//! else; and the offset compare-and-set fences whatever overlap is left.

mod netsplit;
mod processes;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use warehouse_monitor::{
    ingest::{apply::apply_once, decode::decode_all},
    kafka::Record,
    store::{StoreError, write::PartitionBatch},
};

use crate::support::{
    helpers::{
        self, Ev, Patience, Producer, ServiceProcess, TestApp, committed_offsets, eventually,
        free_port, test_settings,
    },
    postgres::OwnPostgres,
    stream,
};
use processes::{
    Feed, StoppedBackend, finish, last_commits, members, owners, prepare, wait_for_commits,
};

/// The bound, from the SIGKILL to the standby's first commit.
const REQUIRED: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_standby_resumes_a_killed_instances_partition_within_two_seconds() {
    let (settings, pool) = prepare(1).await;
    let topic = settings.kafka.topic.clone();
    let mut first = ServiceProcess::start(&settings);
    let first_pid = eventually(20, || async {
        let owners = owners(&pool, &topic).await;
        owners
            .keys()
            .next()
            .copied()
            .ok_or("the first instance takes the partition")
    })
    .await;
    let standby = ServiceProcess::start(&settings);
    let standby_pid = eventually(20, || async {
        let members = members(&pool, &topic).await;
        members
            .iter()
            .copied()
            .find(|pid| *pid != first_pid)
            .ok_or_else(|| format!("the standby joins: sessions {members:?}"))
    })
    .await;

    let producer = Arc::new(Producer::connect(&settings).await);
    let stream = Arc::new(stream::generate(81, 600, 1, true));
    let feed = Feed::start(Arc::clone(&producer), Arc::clone(&stream));
    wait_for_commits(&pool, &topic, 1, 60).await;
    assert_eq!(
        owners(&pool, &topic).await,
        BTreeMap::from([(first_pid, vec![0])]),
        "the first instance consumes; the standby holds nothing"
    );

    let killed = Instant::now();
    first.kill();
    let last = last_commits(&pool, &topic, standby_pid).await;
    let held_after = std::sync::Mutex::new(None);
    let (resumed_after, resumed_at) = eventually(
        Patience::secs(20).every(Duration::from_millis(5)),
        || async {
            if owners(&pool, &topic).await.get(&standby_pid) == Some(&vec![0]) {
                held_after.lock().unwrap().get_or_insert(killed.elapsed());
            }
            let now = committed_offsets(&pool, &topic).await;
            let offset = now.get(&0).copied().unwrap_or(0);
            (offset > last[&0])
                .then(|| (killed.elapsed(), offset))
                .ok_or_else(|| format!("the standby commits beyond offset {}", last[&0]))
        },
    )
    .await;
    println!(
        "takeover after SIGKILL: {:.3} s (the standby held the partition after {:.3} s; \
         the killed instance's last commit ended at offset {}, the standby's first at {resumed_at})",
        resumed_after.as_secs_f64(),
        held_after
            .into_inner()
            .unwrap()
            .unwrap_or(resumed_after)
            .as_secs_f64(),
        last[&0],
    );
    assert!(
        resumed_after <= REQUIRED,
        "the standby resumed {resumed_after:?} after the SIGKILL (required: {REQUIRED:?})"
    );

    feed.finish().await;
    helpers::wait_consumed(&pool, &topic, &producer).await;
    stream.assert_stock(&pool).await;
    finish(standby, pool, &settings).await;
}

#[tokio::test]
async fn the_survivor_takes_every_partition_of_a_killed_instance() {
    let (settings, pool) = prepare(3).await;
    let topic = settings.kafka.topic.clone();
    let mut first = ServiceProcess::start(&settings);
    let first_pid = eventually(20, || async {
        let owners = owners(&pool, &topic).await;
        owners
            .iter()
            .find(|(_, held)| held.len() == 3)
            .map(|(pid, _)| *pid)
            .ok_or_else(|| format!("the first instance takes all 3 partitions: {owners:?}"))
    })
    .await;
    let second = ServiceProcess::start(&settings);
    // ceil(3 / 2) = 2: the first hands one partition back, the second takes it.
    let second_pid = eventually(20, || async {
        let owners = owners(&pool, &topic).await;
        let first_holds = owners.get(&first_pid).map_or(0, Vec::len);
        let second = owners
            .iter()
            .find(|(pid, held)| **pid != first_pid && held.len() == 1);
        match second {
            Some((pid, _)) if first_holds == 2 => Ok(*pid),
            _ => Err(format!("the partitions are shared 2 + 1: {owners:?}")),
        }
    })
    .await;

    let producer = Arc::new(Producer::connect(&settings).await);
    let stream = Arc::new(stream::generate(82, 900, 3, true));
    let feed = Feed::start(Arc::clone(&producer), Arc::clone(&stream));
    wait_for_commits(&pool, &topic, 3, 30).await;

    let killed = Instant::now();
    first.kill();
    let last = last_commits(&pool, &topic, second_pid).await;
    let all_held_after = std::sync::Mutex::new(None);
    let resumed_after = eventually(
        Patience::secs(20).every(Duration::from_millis(5)),
        || async {
            let owners = owners(&pool, &topic).await;
            if owners.get(&second_pid) == Some(&vec![0, 1, 2]) {
                all_held_after
                    .lock()
                    .unwrap()
                    .get_or_insert(killed.elapsed());
            }
            let now = committed_offsets(&pool, &topic).await;
            let behind: Vec<i32> = (0..3)
                .filter(|p| now.get(p).copied().unwrap_or(0) <= last[p])
                .collect();
            behind.is_empty().then(|| killed.elapsed()).ok_or_else(|| {
                format!(
                    "the survivor commits on every partition; not yet on {behind:?} ({owners:?})"
                )
            })
        },
    )
    .await;
    println!(
        "survivor after SIGKILL: held all 3 partitions after {:.3} s, committed on each after {:.3} s",
        all_held_after
            .into_inner()
            .unwrap()
            .unwrap_or(resumed_after)
            .as_secs_f64(),
        resumed_after.as_secs_f64(),
    );
    assert!(
        resumed_after <= REQUIRED,
        "the survivor consumed every partition {resumed_after:?} after the SIGKILL (required: {REQUIRED:?})"
    );

    feed.finish().await;
    helpers::wait_consumed(&pool, &topic, &producer).await;
    stream.assert_stock(&pool).await;
    finish(second, pool, &settings).await;
}

/// A session that stops answering (its server process SIGSTOPped: the socket
/// stays open and the kernel still acknowledges, so the server never ends
/// it) is given up by its holder within half of `lease_ttl_ms`, sooner than
/// the server would end a silent session. Its partitions stay unconsumed
/// while the stopped process holds them, and are consumed again once it is
/// gone.
#[tokio::test]
async fn a_holder_whose_session_stops_answering_stops_consuming_first() {
    let port = free_port();
    let pg = OwnPostgres::init(port);
    pg.start();
    let mut settings = test_settings(2);
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/wm_failover").into();
    settings.consumer.lease_ttl_ms = 2000;
    let silence = settings.consumer.lease_ttl();
    let app = TestApp::spawn_with(settings).await;
    let topic = app.settings.kafka.topic.clone();
    let pid = eventually(20, || async {
        let owners = owners(&app.pool, &topic).await;
        owners
            .iter()
            .find(|(_, held)| held.len() == 2)
            .map(|(pid, _)| *pid)
            .ok_or_else(|| format!("the instance takes both partitions: {owners:?}"))
    })
    .await;
    let stream = stream::generate(83, 200, 2, true);
    let half = |p: usize| stream.partitions[p].len() / 2;
    for (p, values) in (0..).zip(&stream.partitions) {
        app.produce(p, values[..values.len() / 2].to_vec()).await;
    }
    app.wait_consumed().await;

    let stopped = StoppedBackend::stop_idle(&app.pool, pid).await;
    let silent_since = Instant::now();
    eventually(
        Patience::secs(10).every(Duration::from_millis(5)),
        || async {
            let held = app.owned();
            held.is_empty()
                .then_some(())
                .ok_or_else(|| format!("the holder gives up; it still holds {held:?}"))
        },
    )
    .await;
    let gave_up = silent_since.elapsed();
    println!(
        "holder gave its partitions up {:.3} s after its session stopped answering \
         (its deadline: {:?}; the server ends a silent session after {silence:?})",
        gave_up.as_secs_f64(),
        silence / 2,
    );
    assert!(gave_up < silence, "the holder gave up after {gave_up:?}");

    // The stopped process still holds both partitions: nobody consumes them.
    for (p, values) in (0..).zip(&stream.partitions) {
        app.produce(p, values[values.len() / 2..].to_vec()).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let committed = committed_offsets(&app.pool, &topic).await;
    for p in 0..2 {
        assert_eq!(
            committed.get(&i32::try_from(p).unwrap()).copied(),
            Some(i64::try_from(half(p)).unwrap()),
            "partition {p} is not consumed while its lock is held by the stopped session"
        );
    }
    assert_eq!(
        owners(&app.pool, &topic).await.get(&pid).map(Vec::len),
        Some(2)
    );

    // Resumed, it finds its client gone and exits, freeing the partitions.
    drop(stopped);
    app.wait_consumed().await;
    stream.assert_stock(&app.pool).await;
    app.stop().await;
}

/// A real network partition between the holder and PostgreSQL: its packets
/// are dropped both ways, and nothing tells either side. The holder gives its
/// partition up within half of `lease_ttl_ms` of silence; the server ends the
/// holder's session after `lease_ttl_ms` of silence (the keepalive settings
/// of that session), which frees the partition for the standby. So the holder
/// has stopped before the standby starts, and nothing is applied twice.
/// (The holder is quiet when cut off: a batch transaction in flight would
/// hold its locks for as long as the server's default keepalives allow.)
#[tokio::test]
async fn a_cut_off_holder_stops_before_the_server_frees_its_partition_for_a_standby() {
    let port = free_port();
    let network = netsplit::Network::new(port, 2);
    let pg = OwnPostgres::init(port);
    let addresses = format!("{},{}", network.server(0), network.server(1));
    pg.start_in_netns(network.server_ns(), &addresses);
    let mut holder_settings = test_settings(1);
    holder_settings.consumer.lease_ttl_ms = 2000;
    let silence = holder_settings.consumer.lease_ttl();
    let poll = holder_settings.consumer.takeover_poll();
    let url = |i| {
        format!(
            "postgres://postgres@{}:{port}/wm_netsplit",
            network.server(i)
        )
    };
    holder_settings.postgres.url = url(0).into();
    let mut standby_settings = holder_settings.clone();
    standby_settings.postgres.url = url(1).into();

    let holder = TestApp::spawn_with(holder_settings).await;
    eventually(20, || async {
        holder
            .statuses
            .get(0)
            .is_some_and(|s| s.is_owned())
            .then_some(())
    })
    .await;
    let standby = TestApp::spawn_with(standby_settings).await;
    let topic = standby.settings.kafka.topic.clone();
    let holder_pid = eventually(20, || async {
        let members = members(&standby.pool, &topic).await;
        let owners = owners(&standby.pool, &topic).await;
        let holder = owners.keys().next().copied();
        (members.len() == 2)
            .then_some(holder)
            .flatten()
            .ok_or_else(|| format!("the standby joins: sessions {members:?}, owners {owners:?}"))
    })
    .await;
    let stream = stream::generate(84, 300, 1, true);
    let mid = stream.partitions[0].len() / 2;
    holder
        .produce(0, stream.partitions[0][..mid].to_vec())
        .await;
    holder.wait_consumed().await;

    network.cut(0);
    let cut = Instant::now();
    let (mut stopped, mut taken) = (None, None);
    while stopped.is_none() || taken.is_none() {
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "30 s after the cut: the holder stopped after {stopped:?}, the standby took over after {taken:?}"
        );
        if stopped.is_none() && !holder.statuses.get(0).is_some_and(|s| s.is_owned()) {
            stopped = Some(cut.elapsed());
        }
        if taken.is_none() {
            let owners = owners(&standby.pool, &topic).await;
            if owners.keys().any(|pid| *pid != holder_pid) {
                taken = Some(cut.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (stopped, taken) = (stopped.unwrap(), taken.unwrap());
    println!(
        "network partition: the cut-off holder stopped after {:.3} s; the server freed its \
         partition and the standby took it after {:.3} s (lease_ttl_ms {})",
        stopped.as_secs_f64(),
        taken.as_secs_f64(),
        silence.as_millis(),
    );
    assert!(
        stopped < taken,
        "the holder stopped after the standby took over"
    );
    assert!(
        stopped <= silence / 2 + poll,
        "the holder stopped after {stopped:?}"
    );
    assert!(
        taken >= silence - poll && taken <= silence * 2,
        "the server freed the partition after {taken:?} of silence"
    );

    standby
        .produce(0, stream.partitions[0][mid..].to_vec())
        .await;
    standby.wait_consumed().await;
    stream.assert_stock(&standby.pool).await;
    network.heal(0);
    holder.stop_keeping_data().await;
    standby.stop_keeping_data().await;
}

/// The fence under every hand-over, which correctness rests on rather than
/// on the locks: two instances that both believe they hold a partition (one
/// cut off with a batch in flight, and its successor) read the same offset
/// and apply the same records at the same time, on connections of their
/// own. Exactly one commits; the offset compare-and-set refuses the other,
/// whose transaction changes nothing.
#[tokio::test]
async fn two_holders_of_one_partition_never_both_commit_the_same_offsets() {
    let settings = test_settings(1);
    let _migrated = warehouse_monitor::app::startup::migrate(&settings)
        .await
        .unwrap();
    let pool = warehouse_monitor::store::pool(&settings.postgres).unwrap();
    let topic = settings.kafka.topic.as_str();
    let (wh, product) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mut expected = None;
    for round in 0..5_i64 {
        let records: Vec<Record> = (round * 100..(round + 1) * 100)
            .map(|offset| {
                let event = Ev::arrival(uuid::Uuid::new_v4(), wh, product, 1);
                Record::new(
                    offset,
                    Some(time::OffsetDateTime::now_utc()),
                    Some(event.bytes()),
                )
            })
            .collect();
        let batch = PartitionBatch {
            topic,
            partition: 0,
            expected_offset: expected,
            records: &records,
        };
        let (mut one, mut other) = (pool.get().await.unwrap(), pool.get().await.unwrap());
        let (a, b) = tokio::join!(
            apply_once(&mut one, &batch, decode_all(&records)),
            apply_once(&mut other, &batch, decode_all(&records)),
        );
        let refused =
            |r: &Result<_, StoreError>| matches!(r, Err(StoreError::OffsetConflict { .. }));
        assert!(
            (a.is_ok() && refused(&b)) || (refused(&a) && b.is_ok()),
            "round {round}: exactly one commits: {:?} and {:?}",
            a.map(|_| ()),
            b.map(|_| ()),
        );
        expected = Some((round + 1) * 100);
    }
    assert_eq!(
        committed_offsets(&pool, topic).await,
        HashMap::from([(0, 500)])
    );
    assert_eq!(
        helpers::stock(&pool, wh, product).await,
        Some(500),
        "each record applied once"
    );
    pool.close();
    warehouse_monitor::store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
}

/// A batch in flight on a cut-off instance must not hold its locks for the
/// server's default keepalive time (two hours): batch connections ask the
/// server to drop them after about 5 s of silence, and the server applies it.
#[tokio::test]
async fn batch_connections_are_dropped_by_the_server_when_silent() {
    let app = TestApp::spawn(1).await;
    let store = warehouse_monitor::store::Store::new(&app.settings.postgres).unwrap();
    let client = store.client().await.unwrap();
    let mut seen = BTreeMap::new();
    for setting in [
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
    ] {
        let row = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .unwrap();
        seen.insert(setting, row.get::<_, String>(0));
    }
    let secs = |s: &str| seen[s].trim_end_matches('s').parse::<u64>().unwrap();
    let worst = secs("tcp_keepalives_idle")
        + secs("tcp_keepalives_interval") * secs("tcp_keepalives_count");
    println!("batch connection keepalives: {seen:?}, dropped after about {worst} s of silence");
    // 0 means the kernel's defaults: probes after two hours.
    assert!(seen.keys().all(|s| secs(s) > 0) && worst <= 10, "{seen:?}");
    drop(client);
    app.stop().await;
}
