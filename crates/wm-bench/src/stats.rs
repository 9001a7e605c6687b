//! What the load generator measures: latencies in HdrHistograms (one per
//! endpoint per step, plus one per second of the run for the time series)
//! and errors by kind. Every user task records into one shared recorder;
//! the lock is held for a few hundred nanoseconds and the generator runs on
//! two threads, so it does not limit the rate.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// Why a request did not count as a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// An answer other than the expected status.
    Status,
    /// The TCP connection could not be opened.
    Connect,
    /// The connection broke during the exchange.
    Io,
    /// No answer within [`crate::http::REQUEST_TIMEOUT`].
    Timeout,
}

impl Failure {
    pub(crate) const ALL: [Failure; 4] = [
        Failure::Status,
        Failure::Connect,
        Failure::Io,
        Failure::Timeout,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::Status => "status",
            Failure::Connect => "connect",
            Failure::Io => "io",
            Failure::Timeout => "timeout",
        }
    }
}

/// The request kinds of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Stock of a known (warehouse, product) pair: 200.
    Stock,
    /// A known movement: 200.
    Movement,
    /// A movement id nobody sent: 404.
    Unknown,
}

impl Endpoint {
    pub(crate) const ALL: [Endpoint; 3] = [Endpoint::Stock, Endpoint::Movement, Endpoint::Unknown];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Endpoint::Stock => "stock",
            Endpoint::Movement => "movement",
            Endpoint::Unknown => "unknown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Errors by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Errors([u64; 4]);

impl Errors {
    pub(crate) fn add(&mut self, failure: Failure) {
        self.0[failure as usize] += 1;
    }
    pub(crate) fn get(&self, failure: Failure) -> u64 {
        self.0[failure as usize]
    }
    pub(crate) fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub(crate) fn merge(&mut self, other: &Errors) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// Latencies in microseconds, 1 µs to 60 s, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds")
}

fn coarse_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant, valid bounds")
}

/// One second of the run.
#[derive(Debug)]
pub(crate) struct Second {
    pub(crate) latency: Histogram<u64>,
    pub(crate) errors: u64,
}

#[derive(Debug)]
struct Inner {
    endpoints: [Histogram<u64>; 3],
    errors: [Errors; 3],
    seconds: BTreeMap<u64, Second>,
}

/// Shared by the user tasks of a run.
#[derive(Debug)]
pub(crate) struct Recorder {
    origin: Instant,
    inner: Mutex<Inner>,
    completed: AtomicU64,
    failed: AtomicU64,
}

impl Recorder {
    pub(crate) fn new(origin: Instant) -> Self {
        Self {
            origin,
            inner: Mutex::new(Inner {
                endpoints: [histogram(), histogram(), histogram()],
                errors: [Errors::default(); 3],
                seconds: BTreeMap::new(),
            }),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Records one finished request; `latency` is measured by the caller
    /// (from the send, or from the intended start in open-loop mode).
    pub(crate) fn record(
        &self,
        endpoint: Endpoint,
        latency: Duration,
        outcome: Result<(), Failure>,
    ) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        let second = (Instant::now() - self.origin).as_secs();
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 60_000_000);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let slot = inner.seconds.entry(second).or_insert_with(|| Second {
            latency: coarse_histogram(),
            errors: 0,
        });
        match outcome {
            Ok(()) => {
                let _ = slot.latency.record(micros);
                let _ = inner.endpoints[endpoint.index()].record(micros);
            }
            Err(failure) => {
                slot.errors += 1;
                inner.errors[endpoint.index()].add(failure);
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Requests finished so far, and how many of them failed.
    pub(crate) fn progress(&self) -> (u64, u64) {
        (
            self.completed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Takes the per-endpoint figures gathered since the last call (one step).
    pub(crate) fn take_step(&self, elapsed: Duration) -> StepStats {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let endpoints = Endpoint::ALL.map(|e| {
            let i = e.index();
            let latency = std::mem::replace(&mut inner.endpoints[i], histogram());
            let errors = std::mem::take(&mut inner.errors[i]);
            Figures::new(&latency, errors, elapsed)
        });
        let mut mix = histogram();
        let mut errors = Errors::default();
        for f in &endpoints {
            let _ = mix.add(&f.latency);
            errors.merge(&f.errors);
        }
        StepStats {
            mix: Figures::from_parts(
                &mix,
                errors,
                elapsed,
                endpoints.iter().map(|f| f.requests).sum(),
            ),
            endpoints,
        }
    }

    /// Per-second figures of the whole run, by second since the origin.
    pub(crate) fn seconds(&self) -> Vec<(u64, f64, f64, u64)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .seconds
            .iter()
            .map(|(s, v)| {
                let requests = v.latency.len() + v.errors;
                (
                    *s,
                    requests as f64,
                    ms(v.latency.value_at_quantile(0.99)),
                    v.errors,
                )
            })
            .collect()
    }
}

/// Figures of one endpoint (or the mix) over one step.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(crate) latency: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) per_second: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) errors: Errors,
}

impl Figures {
    pub(crate) fn new(latency: &Histogram<u64>, errors: Errors, elapsed: Duration) -> Self {
        Self::from_parts(latency, errors, elapsed, latency.len() + errors.total())
    }

    fn from_parts(
        latency: &Histogram<u64>,
        errors: Errors,
        elapsed: Duration,
        requests: u64,
    ) -> Self {
        let q = |q: f64| ms(latency.value_at_quantile(q));
        Self {
            latency: latency.clone(),
            requests,
            per_second: requests as f64 / elapsed.as_secs_f64().max(1e-9),
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            max: ms(latency.max()),
            errors,
        }
    }
}

/// Microseconds to milliseconds.
pub(crate) fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// One step's figures: the mix and each endpoint.
#[derive(Debug, Clone)]
pub(crate) struct StepStats {
    pub(crate) mix: Figures,
    pub(crate) endpoints: [Figures; 3],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_figures_merge_endpoints_and_count_errors() {
        let recorder = Recorder::new(Instant::now());
        for i in 1..=100u64 {
            recorder.record(Endpoint::Stock, Duration::from_millis(i), Ok(()));
        }
        recorder.record(Endpoint::Movement, Duration::from_millis(500), Ok(()));
        recorder.record(
            Endpoint::Unknown,
            Duration::from_millis(1),
            Err(Failure::Status),
        );
        recorder.record(
            Endpoint::Unknown,
            Duration::from_millis(1),
            Err(Failure::Io),
        );
        let step = recorder.take_step(Duration::from_secs(1));
        let stock = &step.endpoints[0];
        assert_eq!(stock.requests, 100);
        assert!((stock.p50 - 50.0).abs() < 0.1, "{}", stock.p50);
        assert!((stock.p99 - 99.0).abs() < 0.1, "{}", stock.p99);
        assert_eq!(step.mix.requests, 103);
        assert_eq!(step.mix.errors.total(), 2);
        assert_eq!(step.mix.errors.get(Failure::Status), 1);
        assert!((step.mix.max - 500.0).abs() < 1.0);
        assert!((step.mix.per_second - 103.0).abs() < 1e-9);
        // The next step starts empty.
        assert_eq!(recorder.take_step(Duration::from_secs(1)).mix.requests, 0);
        assert_eq!(recorder.seconds()[0].1, 103.0);
    }
}
