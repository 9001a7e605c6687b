//! `wm-bench ingest`: how fast the service turns a backlog into committed
//! state, against what PostgreSQL alone can take. Per (partitions, batch
//! size): produce N events to a fresh topic once; then, in each of a few
//! rounds, start the service on a fresh database (migrated by that build)
//! and time from its start to the last commit, and right after apply the same records with
//! `store::write`, in batches of the same size, one transaction each, one
//! connection per partition as the service does, on another fresh database.
//! The ratio is the service's share of that ceiling. Rounds alternate the
//! two so that a change in the machine's speed (other tenants of its cores)
//! falls on both alike; the report gives the median round and every round.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use time::OffsetDateTime;
use tokio::task::JoinSet;

use crate::{
    cpu::{Snapshot, Usage},
    error::BenchError,
    ingest_report::{csv, markdown},
    report, seed,
    under_test::{self, Fresh, Launch},
    wm::{
        Bisection, Message, PartitionBatch, Record, Settings, StoreError, apply, classify,
        create_topic, kafka, migrate, produce, store,
    },
};

/// Options of `wm-bench ingest`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Events per configuration.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) events: usize,
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub(crate) batch_sizes: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "3,6")]
    pub(crate) partitions: Vec<i32>,
    /// Rounds per configuration (service, then ceiling, each on a fresh
    /// database); the report gives the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Where the run folder `<timestamp>/` is created.
    #[arg(long, default_value = "target/bench-ingest")]
    pub(crate) out: PathBuf,
    /// Another build of the service to run beside `--service` in every round
    /// (baseline first, then the service, on fresh databases), for a same-run
    /// A/B: this machine's speed varies between days, not within a run.
    #[arg(long)]
    pub(crate) baseline: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) common: crate::Common,
}

/// One round's figures.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Which build ran: `service`, or `baseline` with `--baseline`.
    pub(crate) binary: &'static str,
    pub(crate) partitions: i32,
    pub(crate) batch_size: usize,
    pub(crate) events: usize,
    /// 1 for the first round.
    pub(crate) round: u32,
    pub(crate) service: Duration,
    /// Part of `service` until `/health/live` answered (start-up).
    pub(crate) start_up: Duration,
    /// The ceiling run, or why PostgreSQL refused it.
    pub(crate) ceiling: Result<Ceiling, String>,
    /// CPU time by program from the service's start to its last commit.
    pub(crate) service_cpu: Usage,
    /// The service process's peak resident memory, bytes.
    pub(crate) peak_rss: Option<u64>,
}

/// What the ceiling's applies took.
#[derive(Debug, Clone)]
pub(crate) struct Ceiling {
    pub(crate) took: Duration,
    /// CPU time by program during the applies.
    pub(crate) cpu: Usage,
    /// Batches applied in halves because PostgreSQL ran out of lock memory
    /// for them, as the service applies them.
    pub(crate) splits: usize,
}

impl Row {
    pub(crate) fn service_rate(&self) -> f64 {
        self.events as f64 / self.service.as_secs_f64().max(1e-9)
    }
    pub(crate) fn ceiling_rate(&self) -> Option<f64> {
        let ceiling = self.ceiling.as_ref().ok()?;
        Some(self.events as f64 / ceiling.took.as_secs_f64().max(1e-9))
    }
    pub(crate) fn ratio(&self) -> Option<f64> {
        Some(self.service_rate() / self.ceiling_rate()?.max(1e-9))
    }
}

/// The rounds of one configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) rounds: Vec<Row>,
}

impl Config {
    pub(crate) fn first(&self) -> &Row {
        &self.rounds[0]
    }
    pub(crate) fn service_rate(&self) -> f64 {
        median(self.rounds.iter().map(Row::service_rate)).unwrap_or(0.0)
    }
    /// `None` when every ceiling failed.
    pub(crate) fn ceiling_rate(&self) -> Option<f64> {
        median(self.rounds.iter().filter_map(Row::ceiling_rate))
    }
    /// The median of the rounds' ratios (each round's service and ceiling
    /// ran one after the other).
    pub(crate) fn ratio(&self) -> Option<f64> {
        median(self.rounds.iter().filter_map(Row::ratio))
    }
    /// The round whose ratio is nearest the median: the one whose CPU
    /// figures the report shows.
    pub(crate) fn median_round(&self) -> &Row {
        let Some(ratio) = self.ratio() else {
            return self.first();
        };
        self.rounds
            .iter()
            .filter(|r| r.ratio().is_some())
            .min_by(|a, b| {
                let distance = |r: &Row| (r.ratio().unwrap_or(0.0) - ratio).abs();
                distance(a).total_cmp(&distance(b))
            })
            .unwrap_or_else(|| self.first())
    }
}

