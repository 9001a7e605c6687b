//! `wm-bench loadtest`: seed a fresh database through produce -> consume,
//! measure the generator's ceiling on `/health/live`, then load the API in
//! steps (closed-loop users, or open-loop rates) while a background producer
//! keeps ingesting; write the CSV, Markdown and charts of the run.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use indicatif::ProgressBar;
use tokio_util::sync::CancellationToken;

use crate::{
    chart,
    error::BenchError,
    feed,
    load::{self, Active, Mix, Phase, Targets},
    report::{self, StepRow, TimePoint},
    scrape::{Scrape, Scraper},
    seed,
    stats::{Endpoint, Recorder},
    under_test::{self, Fresh, Launch},
    wm::{Service, Settings, create_topic, kafka, store},
};

/// Options of `wm-bench loadtest`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Movements generated for the seed (about 3.9 records each; a few
    /// malformed records are rejected, so 20 200 leave at least 20 000 stored).
    #[arg(long, default_value_t = 20_200)]
    pub(crate) movements: usize,
    /// Closed-loop steps: concurrent virtual users.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,20,50,100,200,400,1000"
    )]
    pub(crate) users: Vec<usize>,
    /// Open-loop mode: target requests/s per step (replaces the user steps).
    #[arg(long, value_delimiter = ',')]
    pub(crate) rate: Option<Vec<f64>>,
    /// Connections of the open-loop mode (requests beyond them wait, and that
    /// wait counts in their latency).
    #[arg(long, default_value_t = 400)]
    pub(crate) connections: usize,
    /// Seconds per step.
    #[arg(long, default_value_t = 15)]
    pub(crate) step_secs: u64,
    /// Seconds of each generator-ceiling measurement on /health/live.
    #[arg(long, default_value_t = 2)]
    pub(crate) ceiling_secs: u64,
    /// Users of the cached-reads phase that follows the steps: the feed is
    /// paused, every known id is read once, then known ids only (0: skip it).
    #[arg(long, default_value_t = 100)]
    pub(crate) cached_users: usize,
    /// Events/s of the background producer during the load (0: none).
    #[arg(long, default_value_t = 2000)]
    pub(crate) ingest_rate: u64,
    /// Partitions of the fresh topic.
    #[arg(long, default_value_t = 3)]
    pub(crate) partitions: i32,
    /// Where the run folder `<timestamp>/` is created.
    #[arg(long, default_value = "target/loadtest")]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) common: crate::Common,
}

/// What the command prints at the end and whether it failed.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) dir: PathBuf,
    pub(crate) table: String,
    pub(crate) errors: u64,
}

pub(crate) async fn run(options: Options) -> Result<Outcome, BenchError> {
    let settings = Settings::load(&options.common.config_dir, None)?;
    chart::load_font(&options.common.font)?;
    let dir = crate::run_dir(&options.out)?;
    let fresh = Fresh::new(&settings, "loadtest");
    let client = kafka::connect(&settings.kafka).await?;
    let partitions =
        create_topic(&client, &settings.kafka, &fresh.topic, options.partitions).await?;

    let messages = seed::generate(options.movements, None);
    let produced = seed::produce(&client, &fresh.topic, &partitions, messages).await?;
    println!(
        "seed: produced {} records ({} movements) to {} in {:.1} s",
        produced.records, options.movements, fresh.topic, produced.seconds
    );
    let launch = Launch {
        binary: options.common.service_binary(),
        config_dir: options.common.config_dir.clone(),
        partitions: options.partitions,
        batch_size: settings.batch.size,
        log: dir.join("service.log"),
    };
    let started = Instant::now();
    let mut service = launch.start(&fresh).await?;
    let pool = fresh.pool(&settings, 2)?;
    let limit = Duration::from_secs(600);
    under_test::wait_committed(
        &pool,
        &fresh.topic,
        &produced.per_partition,
        &mut service,
        limit,
    )
    .await?;
    println!(
        "seed: consumed and committed in {:.1} s (service start included)",
        started.elapsed().as_secs_f64()
    );
    let (pairs, movements) = seed::known_ids(&pool).await?;
    println!(
        "seed: {} stock pairs, {} movements stored",
        pairs.len(),
        movements.len()
    );
    let targets = Arc::new(Targets::new(&pairs, &movements));

    let stop = CancellationToken::new();
    let sent = Arc::new(feed::Sent::default());
    let feeder = tokio::spawn(feed::run(
        client.clone(),
        fresh.topic.clone(),
        partitions.clone(),
        Arc::new(pairs),
        options.ingest_rate,
        Arc::clone(&sent),
        stop.clone(),
    ));

    let result = drive(&options, &service, targets, &sent, &stop).await;
    stop.cancel();
    let fed = feeder.await;
    under_test::stop(service).await;
    pool.close();
    let _ = store::drop_database(&fresh.database_url).await;
    let (rows, points, ceiling_errors, cached) = result?;
    match fed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(BenchError::Task(e.to_string())),
    }
    println!("background producer: {} events sent", sent.get());

    write_outputs(&dir, &rows, &points, &options)?;
    let mut table = report::markdown(&rows);
    if let Some(cached) = &cached {
        report::write(
            &dir,
            "cached.csv",
            &report::steps_csv(std::slice::from_ref(cached)),
        )?;
        let cached_table = format!(
            "\nCached reads (background producer paused, every known id read once first, then known ids only):\n\n{}",
            report::markdown(std::slice::from_ref(cached))
        );
        report::write(&dir, "cached.md", &cached_table)?;
        table.push_str(&cached_table);
    }
    let errors = rows
        .iter()
        .chain(&cached)
        .map(|r| r.stats.mix.errors.total())
        .sum::<u64>()
        + ceiling_errors;
    Ok(Outcome { dir, table, errors })
}

