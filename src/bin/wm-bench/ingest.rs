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

use futures::future::try_join_all;
use time::OffsetDateTime;
use warehouse_monitor::{
    batch::Record,
    config::Settings,
    kafka,
    produce::Message,
    startup,
    store::{
        self,
        apply::{PartitionBatch, apply},
    },
};

use crate::{
    error::BenchError,
    report, seed,
    service::{self, Fresh, Launch, Service},
};

/// Options of `wm-bench ingest`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Events per configuration.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub batch_sizes: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "3,6")]
    pub partitions: Vec<i32>,
    /// Where the run folder `<timestamp>/` is created.
    #[arg(long, default_value = "target/bench-ingest")]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: crate::Common,
}

/// One configuration's figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub partitions: i32,
    pub batch_size: usize,
    pub events: usize,
    pub service: Duration,
    pub ceiling: Duration,
}

impl Row {
    pub fn service_rate(&self) -> f64 {
        self.events as f64 / self.service.as_secs_f64().max(1e-9)
    }
    pub fn ceiling_rate(&self) -> f64 {
        self.events as f64 / self.ceiling.as_secs_f64().max(1e-9)
    }
    pub fn ratio(&self) -> f64 {
        self.service_rate() / self.ceiling_rate().max(1e-9)
    }
}

pub async fn run(options: Options) -> Result<(PathBuf, String), BenchError> {
    let settings = Settings::load(service::config_dir(), None)?;
    let dir = crate::run_dir(&options.out)?;
    let client = kafka::connect(&settings.kafka).await?;
    let mut rows = Vec::new();
    for &partitions in &options.partitions {
        for &batch_size in &options.batch_sizes {
            let fresh = Fresh::new(&settings, "ingest");
            let ids = kafka::ensure_topic(&client, &fresh.topic, partitions, true).await?;
            let messages = seed::generate(options.events * 10 / 43 + 1000, Some(options.events));
            let events = messages.len();
            let copy = messages.clone();
            let produced = seed::produce(&client, &fresh.topic, &ids, messages).await?;

            let mut with_url = settings.clone();
            with_url.postgres.url = fresh.database_url.clone();
            startup::migrate(&with_url).await?;
            let launch = Launch {
                binary: options
                    .common
                    .service
                    .clone()
                    .unwrap_or_else(service::default_binary),
                config_dir: service::config_dir().to_owned(),
                partitions,
                batch_size,
                log: dir.join(format!("service-p{partitions}-b{batch_size}.log")),
            };
            let pool = fresh.pool(&settings, 1)?;
            let started = Instant::now();
            let mut running = Service::start(&launch, &fresh).await?;
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
            running.stop().await;
            pool.close();
            store::drop_database(&fresh.database_url).await?;

            let ceiling = ceiling(&settings, &ids, batch_size, copy).await?;
            let row = Row {
                partitions,
                batch_size,
                events,
                service: service_time,
                ceiling,
            };
            println!(
                "ingest: {} partitions, batch {:>5}: service {:>7.0} events/s ({:.2} s), PostgreSQL ceiling {:>7.0} events/s ({:.2} s), ratio {:.0}%",
                partitions,
                batch_size,
                row.service_rate(),
                row.service.as_secs_f64(),
                row.ceiling_rate(),
                row.ceiling.as_secs_f64(),
                row.ratio() * 100.0
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
/// them, on a fresh database; returns the time of the applies.
async fn ceiling(
    settings: &Settings,
    partitions: &[i32],
    batch_size: usize,
    messages: Vec<Message>,
) -> Result<Duration, BenchError> {
    let fresh = Fresh::new(settings, "ceiling");
    let mut with_url = settings.clone();
    with_url.postgres.url = fresh.database_url.clone();
    startup::migrate(&with_url).await?;
    let now = OffsetDateTime::now_utc();
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for m in messages {
        let index = (m.key.as_u128() % partitions.len().max(1) as u128) as usize;
        let records = by_partition.entry(partitions[index]).or_default();
        records.push(Record::new(records.len() as i64, now, Some(m.value)));
    }
    let pool = fresh.pool(settings, partitions.len())?;
    let mut clients = Vec::new();
    for _ in 0..by_partition.len() {
        clients.push(pool.get().await?);
    }
    let topic = fresh.topic.clone();
    let started = Instant::now();
    let work = by_partition
        .iter()
        .zip(clients)
        .map(|((partition, records), mut client)| {
            let topic = topic.as_str();
            async move {
                let mut expected = None;
                for chunk in records.chunks(batch_size) {
                    let batch = PartitionBatch {
                        topic,
                        partition: *partition,
                        expected_offset: expected,
                        records: chunk,
                    };
                    let outcome = apply(&mut client, &batch).await?;
                    expected = Some(outcome.next_offset);
                }
                Ok::<_, BenchError>(())
            }
        });
    try_join_all(work).await?;
    let elapsed = started.elapsed();
    pool.close();
    store::drop_database(&fresh.database_url).await?;
    Ok(elapsed)
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| partitions | batch size | events | service s | service events/s | PostgreSQL ceiling s | ceiling events/s | service / ceiling |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0}% |",
            r.partitions,
            r.batch_size,
            r.events,
            r.service.as_secs_f64(),
            r.service_rate(),
            r.ceiling.as_secs_f64(),
            r.ceiling_rate(),
            r.ratio() * 100.0
        );
    }
    out
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "partitions,batch_size,events,service_s,service_events_per_s,ceiling_s,ceiling_events_per_s,ratio\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{:.3},{:.0},{:.3},{:.0},{:.4}",
            r.partitions,
            r.batch_size,
            r.events,
            r.service.as_secs_f64(),
            r.service_rate(),
            r.ceiling.as_secs_f64(),
            r.ceiling_rate(),
            r.ratio()
        );
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
            ceiling: Duration::from_secs(1),
        };
        assert_eq!(row.ratio(), 0.5);
        let md = markdown(&[row]);
        assert!(
            md.contains("| 3 | 1000 | 1000 | 2.00 | 500 | 1.00 | 1000 | 50% |"),
            "{md}"
        );
    }
}