/// Bytes as MiB for a report, `-` when unknown.
pub(crate) fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.0} MiB", b as f64 / 1048576.0),
    )
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

pub(crate) async fn run(options: Options) -> Result<(PathBuf, String), BenchError> {
    let settings = Settings::load(&options.common.config_dir, None)?;
    let dir = crate::run_dir(&options.out)?;
    let client = kafka::connect(&settings.kafka).await?;
    let mut configs = Vec::new();
    for &partitions in &options.partitions {
        for &batch_size in &options.batch_sizes {
            // The topic is produced once; each round gets a database of its own.
            let topic = Fresh::new(&settings, "ingest").topic;
            let ids = create_topic(&client, &settings.kafka, &topic, partitions).await?;
            let messages = // About 3.9 records per movement: a third of `events` movements is
            // always enough, and the surplus is cut.
            seed::generate(options.events / 3 + 1000, Some(options.events));
            let events = messages.len();
            let produced = seed::produce(&client, &topic, &ids, messages.clone()).await?;
            let mut binaries = Vec::new();
            if let Some(baseline) = &options.baseline {
                binaries.push(("baseline", baseline.clone()));
            }
            binaries.push(("service", options.common.service_binary()));
            let mut rounds: Vec<Vec<Row>> = vec![Vec::new(); binaries.len()];
            for round in 1..=options.rounds {
                let mut timed = Vec::new();
                for (label, binary) in &binaries {
                    // A fresh database per run: the service consumes the
                    // topic from its start again.
                    let mut database = Fresh::new(&settings, "ingest");
                    database.topic.clone_from(&topic);
                    let launch = Launch {
                        binary: binary.clone(),
                        config_dir: options.common.config_dir.clone(),
                        partitions,
                        batch_size,
                        log: dir.join(format!("{label}-p{partitions}-b{batch_size}-r{round}.log")),
                    };
                    timed.push(
                        time_service(&settings, &database, &launch, &produced.per_partition)
                            .await?,
                    );
                }
                // PostgreSQL may refuse the ceiling's shape: that is a
                // finding, not a crash.
                let ceiling = ceiling(&settings, &ids, batch_size, messages.clone())
                    .await
                    .map_err(|e| e.to_string());
                for (i, run) in timed.into_iter().enumerate() {
                    let row = Row {
                        binary: binaries[i].0,
                        partitions,
                        batch_size,
                        events,
                        round,
                        service: run.took,
                        start_up: run.start_up,
                        ceiling: ceiling.clone(),
                        service_cpu: run.cpu,
                        peak_rss: run.peak_rss,
                    };
                    print_round(&row, options.rounds);
                    rounds[i].push(row);
                }
            }
            for rounds in rounds {
                let config = Config { rounds };
                print_config(&config);
                configs.push(config);
            }
        }
    }
    let table = markdown(&configs);
    report::write(&dir, "ingest.md", &table)?;
    report::write(&dir, "ingest.csv", &csv(&configs))?;
    Ok((dir, table))
}

/// One timed run of the service.
struct Timed {
    /// From its start to the last commit.
    took: Duration,
    /// The start-up's part of it.
    start_up: Duration,
    /// CPU time by program meanwhile.
    cpu: Usage,
    /// The process's peak resident memory, bytes.
    peak_rss: Option<u64>,
}

/// Starts the service on `fresh`'s new database and times it from its start
/// to the last commit.
async fn time_service(
    settings: &Settings,
    fresh: &Fresh,
    launch: &Launch,
    per_partition: &BTreeMap<i32, i64>,
) -> Result<Timed, BenchError> {
    launch.migrate(fresh).await?;
    let pool = fresh.pool(settings, 1)?;
    let before = Snapshot::take();
    let started = Instant::now();
    let mut running = launch.start(fresh).await?;
    let start_up = started.elapsed();
    let limit = Duration::from_secs(900);
    let last =
        under_test::wait_committed(&pool, &fresh.topic, per_partition, &mut running, limit).await?;
    // Before the stop: the service's own time ends with its process.
    let cpu = Snapshot::take().since(&before);
    let peak_rss = running.peak_rss();
    under_test::stop(running).await;
    pool.close();
    store::drop_database(&fresh.database_url).await?;
    Ok(Timed {
        took: last - started,
        start_up,
        cpu,
        peak_rss,
    })
}