/// The steps, the time series, the errors of the ceiling and warming
/// requests, and the cached-reads row.
type Driven = (Vec<StepRow>, Vec<TimePoint>, u64, Option<StepRow>);

/// The ceiling phases, then the steps, with the sampler running.
async fn drive(
    options: &Options,
    service: &Service,
    targets: Arc<Targets>,
    feed: &feed::Sent,
    stop: &CancellationToken,
) -> Result<Driven, BenchError> {
    let addr = service.addr();
    let phases: Vec<(usize, Option<f64>)> = match &options.rate {
        Some(rates) => rates
            .iter()
            .map(|r| (options.connections, Some(*r)))
            .collect(),
        None => options.users.iter().map(|u| (*u, None)).collect(),
    };

    // The generator's ceiling at each concurrency, on the cheapest endpoint.
    let mut ceilings = Vec::new();
    let mut ceiling_errors = 0;
    for (users, _) in &phases {
        if let Some((_, c)) = ceilings.iter().find(|(u, _)| u == users) {
            ceilings.push((*users, *c));
            continue;
        }
        let recorder = Arc::new(Recorder::new(Instant::now()));
        let phase = Phase {
            users: *users,
            rate: None,
            duration: Duration::from_secs(options.ceiling_secs),
            mix: Mix::Live,
        };
        let bar = ProgressBar::new(phase.duration.as_secs());
        bar.set_prefix(format!("ceiling {users}"));
        let elapsed = load::run(
            addr,
            Arc::clone(&targets),
            Arc::clone(&recorder),
            phase,
            &bar,
        )
        .await;
        let step = recorder.take_step(elapsed);
        ceiling_errors += step.mix.errors.total();
        println!(
            "ceiling: {users:>5} users on /health/live: {:>8.0} req/s, p99 {:.2} ms",
            step.mix.per_second, step.mix.p99
        );
        ceilings.push((*users, step.mix.per_second));
    }

    let origin = Instant::now();
    let active = Arc::new(Active::default());
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = tokio::spawn(sample(
        Scraper::new(addr),
        origin,
        Arc::clone(&active),
        Arc::clone(&samples),
        stop.clone(),
    ));
    let mut steps = Steps {
        addr,
        targets: Arc::clone(&targets),
        recorder: Arc::new(Recorder::new(origin)),
        scraper: Scraper::new(addr),
        active: Arc::clone(&active),
        samples: Arc::clone(&samples),
        origin,
        windows: Vec::new(),
        step_secs: options.step_secs,
    };
    let mut rows = Vec::new();
    for ((users, rate), (_, ceiling)) in phases.iter().zip(&ceilings) {
        let prefix = match rate {
            Some(r) => format!("{r:.0} req/s"),
            None => format!("{users} users"),
        };
        let row = steps
            .measure(*users, *rate, Mix::Api, prefix, Some(*ceiling))
            .await?;
        print_step(&row);
        rows.push(row);
    }
    let cached = match options.cached_users {
        0 => None,
        users => {
            let ceiling = ceilings.iter().find(|(u, _)| *u == users).map(|c| c.1);
            let (row, warm_errors) = cached_reads(&mut steps, users, feed, ceiling).await?;
            ceiling_errors += warm_errors;
            Some(row)
        }
    };
    stop.cancel();
    let _ = sampler.await;
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let end = origin.elapsed().as_secs_f64();
    let (recorder, windows) = (steps.recorder, steps.windows);
    let points = recorder
        .seconds()
        .into_iter()
        // The last second is partial: its rate would look like a collapse.
        .filter(|(second, ..)| (*second as f64) + 1.0 <= end)
        .map(|(second, requests, p99_ms, errors)| {
            let mid = second as f64 + 0.5;
            let nearest = samples
                .iter()
                .min_by(|a, b| (a.0 - mid).abs().total_cmp(&(b.0 - mid).abs()));
            let (lag, freshness_p99_ms) = nearest.map_or((0.0, 0.0), |s| (s.2, s.3));
            let users = windows
                .iter()
                .find(|(from, to, _)| mid >= *from && mid < *to)
                .map_or(0.0, |w| w.2);
            TimePoint {
                second: second as f64,
                requests,
                p99_ms,
                errors,
                users,
                lag,
                freshness_p99_ms,
            }
        })
        .collect();
    Ok((rows, points, ceiling_errors, cached))
}

