//! Which failures are worth retrying as they are, decided in one place, and the
//! capped, jittered exponential backoff every retry loop of the service uses.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::{cache::outbox::OutboxError, store::StoreError};

/// What to do about a failed batch, decided here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The same transaction may succeed if simply tried again: lost or refused
    /// connections (08, no SQLSTATE at all), transaction rollbacks such as
    /// serialization failures and deadlocks (40), insufficient resources (53),
    /// operator intervention such as a shutdown or a statement timeout (57),
    /// a lock not available (55P03).
    Transient,
    /// The server refused what some record carries: data exceptions (22),
    /// integrity constraints (23), cardinality violations (21), program limits
    /// (54), and exceptions raised by triggers (P0001). Splitting the batch
    /// isolates the records that cause it.
    Data,
    /// The server ran out of memory, typically of its lock table (53200):
    /// a batch that touches many movements takes one advisory lock per
    /// movement. Retried like a transient error; a batch that still fails is
    /// split in halves, which need fewer locks. Never a reason to quarantine.
    Resources,
    /// Neither: a broken schema, a lost offset race. The pipeline restarts
    /// from its committed offset and reports the error.
    Other,
}

impl Class {
    /// True when the same transaction may succeed if simply tried again.
    pub fn is_retriable(self) -> bool {
        matches!(self, Class::Transient | Class::Resources)
    }

    /// True when the batch is worth applying in halves
    /// ([`crate::ingest::bisect`]): halves isolate the records whose data the
    /// server refuses, and take fewer locks.
    pub fn splits_batch(self) -> bool {
        matches!(self, Class::Data | Class::Resources)
    }

    /// Every class, for the series that appear before their first failure.
    pub const ALL: [Class; 4] = [
        Class::Transient,
        Class::Data,
        Class::Resources,
        Class::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Transient => "transient",
            Class::Data => "data",
            Class::Resources => "resources",
            Class::Other => "other",
        }
    }
}

/// Classifies a storage error.
pub fn classify(err: &StoreError) -> Class {
    match err {
        StoreError::Pool(_) => Class::Transient,
        StoreError::Db { cause, .. } => match cause.code() {
            None => Class::Transient, // I/O or closed connection: no SQLSTATE at all
            Some(code) => classify_code(code),
        },
        StoreError::Url(_)
        | StoreError::Tls(_)
        | StoreError::Build(_)
        | StoreError::OffsetConflict { .. } => Class::Other,
    }
}

/// Classifies a batch's failure: the store's, or the cache outbox's.
pub fn classify_outbox(err: &OutboxError) -> Class {
    match err {
        OutboxError::Store(e) => classify(e),
        // Another announcement is made at the next attempt; a late look is
        // followed by the next one.
        OutboxError::Unannounced | OutboxError::Late(_) => Class::Transient,
    }
}

fn classify_code(code: &SqlState) -> Class {
    if code == &SqlState::LOCK_NOT_AVAILABLE {
        return Class::Transient;
    }
    if code == &SqlState::RAISE_EXCEPTION {
        return Class::Data;
    }
    if code == &SqlState::OUT_OF_MEMORY {
        return Class::Resources;
    }
    match &code.code()[..2] {
        "08" | "40" | "53" | "57" => Class::Transient,
        "21" | "22" | "23" | "54" => Class::Data,
        _ => Class::Other,
    }
}

/// Where a [`Backoff`] draws its random share from: injected, so that a test
/// can pin it, and each backoff has its own.
pub trait Draw {
    /// A number in `0..=bound`, uniformly.
    fn up_to(&mut self, bound: u64) -> u64;
}

impl Draw for fastrand::Rng {
    fn up_to(&mut self, bound: u64) -> u64 {
        self.u64(0..=bound)
    }
}

/// Capped exponential backoff with equal jitter: the step is 100 ms, 200 ms,
/// 400 ms … up to `max`, and each delay is half the step plus a random share
/// of the other half. Without jitter, the partitions of an instance (and the
/// instances of a cluster) that failed together would retry together, in
/// lockstep, against the server that just failed them; with half the step
/// kept, no retry comes at once after a failure.
#[derive(Debug, Clone)]
pub struct Backoff<R = fastrand::Rng> {
    step: Duration,
    max: Duration,
    rng: R,
}