fn print_round(row: &Row, rounds: u32) {
    let ceiling = match &row.ceiling {
        Ok(c) => format!(
            "{:.0} events/s ({:.2} s{})",
            row.ceiling_rate().unwrap_or(0.0),
            c.took.as_secs_f64(),
            match c.splits {
                0 => String::new(),
                n => format!(", {n} batches in halves for lock memory"),
            }
        ),
        Err(e) => format!("failed: {}", e.replace('\n', " ")),
    };
    println!(
        "ingest: {} {} partitions, batch {:>5}, round {}/{rounds}: {:>7.0} events/s ({:.2} s, live after {:.2} s, peak RSS {}), PostgreSQL ceiling {ceiling}, ratio {}",
        row.binary,
        row.partitions,
        row.batch_size,
        row.round,
        row.service_rate(),
        row.service.as_secs_f64(),
        row.start_up.as_secs_f64(),
        mib(row.peak_rss),
        percent(row.ratio()),
    );
    println!(
        "        CPU s, service phase: {}; ceiling: {}",
        row.service_cpu.summary(),
        row.ceiling
            .as_ref()
            .map_or_else(|_| "-".to_owned(), |c| c.cpu.summary())
    );
}

fn print_config(config: &Config) {
    let first = config.first();
    let ratios: Vec<String> = config.rounds.iter().map(|r| percent(r.ratio())).collect();
    println!(
        "ingest: {} {} partitions, batch {:>5}, median of {} rounds: {:.0} events/s, PostgreSQL ceiling {}, ratio {} (rounds: {}), peak RSS {}",
        first.binary,
        first.partitions,
        first.batch_size,
        config.rounds.len(),
        config.service_rate(),
        config
            .ceiling_rate()
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.0} events/s")),
        percent(config.ratio()),
        ratios.join(", "),
        mib(config.rounds.iter().filter_map(|r| r.peak_rss).max()),
    );
}

/// `82%`, or `-` without a ratio.
pub(crate) fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{:.0}%", r * 100.0))
}

/// Applies `messages` straight from memory, split as the producer splits
/// them, on a fresh database; returns the time of the applies and the CPU
/// they took.
async fn ceiling(
    settings: &Settings,
    partitions: &[i32],
    batch_size: usize,
    messages: Vec<Message>,
) -> Result<Ceiling, BenchError> {
    let fresh = Fresh::new(settings, "ceiling");
    let mut with_url = settings.clone();
    with_url.postgres.url = fresh.database_url.clone().into();
    migrate(&with_url).await?;
    let now = OffsetDateTime::now_utc();
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for m in messages {
        let partition = produce::partition_of(m.key, partitions);
        let records = by_partition.entry(partition).or_default();
        let offset = i64::try_from(records.len()).unwrap_or(i64::MAX);
        records.push(Record::new(offset, Some(now), Some(m.value)));
    }
    let timed = apply_all(&fresh, settings, by_partition, batch_size).await;
    store::drop_database(&fresh.database_url).await?;
    timed
}

async fn apply_all(
    fresh: &Fresh,
    settings: &Settings,
    by_partition: BTreeMap<i32, Vec<Record>>,
    batch_size: usize,
) -> Result<Ceiling, BenchError> {
    let pool = fresh.pool(settings, by_partition.len())?;
    let mut clients = Vec::new();
    for _ in 0..by_partition.len() {
        clients.push(pool.get().await?);
    }
    let before = Snapshot::take();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for ((partition, records), mut client) in by_partition.into_iter().zip(clients) {
        let topic = fresh.topic.clone();
        tasks.spawn(async move {
            let (mut expected, mut splits) = (None, 0);
            for chunk in records.chunks(batch_size) {
                let batch = PartitionBatch {
                    topic: &topic,
                    partition,
                    expected_offset: expected,
                    records: chunk,
                };
                let (next, split) = apply_in_halves(&mut client, &batch).await?;
                expected = Some(next);
                splits += split;
            }
            Ok::<_, BenchError>(splits)
        });
    }
    let mut splits = 0;
    while let Some(done) = tasks.join_next().await {
        splits += done.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    let took = started.elapsed();
    let cpu = Snapshot::take().since(&before);
    pool.close();
    Ok(Ceiling { took, cpu, splits })
}

/// Applies `batch` in one transaction, or, where PostgreSQL refuses it as a
/// whole (out of lock memory for it), in halves down to what fits, as the
/// service does (`ingest::apply::apply_batch`); returns the next offset and how
/// many times it split.
async fn apply_in_halves(
    client: &mut store::Client,
    batch: &PartitionBatch<'_>,
) -> Result<(i64, usize), StoreError> {
    let mut bisection = Bisection::new(batch.records.len());
    let mut expected = batch.expected_offset;
    while let Some(range) = bisection.next_range() {
        let part = PartitionBatch {
            records: &batch.records[range.clone()],
            expected_offset: expected,
            ..*batch
        };
        match apply(client, &part).await {
            Ok(outcome) => expected = Some(outcome.next_offset),
            Err(e) => {
                if !(classify(&e).splits_batch() && bisection.split(range)) {
                    return Err(e);
                }
            }
        }
    }
    Ok((expected.unwrap_or_default(), bisection.splits()))
}