/// One sample of the sampler: (second of the run, active users, consumer
/// lag, freshness p99 ms over the second before).
type Sample = (f64, f64, f64, f64);

/// What every measured step of a run shares.
struct Steps {
    addr: std::net::SocketAddr,
    targets: Arc<Targets>,
    recorder: Arc<Recorder>,
    scraper: Scraper,
    active: Arc<Active>,
    /// The sampler's (time, users, lag) points.
    samples: Arc<Mutex<Vec<Sample>>>,
    origin: Instant,
    /// (from, to, users) of each step, for the time series.
    windows: Vec<(f64, f64, f64)>,
    step_secs: u64,
}

impl Steps {
    /// Runs one step of `users` (or of `rate` requests/s) on `mix` with a
    /// progress bar, and reads `/metrics` before and after it.
    async fn measure(
        &mut self,
        users: usize,
        rate: Option<f64>,
        mix: Mix,
        prefix: String,
        ceiling: Option<f64>,
    ) -> Result<StepRow, BenchError> {
        let before = self.scraper.scrape().await?;
        let from = self.origin.elapsed().as_secs_f64();
        self.active.set(users);
        let phase = Phase {
            users,
            rate,
            duration: Duration::from_secs(self.step_secs),
            mix,
        };
        let bar = ProgressBar::new(phase.duration.as_secs());
        bar.set_prefix(prefix);
        let targets = Arc::clone(&self.targets);
        let recorder = Arc::clone(&self.recorder);
        let elapsed = load::run(self.addr, targets, recorder, phase, &bar).await;
        self.active.set(0);
        let stats = self.recorder.take_step(elapsed);
        let after = self.scraper.scrape().await?;
        let to = self.origin.elapsed().as_secs_f64();
        self.windows.push((from, to, users as f64));
        let lag_max = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(t, ..)| *t >= from && *t <= to)
            .map(|(_, _, lag, _)| *lag)
            .fold(after.lag, f64::max);
        let quantile = |q| after.freshness_since(&before, q).map(|s| s * 1000.0);
        let freshness_ms = quantile(0.5).zip(quantile(0.99));
        Ok(StepRow {
            users,
            rate,
            seconds: elapsed.as_secs_f64(),
            stats,
            cache_hit_ratio: after.hit_ratio_since(&before),
            lag_max,
            freshness_ms,
            ceiling,
        })
    }
}

