//! How fresh the answers are: single events produced one at a time (a
//! librdkafka producer that sends at once, acknowledged by the broker), each
//! to a stock pair nobody has seen, and the API polled until the pair shows
//! the event's quantity. Produce → visible, per event, with no background
//! ingest and with `--ingest-rate` events/s of background traffic from the
//! load test's feed.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    error::BenchError,
    feed,
    http::Conn,
    report,
    under_test::{self, Fresh, Launch},
    wm::{
        EventKind, KafkaError, Settings, create_topic,
        kafka::{self, Outgoing, Reporter},
    },
};

/// `freshness`'s options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    /// Events timed per background rate.
    #[arg(long, default_value_t = 300)]
    pub(crate) probes: usize,
    /// Background ingest rates, events/s (0: none), one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "0,2000")]
    pub(crate) ingest_rates: Vec<u64>,
    /// Pause between two timed events, ms.
    #[arg(long, default_value_t = 20)]
    pub(crate) interval_ms: u64,
    /// Partitions of the fresh topic.
    #[arg(long, default_value_t = 3)]
    pub(crate) partitions: i32,
    /// Where the run folder `<timestamp>/` is created.
    #[arg(long, default_value = "target/freshness")]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) common: crate::Common,
}

/// Produce → visible of one background rate, in microseconds.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) ingest_rate: u64,
    pub(crate) visible: Histogram<u64>,
    /// Events never seen within the limit.
    pub(crate) missed: usize,
}

/// How long one event may take to show before it counts as missed.
const LIMIT: Duration = Duration::from_secs(10);

pub(crate) async fn run(options: Options) -> Result<(PathBuf, String), BenchError> {
    let settings = Settings::load(&options.common.config_dir, None)?;
    let dir = crate::run_dir(&options.out)?;
    let fresh = Fresh::new(&settings, "freshness");
    let client = kafka::connect(&settings.kafka).await?;
    let partitions =
        create_topic(&client, &settings.kafka, &fresh.topic, options.partitions).await?;
    let launch = Launch {
        binary: options.common.service_binary(),
        config_dir: options.common.config_dir.clone(),
        partitions: options.partitions,
        batch_size: settings.batch.size,
        log: dir.join("service.log"),
    };
    let mut service = launch.start(&fresh).await?;
    // Sends each record at once: no linger, as a producer of single events.
    let mut config = kafka::client_config(&settings.kafka);
    config.set("linger.ms", "0").set("acks", "all");
    let producer: FutureProducer<Reporter> = config
        .create_with_context(Reporter::default())
        .map_err(KafkaError::from)?;
    let mut conn = Conn::open(service.addr())
        .await
        .map_err(|e| BenchError::Http {
            addr: service.addr(),
            detail: e.as_str().to_owned(),
        })?;
    let pairs: Arc<Vec<(Uuid, Uuid)>> =
        Arc::new((0..200).map(|_| (Uuid::new_v4(), Uuid::new_v4())).collect());
    let mut results = Vec::new();
    for &rate in &options.ingest_rates {
        let stop = CancellationToken::new();
        let sent = Arc::new(feed::Sent::default());
        let feeder = tokio::spawn(feed::run(
            client.clone(),
            fresh.topic.clone(),
            partitions.clone(),
            Arc::clone(&pairs),
            rate,
            Arc::clone(&sent),
            stop.clone(),
        ));
        // Let the background traffic settle first.
        tokio::time::sleep(Duration::from_secs(if rate > 0 { 2 } else { 0 })).await;
        let mut visible = crate::stats::histogram();
        let mut missed = 0;
        for i in 0..options.probes {
            service.check_running()?;
            let partition = partitions[i % partitions.len()];
            match probe(&producer, &mut conn, &fresh.topic, partition).await? {
                Some(took) => {
                    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                    let _ = visible.record(micros.max(1));
                }
                None => missed += 1,
            }
            tokio::time::sleep(Duration::from_millis(options.interval_ms)).await;
        }
        stop.cancel();
        match feeder.await {
            Ok(result) => result?,
            Err(e) => return Err(BenchError::Task(e.to_string())),
        }
        let measured = Measured {
            ingest_rate: rate,
            visible,
            missed,
        };
        println!("{}", line(&measured, sent.get()));
        results.push(measured);
    }
    under_test::stop(service).await;
    let table = markdown(&results);
    report::write(&dir, "freshness.md", &table)?;
    report::write(&dir, "freshness.csv", &csv(&results))?;
    Ok((dir, table))
}

