//! End-to-end throughput: produce a generated stream to a fresh topic, then
//! run the real application on a fresh database and time how long it takes
//! until every record is committed. Prints its figures; used by `make loadtest`.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    config::Settings,
    kafka, produce,
    startup::{Application, StartupError},
    store,
};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub records: usize,
    pub partitions: usize,
    pub batch_size: usize,
    pub produce: Duration,
    pub consume: Duration,
}

impl Report {
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.consume.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loadtest: {} records over {} partitions, batch size {}: produced in {:.2} s, \
             consumed and committed in {:.2} s = {:.0} records/s",
            self.records,
            self.partitions,
            self.batch_size,
            self.produce.as_secs_f64(),
            self.consume.as_secs_f64(),
            self.records_per_second()
        )
    }
}

/// Runs one load test with `settings` (topic and database are replaced by
/// fresh ones named `wm-loadtest-*` / `<database>_loadtest`).
pub async fn run(mut settings: Settings, movements: usize) -> Result<Report, StartupError> {
    settings.kafka.topic = format!("wm-loadtest-{}", Uuid::new_v4().simple());
    settings.kafka.create_topic = true;
    settings.postgres.url = format!("{}_loadtest", settings.postgres.url.trim_end_matches('/'));
    settings.http.addr = "127.0.0.1:0".parse().unwrap_or(settings.http.addr);
    store::drop_database(&settings.postgres.url).await?;

    let client = kafka::connect(&settings.kafka).await?;
    let k = &settings.kafka;
    let partitions = kafka::ensure_topic(&client, &k.topic, k.partitions, true).await?;
    let messages = produce::generate(&produce::Plan {
        movements,
        seed: 42,
        duplicate_ratio: 0.02,
        invalid_ratio: 0.001,
    });
    let records = messages.len();
    let started = Instant::now();
    let counts = produce::produce(&client, &k.topic, &partitions, messages).await?;
    let produce_time = started.elapsed();

    let batch_size = settings.batch.size;
    let app = Application::build(settings).await?;
    let statuses = app.statuses();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(app.run(stop.clone()));
    loop {
        let done = statuses.iter().all(|s| {
            let target = counts.get(&s.partition).copied().unwrap_or(0) as i64;
            target == 0 || s.committed().is_some_and(|c| c >= target)
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consume = started.elapsed();
    stop.cancel();
    let _ = running.await;
    Ok(Report {
        records,
        partitions: partitions.len(),
        batch_size,
        produce: produce_time,
        consume,
    })
}
