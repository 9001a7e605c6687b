//! Driving HTTP load: closed-loop virtual users (each sends its next request
//! when the previous answer arrived) and an open-loop constant rate whose
//! latency counts from each request's intended start, so that a slow server
//! cannot hide its queue by slowing the generator (no coordinated omission).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use uuid::Uuid;

use crate::{
    http::Reconnecting,
    stats::{Endpoint, Failure, Recorder},
};

/// The ids the mix draws from.
#[derive(Debug)]
pub(crate) struct Targets {
    pub(crate) stock: Vec<String>,
    pub(crate) movements: Vec<String>,
}

impl Targets {
    pub(crate) fn new(pairs: &[(Uuid, Uuid)], movements: &[Uuid]) -> Self {
        Self {
            stock: pairs
                .iter()
                .map(|(w, p)| format!("/api/warehouses/{w}/products/{p}"))
                .collect(),
            movements: movements
                .iter()
                .map(|m| format!("/api/movements/{m}"))
                .collect(),
        }
    }

    /// 45% stock of a known pair, 45% a known movement, 10% an unknown
    /// movement (expects 404); with `known_only`, half stock, half movements.
    fn pick(&self, rng: &mut StdRng, known_only: bool) -> (Endpoint, String) {
        let roll = if known_only {
            rng.gen_range(0..90)
        } else {
            rng.gen_range(0..100)
        };
        if roll < 45 {
            let path = self.stock.choose(rng).cloned().unwrap_or_default();
            (Endpoint::Stock, path)
        } else if roll < 90 {
            let path = self.movements.choose(rng).cloned().unwrap_or_default();
            (Endpoint::Movement, path)
        } else {
            let id = Uuid::from_u128(rng.r#gen());
            (Endpoint::Unknown, format!("/api/movements/{id}"))
        }
    }
}

/// What one request of a phase is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mix {
    /// The 45/45/10 request mix.
    Api,
    /// Known ids only, half stock and half movements: once the cache is
    /// warm, cached reads.
    Cached,
    /// `/health/live` only: the generator's ceiling.
    Live,
}

async fn one(
    conn: &mut Reconnecting,
    targets: &Targets,
    mix: Mix,
    rng: &mut StdRng,
) -> (Endpoint, Result<(), Failure>) {
    let (endpoint, path, expected) = match mix {
        Mix::Live => (Endpoint::Stock, "/health/live".to_owned(), 200),
        Mix::Api | Mix::Cached => {
            let (endpoint, path) = targets.pick(rng, matches!(mix, Mix::Cached));
            let expected = if endpoint == Endpoint::Unknown {
                404
            } else {
                200
            };
            (endpoint, path, expected)
        }
    };
    let outcome = match conn.get(&path).await {
        Ok(status) if status == expected => Ok(()),
        Ok(_) => Err(Failure::Status),
        Err(failure) => Err(failure),
    };
    (endpoint, outcome)
}

/// Reads every known stock pair and movement once, spread over `users`
/// connections, so that the cache holds them all; returns the requests sent
/// and how many failed.
pub(crate) async fn warm(addr: SocketAddr, targets: Arc<Targets>, users: usize) -> (u64, u64) {
    let users = users.max(1);
    let mut tasks = Vec::with_capacity(users);
    for user in 0..users {
        let targets = Arc::clone(&targets);
        tasks.push(tokio::spawn(async move {
            let mut conn = Reconnecting::new(addr);
            let (mut sent, mut failed) = (0u64, 0u64);
            let paths = targets.stock.iter().chain(&targets.movements);
            for path in paths.skip(user).step_by(users) {
                sent += 1;
                if conn.get(path).await != Ok(200) {
                    failed += 1;
                }
            }
            (sent, failed)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        if let Ok((sent, failed)) = t.await {
            total.0 += sent;
            total.1 += failed;
        }
    }
    total
}

/// Shared with the sampler: how many users are active now.
#[derive(Debug, Default)]
pub(crate) struct Active(AtomicUsize);

impl Active {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
    pub(crate) fn set(&self, n: usize) {
        self.0.store(n, Ordering::Relaxed)
    }
}

/// One phase of load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    /// Concurrent users (closed loop) or connections (open loop).
    pub(crate) users: usize,
    /// Open loop at this many requests/s; `None`: closed loop.
    pub(crate) rate: Option<f64>,
    pub(crate) duration: Duration,
    pub(crate) mix: Mix,
}

/// Runs `phase` against `addr`, recording into `recorder`; returns the
/// measured elapsed time (from the first user's start to the last answer).
pub(crate) async fn run(
    addr: SocketAddr,
    targets: Arc<Targets>,
    recorder: Arc<Recorder>,
    phase: Phase,
    bar: &ProgressBar,
) -> Duration {
    let started = Instant::now();
    let deadline = started + phase.duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(phase.users);
    // Connect every user first, so connection set-up is not part of the step.
    let mut conns = Vec::with_capacity(phase.users);
    for _ in 0..phase.users {
        let mut conn = Reconnecting::new(addr);
        if let Err(failure) = conn.connect().await {
            recorder.record(Endpoint::Stock, Duration::ZERO, Err(failure));
        }
        conns.push(conn);
    }
    let started = Instant::now().max(started);
    let deadline = deadline.max(started + phase.duration);
    for mut conn in conns {
        let targets = Arc::clone(&targets);
        let recorder = Arc::clone(&recorder);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::from_entropy();
            loop {
                let intended = match phase.rate {
                    None => Instant::now(),
                    Some(rate) => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let at = started + Duration::from_secs_f64(i as f64 / rate);
                        if at >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                };
                if intended >= deadline {
                    break;
                }
                let (endpoint, outcome) = one(&mut conn, &targets, phase.mix, &mut rng).await;
                recorder.record(endpoint, intended.elapsed(), outcome);
            }
        }));
    }
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {elapsed:>3}/{len}s {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_length(phase.duration.as_secs().max(1));
    let (base, base_failed) = recorder.progress();
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let elapsed = started.elapsed().as_secs_f64().max(1e-3);
        let (done, failed) = recorder.progress();
        bar.set_position(started.elapsed().as_secs().min(phase.duration.as_secs()));
        bar.set_message(format!(
            "{:>8.0} req/s  errors {}",
            (done - base) as f64 / elapsed,
            failed - base_failed
        ));
    }
    for t in tasks {
        let _ = t.await;
    }
    bar.finish();
    started.elapsed()
}
