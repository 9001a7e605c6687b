//! `wm-bench ingest`: how fast the service turns a backlog into committed
//! state, against what PostgreSQL alone can take. Per (partitions, batch
//! size): produce N events to a fresh topic, start the service on a fresh,
//! migrated database and time from its start to the last commit; then apply
//! the same records with `store::apply`, in batches of the same size, one
//! transaction each, one connection per partition as the service does, on
//! another fresh database. The ratio is the service's share of that ceiling.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use time::OffsetDateTime;
use tokio::task::JoinSet;

use crate::{
    cpu::{Program, Snapshot, Usage},
    error::BenchError,
    report, seed,
    service::{self, Fresh, Launch, Service},
    wm::{Message, PartitionBatch, Record, Settings, apply, create_topic, kafka, migrate, store},
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
    /// Where the run folder `<timestamp>/` is created.
    #[arg(long, default_value = "target/bench-ingest")]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) common: crate::Common,
}

/// One configuration's figures.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) partitions: i32,
    pub(crate) batch_size: usize,
    pub(crate) events: usize,
    pub(crate) service: Duration,
    /// Part of `service` until `/health/live` answered (start-up).
    pub(crate) start_up: Duration,
    /// The ceiling run, or why PostgreSQL refused it.
    pub(crate) ceiling: Result<Ceiling, String>,
    /// CPU time by program from the service's start to its last commit.
    pub(crate) service_cpu: Usage,
}

/// What the ceiling's applies took.
#[derive(Debug, Clone)]
pub(crate) struct Ceiling {
    pub(crate) took: Duration,
    /// CPU time by program during the applies.
    pub(crate) cpu: Usage,
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
    fn ceiling_cells(&self) -> (String, String, String) {
        match (&self.ceiling, self.ceiling_rate(), self.ratio()) {
            (Ok(c), Some(rate), Some(ratio)) => (
                format!("{:.2}", c.took.as_secs_f64()),
                format!("{rate:.0}"),
                format!("{:.0}%", ratio * 100.0),
            ),
            (Err(e), ..) => {
                let e = e.replace('\n', " ").replace('|', "/");
                (format!("failed: {e}"), "-".into(), "-".into())
            }
            _ => ("-".into(), "-".into(), "-".into()),
        }
    }
}

