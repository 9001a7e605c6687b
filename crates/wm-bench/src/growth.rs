//! `wm-bench growth`: whether ingest stays as fast into a database that a
//! year of traffic filled as into an empty one. The events are produced
//! once; then, alternating in each round, the service ingests them into an
//! empty database and into one prefilled by SQL with N movements
//! (`sql/grow.sql`: random keys, as real traffic leaves them), each timed
//! from the service's start to its last commit. Prints both rates, their
//! ratio, and the WAL PostgreSQL wrote per event: with random keys nearly
//! every index insert touches a page not written since the last
//! checkpoint, whose first write logs the whole page, so the WAL budget and
//! compression (docs/postgresql.md) decide the grown database's rate.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    error::BenchError,
    report, seed,
    under_test::{self, Fresh, Launch},
    wm::{Settings, create_topic, kafka, store},
};

const GROW: &str = include_str!("../sql/grow.sql");

/// Options of `wm-bench growth`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Movements stored before the timed ingest, one point of the curve each
    /// (0 is the empty database every point is compared with).
    #[arg(long, value_delimiter = ',', default_value = "5000000")]
    pub(crate) grown: Vec<u64>,
    /// Events ingested in each timed run.
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) events: usize,
    #[arg(long, default_value_t = 3)]
    pub(crate) partitions: i32,
    #[arg(long, default_value_t = 5000)]
    pub(crate) batch_size: usize,
    /// Rounds per point, each an empty run and a grown one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Where the run folder `<timestamp>/` is created.
    #[arg(long, default_value = "target/bench-growth")]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) common: crate::Common,
}

/// One timed ingest.
#[derive(Debug, Clone, Copy)]
struct Run {
    stored: u64,
    took: Duration,
    wal_bytes: u64,
    prefill: Duration,
}

pub(crate) async fn run(options: Options) -> Result<(PathBuf, String), BenchError> {
    let settings = Settings::load(&options.common.config_dir, None)?;
    let dir = crate::run_dir(&options.out)?;
    let client = kafka::connect(&settings.kafka).await?;
    let topic = Fresh::new(&settings, "growth").topic;
    let ids = create_topic(&client, &settings.kafka, &topic, options.partitions).await?;
    let messages = seed::generate(options.events / 3 + 1000, Some(options.events));
    let events = messages.len();
    let produced = seed::produce(&client, &topic, &ids, messages).await?;
    println!("growth: {events} events produced to {topic}");
    let mut table = String::from(
        "| stored movements | round | empty events/s | grown events/s | ratio | WAL/event empty | WAL/event grown | prefill |\n|---|---|---|---|---|---|---|---|\n",
    );
    for &grown in &options.grown {
        for round in 1..=options.rounds {
            let mut runs = Vec::new();
            for stored in [0, grown] {
                let label = format!("stored{stored}-r{round}");
                let launch = Launch {
                    binary: options.common.service_binary(),
                    config_dir: options.common.config_dir.clone(),
                    partitions: options.partitions,
                    batch_size: options.batch_size,
                    log: dir.join(format!("{label}.log")),
                };
                let run =
                    timed(&settings, &topic, &launch, stored, &produced.per_partition).await?;
                println!(
                    "growth: {stored} movements stored, round {round}: {:.0} events/s ({:.1} s), {:.0} WAL bytes/event{}",
                    rate(events, run.took),
                    run.took.as_secs_f64(),
                    per_event(run.wal_bytes, events),
                    if stored > 0 {
                        format!(" (prefill {:.0} s)", run.prefill.as_secs_f64())
                    } else {
                        String::new()
                    }
                );
                runs.push(run);
            }
            let (empty, full) = (runs[0], runs[1]);
            let ratio = rate(events, full.took) / rate(events, empty.took);
            println!(
                "growth: {grown} movements stored, round {round}: ratio grown / empty {ratio:.2}"
            );
            table.push_str(&format!(
                "| {} | {round} | {:.0} | {:.0} | {ratio:.2} | {:.0} B | {:.0} B | {:.0} s |\n",
                full.stored,
                rate(events, empty.took),
                rate(events, full.took),
                per_event(empty.wal_bytes, events),
                per_event(full.wal_bytes, events),
                full.prefill.as_secs_f64(),
            ));
        }
    }
    report::write(&dir, "growth.md", &table)?;
    Ok((dir, table))
}

/// Migrates a fresh database, stores `stored` movements in it, then times
/// the service ingesting the topic into it, and the WAL written meanwhile.
async fn timed(
    settings: &Settings,
    topic: &str,
    launch: &Launch,
    stored: u64,
    per_partition: &BTreeMap<i32, i64>,
) -> Result<Run, BenchError> {
    let mut fresh = Fresh::new(settings, "growth");
    fresh.topic = topic.to_owned();
    launch.migrate(&fresh).await?;
    // Two connections: this one, held throughout, and the offsets' looks.
    let pool = fresh.pool(settings, 2)?;
    let client = pool.get().await?;
    let prefill = Instant::now();
    if stored > 0 {
        let salt = uuid::Uuid::new_v4().simple().to_string();
        let sql = GROW
            .replace("{movements}", &stored.to_string())
            .replace("{products}", &(stored / 200).max(1).to_string())
            .replace("{salt}", &salt);
        client.batch_execute(&sql).await?;
    }
    // Both databases start the timed part alike: statistics known, no dirty
    // page left from the prefill.
    // (Two calls: VACUUM may not run in the one transaction a multi-statement string is.)
    client.batch_execute("VACUUM ANALYZE").await?;
    client.batch_execute("CHECKPOINT").await?;
    let prefill = prefill.elapsed();
    let wal =
        |row: tokio_postgres::Row| -> u64 { u64::try_from(row.get::<_, i64>(0)).unwrap_or(0) };
    let lsn = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint";
    let before = wal(client.query_one(lsn, &[]).await?);
    let started = Instant::now();
    let mut running = launch.start(&fresh).await?;
    let limit = Duration::from_secs(3600);
    let last = under_test::wait_committed(&pool, topic, per_partition, &mut running, limit).await?;
    let after = wal(client.query_one(lsn, &[]).await?);
    under_test::stop(running).await;
    drop(client);
    pool.close();
    store::drop_database(&fresh.database_url).await?;
    Ok(Run {
        stored,
        took: last - started,
        wal_bytes: after.saturating_sub(before),
        prefill,
    })
}

fn rate(events: usize, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(1e-9)
}

fn per_event(bytes: u64, events: usize) -> f64 {
    bytes as f64 / events.max(1) as f64
}