/// The cached-reads phase: pause the feed, let the consumer commit what it
/// has, read every known id once, then load known ids only for a step.
/// Returns its row and the failed warming requests.
async fn cached_reads(
    steps: &mut Steps,
    users: usize,
    feed: &feed::Sent,
    ceiling: Option<f64>,
) -> Result<(StepRow, u64), BenchError> {
    feed.pause();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let warmed = Instant::now();
    let (sent, failed) = load::warm(steps.addr, Arc::clone(&steps.targets), 50).await;
    println!(
        "cached reads: feed paused, {sent} known ids read once in {:.1} s ({failed} failed)",
        warmed.elapsed().as_secs_f64()
    );
    let prefix = format!("cached {users}");
    let row = steps
        .measure(users, None, Mix::Cached, prefix, ceiling)
        .await?;
    print!("cached reads, ");
    print_step(&row);
    Ok((row, failed))
}

/// Every second: active users, the consumer lag and the freshness p99 of
/// that second from `/metrics`.
async fn sample(
    mut scraper: Scraper,
    origin: Instant,
    active: Arc<Active>,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut previous: Option<Scrape> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let users = active.get() as f64;
        let scrape = scraper.scrape().await.ok();
        let lag = scrape.as_ref().map_or(0.0, |s| s.lag);
        let freshness = match (&scrape, &previous) {
            (Some(now), Some(before)) => now
                .freshness_since(before, 0.99)
                .map_or(0.0, |s| s * 1000.0),
            _ => 0.0,
        };
        let t = origin.elapsed().as_secs_f64();
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, users, lag, freshness));
        if scrape.is_some() {
            previous = scrape;
        }
    }
}

fn print_step(row: &StepRow) {
    let m = &row.stats.mix;
    let lead = match row.rate {
        Some(r) => format!("{r:>7.0} req/s target"),
        None => format!("{:>5} users", row.users),
    };
    println!(
        "{lead}: {:>8.0} req/s  p50 {:.2}  p90 {:.2}  p95 {:.2}  p99 {:.2}  max {:.1} ms  errors {}  cache hits {}  lag<= {:.0}  freshness p50/p99 {} ms  = {} of the generator ceiling",
        m.per_second,
        m.p50,
        m.p90,
        m.p95,
        m.p99,
        m.max,
        m.errors.total(),
        row.cache_hit_ratio
            .map_or("-".into(), |h| format!("{:.1}%", h * 100.0)),
        row.lag_max,
        row.freshness_ms
            .map_or("-".into(), |(p50, p99)| format!("{p50:.1}/{p99:.1}")),
        row.ceiling_share()
            .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
    );
}

fn write_outputs(
    dir: &std::path::Path,
    rows: &[StepRow],
    points: &[TimePoint],
    options: &Options,
) -> Result<(), BenchError> {
    report::write(dir, "steps.csv", &report::steps_csv(rows))?;
    report::write(dir, "endpoints.csv", &report::endpoints_csv(rows))?;
    report::write(dir, "timeseries.csv", &report::timeseries_csv(points))?;
    let open = options.rate.is_some();
    let x_label = if open { "target requests/s" } else { "users" };
    let x: Vec<f64> = rows
        .iter()
        .map(|r| r.rate.unwrap_or(r.users as f64))
        .collect();
    let mode = if open {
        format!("open loop, {} connections", options.connections)
    } else {
        "closed loop".to_owned()
    };
    let context = format!(
        "{mode}, {} s per step, ingest {} events/s",
        options.step_secs, options.ingest_rate
    );
    let figures = |name: &str, pick: &dyn Fn(&StepRow) -> &crate::stats::Figures| chart::Sweep {
        title: format!("{name}: {context}"),
        x_label,
        x: x.clone(),
        per_second: rows.iter().map(|r| pick(r).per_second).collect(),
        p50: rows.iter().map(|r| pick(r).p50).collect(),
        p95: rows.iter().map(|r| pick(r).p95).collect(),
        p99: rows.iter().map(|r| pick(r).p99).collect(),
    };
    chart::sweep(
        &dir.join("mix"),
        &figures("mix 45/45/10", &|r| &r.stats.mix),
    )?;
    for (i, e) in Endpoint::ALL.iter().enumerate() {
        let name = match e {
            Endpoint::Stock => "stock of a known pair",
            Endpoint::Movement => "known movement",
            Endpoint::Unknown => "unknown movement (404)",
        };
        chart::sweep(
            &dir.join(e.as_str()),
            &figures(name, &move |r| &r.stats.endpoints[i]),
        )?;
    }
    chart::timeline(
        &dir.join("timeline"),
        &format!("over the run: {context}"),
        points,
    )?;
    report::write(dir, "table.md", &report::markdown(rows))?;
    Ok(())
}