pub(crate) async fn run(options: Options) -> Result<(PathBuf, String), BenchError> {
    let settings = Settings::load(&options.common.config_dir, None)?;
    let dir = crate::run_dir(&options.out)?;
    let client = kafka::connect(&settings.kafka).await?;
    let mut rows = Vec::new();
    for &partitions in &options.partitions {
        for &batch_size in &options.batch_sizes {
            let fresh = Fresh::new(&settings, "ingest");
            let ids = create_topic(&client, &settings.kafka, &fresh.topic, partitions).await?;
            let messages = // About 3.9 records per movement: a third of `events` movements is
            // always enough, and the surplus is cut.
            seed::generate(options.events / 3 + 1000, Some(options.events));
            let events = messages.len();
            let copy = messages.clone();
            let produced = seed::produce(&client, &fresh.topic, &ids, messages).await?;

            let mut with_url = settings.clone();
            with_url.postgres.url = fresh.database_url.clone();
            migrate(&with_url).await?;
            let launch = Launch {
                binary: options.common.service_binary(),
                config_dir: options.common.config_dir.clone(),
                partitions,
                batch_size,
                log: dir.join(format!("service-p{partitions}-b{batch_size}.log")),
            };
            let pool = fresh.pool(&settings, 1)?;
            let before = Snapshot::take();
            let started = Instant::now();
            let mut running = Service::start(&launch, &fresh).await?;
            let start_up = started.elapsed();
            let limit = Duration::from_secs(900);
            let last = service::wait_committed(
                &pool,
                &fresh.topic,
                &produced.per_partition,
                &mut running,
                limit,
            )
            .await?;
            let service_time = last - started;
            // Before the stop: the service's own time ends with its process.
            let service_cpu = Snapshot::take().since(&before);
            running.stop().await;
            pool.close();
            store::drop_database(&fresh.database_url).await?;

            // PostgreSQL may refuse the ceiling's shape (e.g. its lock table
            // is too small for the batch): that is a finding, not a crash.
            let ceiling = ceiling(&settings, &ids, batch_size, copy)
                .await
                .map_err(|e| e.to_string());
            let row = Row {
                partitions,
                batch_size,
                events,
                service: service_time,
                start_up,
                ceiling,
                service_cpu,
            };
            let (ceiling_s, ceiling_rate, ratio) = row.ceiling_cells();
            println!(
                "ingest: {} partitions, batch {:>5}: service {:>7.0} events/s ({:.2} s, live after {:.2} s), PostgreSQL ceiling {}, ratio {ratio}",
                partitions,
                batch_size,
                row.service_rate(),
                row.service.as_secs_f64(),
                row.start_up.as_secs_f64(),
                match &row.ceiling {
                    Ok(_) => format!("{ceiling_rate} events/s ({ceiling_s} s)"),
                    Err(_) => ceiling_s,
                },
            );
            println!(
                "        CPU s, service phase: {}; ceiling: {}",
                row.service_cpu.summary(),
                row.ceiling
                    .as_ref()
                    .map_or_else(|_| "-".to_owned(), |c| c.cpu.summary())
            );
            rows.push(row);
        }
    }
    let table = markdown(&rows);
    report::write(&dir, "ingest.md", &table)?;
    report::write(&dir, "ingest.csv", &csv(&rows))?;
    Ok((dir, table))
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
    with_url.postgres.url = fresh.database_url.clone();
    migrate(&with_url).await?;
    let now = OffsetDateTime::now_utc();
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for m in messages {
        let index = (m.key.as_u128() % partitions.len().max(1) as u128) as usize;
        let records = by_partition.entry(partitions[index]).or_default();
        let offset = i64::try_from(records.len()).unwrap_or(i64::MAX);
        records.push(Record::new(offset, now, Some(m.value)));
    }
    let timed = apply_all(&fresh, settings, by_partition, batch_size).await;
    store::drop_database(&fresh.database_url).await?;
    timed
}

/// One task and connection per partition, batches in offset order.
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
            let mut expected = None;
            for chunk in records.chunks(batch_size) {
                let batch = PartitionBatch {
                    topic: &topic,
                    partition,
                    expected_offset: expected,
                    records: chunk,
                };
                let outcome = apply(&mut client, &batch).await?;
                expected = Some(outcome.next_offset);
            }
            Ok::<_, BenchError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    let took = started.elapsed();
    let cpu = Snapshot::take().since(&before);
    pool.close();
    Ok(Ceiling { took, cpu })
}

pub(crate) fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| partitions | batch size | events | service s (start-up) | service events/s | PostgreSQL ceiling s | ceiling events/s | service / ceiling |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let (ceiling_s, ceiling_rate, ratio) = r.ceiling_cells();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} ({:.2}) | {:.0} | {} | {} | {} |",
            r.partitions,
            r.batch_size,
            r.events,
            r.service.as_secs_f64(),
            r.start_up.as_secs_f64(),
            r.service_rate(),
            ceiling_s,
            ceiling_rate,
            ratio
        );
    }
    out.push_str(
        "\nCPU seconds by program (both cores together; 2 per second of the phase), from `/proc`:\n\n\
         | partitions | batch size | phase | PostgreSQL | service | Redis | broker | wm-bench | other | idle |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        // A ceiling that failed measured nothing: no row.
        let ceiling = r.ceiling.as_ref().ok().map(|c| ("ceiling", &c.cpu));
        for (phase, cpu) in std::iter::once(("service", &r.service_cpu)).chain(ceiling) {
            let _ = write!(out, "| {} | {} | {phase} |", r.partitions, r.batch_size);
            for secs in cpu_cells(cpu) {
                let _ = write!(out, " {secs:.2} |");
            }
            out.push('\n');
        }
    }
    out
}