impl Backoff {
    /// A backoff up to `max` with a random generator of its own.
    pub fn new(max: Duration) -> Self {
        Self::with_rng(max, fastrand::Rng::new())
    }
}

impl<R: Draw> Backoff<R> {
    /// A backoff up to `max` that draws its jitter from `rng`.
    pub fn with_rng(max: Duration, rng: R) -> Self {
        Self {
            step: Duration::from_millis(100),
            max,
            rng,
        }
    }

    /// Starts from `first` instead of 100 ms (at most `max`).
    pub fn starting_at(mut self, first: Duration) -> Self {
        self.step = first.min(self.max);
        self
    }

    /// The delay to wait now, in `step / 2 ..= step`; doubles the next step.
    pub fn next_delay(&mut self) -> Duration {
        let step = u64::try_from(self.step.as_nanos()).unwrap_or(u64::MAX);
        let half = step / 2;
        let delay = Duration::from_nanos(step - half + self.rng.up_to(half));
        self.step = (self.step * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws the highest value it may.
    struct Highest;

    impl Draw for Highest {
        fn up_to(&mut self, bound: u64) -> u64 {
            bound
        }
    }

    /// Draws the lowest value it may.
    struct Lowest;

    impl Draw for Lowest {
        fn up_to(&mut self, _bound: u64) -> u64 {
            0
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::with_rng(Duration::from_millis(500), Highest);
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn a_backoff_may_start_below_its_usual_first_step() {
        let mut b = Backoff::with_rng(Duration::from_millis(500), Highest)
            .starting_at(Duration::from_millis(20));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![20, 40, 80, 160, 320, 500]);
    }

    #[test]
    fn a_delay_keeps_at_least_half_its_step() {
        let mut b = Backoff::with_rng(Duration::from_millis(500), Lowest);
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![50, 100, 200, 250, 250]);
    }

    #[test]
    fn jittered_delays_stay_within_half_and_whole_step_and_spread() {
        let steps = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
        let mut first_delays = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let rng = fastrand::Rng::with_seed(seed);
            let mut b = Backoff::with_rng(Duration::from_secs(2), rng);
            for (i, step) in steps.iter().enumerate() {
                let step = Duration::from_millis(*step);
                let delay = b.next_delay();
                assert!(
                    step / 2 <= delay && delay <= step,
                    "seed {seed}, attempt {i}: {delay:?} outside {:?}..={step:?}",
                    step / 2
                );
                if i == 0 {
                    first_delays.insert(delay);
                }
            }
        }
        // Backoffs that start together do not retry together.
        assert!(first_delays.len() > 150, "{} distinct", first_delays.len());
    }

    #[test]
    fn sqlstates_are_classified_by_class() {
        let cases = [
            ("08006", Class::Transient),
            ("40001", Class::Transient),
            ("40P01", Class::Transient),
            ("53300", Class::Transient),
            ("53200", Class::Resources),
            ("57014", Class::Transient),
            ("57P01", Class::Transient),
            ("55P03", Class::Transient),
            ("22008", Class::Data),
            ("22P02", Class::Data),
            ("23514", Class::Data),
            ("23505", Class::Data),
            ("21000", Class::Data),
            ("54000", Class::Data),
            ("P0001", Class::Data),
            ("42P01", Class::Other),
            ("XX000", Class::Other),
        ];
        for (code, class) in cases {
            assert_eq!(classify_code(&SqlState::from_code(code)), class, "{code}");
        }
    }

    #[test]
    fn offset_conflict_is_not_retried_as_is() {
        let err = StoreError::OffsetConflict {
            topic: "t".into(),
            partition: 0,
            expected: Some(3),
        };
        assert!(!classify(&err).is_retriable());
        assert_eq!(classify(&err), Class::Other);
    }
}