/// An arrival of `quantity` at `warehouse`, happening now.
fn arrival(warehouse: Uuid, product: Uuid, quantity: i64) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc();
    feed::event(
        Uuid::new_v4(),
        warehouse,
        EventKind::Arrival,
        product,
        quantity,
        now,
    )
}

/// Produces one arrival to a stock pair nobody has seen and polls its stock
/// until it shows; returns produce → visible, `None` past [`LIMIT`].
async fn probe(
    producer: &FutureProducer<Reporter>,
    conn: &mut Conn,
    topic: &str,
    partition: i32,
) -> Result<Option<Duration>, BenchError> {
    let (warehouse, product) = (Uuid::new_v4(), Uuid::new_v4());
    let quantity = 7;
    let record = Outgoing {
        partition,
        key: None,
        value: Some(arrival(warehouse, product, quantity)),
        ..Outgoing::default()
    };
    let path = format!("/api/warehouses/{warehouse}/products/{product}");
    let started = Instant::now();
    kafka::send_all(producer, topic, std::slice::from_ref(&record)).await?;
    loop {
        // A pair never seen answers 0 and is not cached: polling it is free
        // of side effects.
        if let Ok(body) = conn.get_text(&path).await {
            if shows(&body, quantity) {
                return Ok(Some(started.elapsed()));
            }
        }
        if started.elapsed() > LIMIT {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// True when a stock answer holds `quantity`.
fn shows(body: &str, quantity: i64) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["quantity"].as_i64())
        == Some(quantity)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn line(m: &Measured, background: u64) -> String {
    let h = &m.visible;
    format!(
        "freshness: background {} events/s ({background} sent): produce -> visible p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events, {} missed)",
        m.ingest_rate,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len(),
        m.missed,
    )
}

/// One row's cells: rate, events, p50, p90, p99 and max in ms, missed.
fn cells(m: &Measured) -> [String; 7] {
    let h = &m.visible;
    let q = |q: f64| format!("{:.1}", ms(h.value_at_quantile(q)));
    [
        m.ingest_rate.to_string(),
        h.len().to_string(),
        q(0.5),
        q(0.9),
        q(0.99),
        format!("{:.1}", ms(h.max())),
        m.missed.to_string(),
    ]
}

pub(crate) fn markdown(results: &[Measured]) -> String {
    let mut out = String::from(
        "Produce → visible in `GET /api/warehouses/{w}/products/{p}`, one event at a time:\n\n\
         | background events/s | events | p50 ms | p90 ms | p99 ms | max ms | missed |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in results {
        out.push_str(&format!("| {} |\n", cells(m).join(" | ")));
    }
    out
}

fn csv(results: &[Measured]) -> String {
    let mut out =
        String::from("background_events_per_s,events,p50_ms,p90_ms,p99_ms,max_ms,missed\n");
    for m in results {
        out.push_str(&format!("{}\n", cells(m).join(",")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_event_is_valid_and_its_answer_is_recognised() {
        let (w, p) = (Uuid::new_v4(), Uuid::new_v4());
        let event = crate::wm::decode(Some(&arrival(w, p, 7))).expect("valid arrival");
        assert_eq!((event.warehouse_id, event.product_id), (w, p));
        assert!(shows(r#"{"warehouse_id":"x","quantity":7}"#, 7));
        assert!(!shows(r#"{"quantity":0}"#, 7));
        assert!(!shows("not json", 7));
    }

    #[test]
    fn the_table_has_a_row_per_rate() {
        let mut visible = crate::stats::histogram();
        for v in [1000, 2000, 3000] {
            visible.record(v).unwrap();
        }
        let results = [Measured {
            ingest_rate: 2000,
            visible,
            missed: 1,
        }];
        let md = markdown(&results);
        assert!(md.contains("| 2000 | 3 | 2.0 |"), "{md}");
        assert_eq!(csv(&results).lines().count(), 2);
    }
}