/// The programs of the CPU table and CSV, in their order (idle follows).
const CPU_COLUMNS: [Program; 6] = [
    Program::Postgres,
    Program::Service,
    Program::Redis,
    Program::Broker,
    Program::Bench,
    Program::Other,
];

/// The CPU seconds of one phase in the columns' order, idle last.
fn cpu_cells(cpu: &Usage) -> impl Iterator<Item = f64> + '_ {
    CPU_COLUMNS
        .iter()
        .map(|program| cpu.secs(*program))
        .chain(std::iter::once(cpu.idle))
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "partitions,batch_size,events,service_s,start_up_s,service_events_per_s,ceiling_s,ceiling_events_per_s,ratio,ceiling_error",
    );
    for phase in ["service", "ceiling"] {
        for program in CPU_COLUMNS {
            let _ = write!(out, ",{phase}_cpu_{}_s", program.name());
        }
        let _ = write!(out, ",{phase}_idle_s");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "{},{},{},{:.3},{:.3},{:.0},{},{},{},{}",
            r.partitions,
            r.batch_size,
            r.events,
            r.service.as_secs_f64(),
            r.start_up.as_secs_f64(),
            r.service_rate(),
            r.ceiling
                .as_ref()
                .map_or(String::new(), |c| format!("{:.3}", c.took.as_secs_f64())),
            r.ceiling_rate()
                .map_or(String::new(), |v| format!("{v:.0}")),
            r.ratio().map_or(String::new(), |v| format!("{v:.4}")),
            r.ceiling.as_ref().err().map_or(String::new(), |e| format!(
                "\"{}\"",
                e.replace('"', "'").replace('\n', " ")
            )),
        );
        for secs in cpu_cells(&r.service_cpu) {
            let _ = write!(out, ",{secs:.2}");
        }
        match &r.ceiling {
            Ok(c) => cpu_cells(&c.cpu).for_each(|secs| {
                let _ = write!(out, ",{secs:.2}");
            }),
            // A ceiling that failed measured nothing: empty cells.
            Err(_) => out.push_str(&",".repeat(CPU_COLUMNS.len() + 1)),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_service_over_ceiling() {
        let row = Row {
            partitions: 3,
            batch_size: 1000,
            events: 1000,
            service: Duration::from_secs(2),
            start_up: Duration::from_millis(250),
            ceiling: Ok(Ceiling {
                took: Duration::from_secs(1),
                cpu: Usage::default(),
            }),
            service_cpu: Usage {
                by_program: BTreeMap::from([(Program::Postgres, 1.5), (Program::Redis, 0.25)]),
                idle: 0.5,
            },
        };
        assert_eq!(row.ratio(), Some(0.5));
        let md = markdown(std::slice::from_ref(&row));
        assert!(
            md.contains("| 3 | 1000 | 1000 | 2.00 (0.25) | 500 | 1.00 | 1000 | 50% |"),
            "{md}"
        );
        assert!(
            md.contains("| 3 | 1000 | service | 1.50 | 0.00 | 0.25 | 0.00 | 0.00 | 0.00 | 0.50 |"),
            "{md}"
        );
        let line = csv(std::slice::from_ref(&row));
        let line = line.lines().nth(1).unwrap();
        assert!(
            line.ends_with(
                ",0.5000,,1.50,0.00,0.25,0.00,0.00,0.00,0.50,0.00,0.00,0.00,0.00,0.00,0.00,0.00"
            ),
            "{line}"
        );
        let failed = Row {
            ceiling: Err("out of shared memory".into()),
            ..row
        };
        assert_eq!(failed.ratio(), None);
        let md = markdown(std::slice::from_ref(&failed));
        assert!(md.contains("| failed: out of shared memory | - | - |"));
        assert!(
            !md.contains("| ceiling |"),
            "no CPU row for a ceiling that failed: {md}"
        );
        let line = csv(&[failed]);
        let line = line.lines().nth(1).unwrap();
        assert!(line.contains(",,,\"out of shared memory\",1.50,"), "{line}");
        assert!(
            line.ends_with(",0.50,,,,,,,"),
            "empty CPU cells for a ceiling that failed: {line}"
        );
    }
}
