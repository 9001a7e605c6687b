//! A workaround for brokers that skip records when a fetch starts inside a
//! record batch.
//!
//! Tansu 0.6 answers a fetch whose offset lies inside a record batch with
//! the *next* batch, silently skipping the rest of the batch; that happens
//! whenever the committed offset of a restarted consumer falls inside a
//! producer's batch. Apache Kafka returns the batch holding the offset (the
//! client drops the records before it), so there the probe only acts at real
//! gaps in the log (transaction markers, compaction), and then costs a few
//! seeks.
//!
//! After the reader starts at an offset past the log's start, the probe
//! judges the first thing that comes: a record at the offset (or before it,
//! which the reader skips) proves nothing was skipped; a record past it, or
//! the end of the log past it, or nothing at all for a while (the batch
//! holding the offset was the last one) sends the reader further back, in
//! growing steps, to walk forward from there. At the log's start the gap is
//! taken as real.

use std::time::Duration;

use tokio::time::Instant;

/// The first step back, records.
const FIRST_STEP: i64 = 64;

/// What the reader does with what came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing was skipped: the probe is done.
    Settled,
    /// Records may have been skipped: read again from this offset, still
    /// wanting the same one.
    SeekBack(i64),
}

/// The probe of one start offset.
#[derive(Debug, Clone, Copy)]
pub struct OffsetProbe {
    /// The offset wanted next.
    target: i64,
    /// The first offset the broker holds.
    low: i64,
    /// Where the reader reads from now.
    from: i64,
    /// How far back the next step goes.
    step: i64,
    /// Neither a record nor the end of the log by then: step back.
    deadline: Instant,
    patience: Duration,
}

impl OffsetProbe {
    /// A probe of a start at `target`; `None` at or before the log's start
    /// (`low`), where nothing can be skipped. `patience`: how long the
    /// broker may stay silent after a (re)start.
    pub fn new(target: i64, low: i64, patience: Duration) -> Option<Self> {
        (target > low).then(|| Self {
            target,
            low,
            from: target,
            step: FIRST_STEP,
            deadline: Instant::now() + patience,
            patience,
        })
    }

    /// How long a reader may wait for a broker's first answer: two fetches
    /// held for the whole wait, and some room.
    pub fn patience(fetch_max_wait_ms: i32) -> Duration {
        let wait = u64::try_from(fetch_max_wait_ms).unwrap_or(0);
        Duration::from_millis(2 * wait + 300)
    }

    /// When silence means a step back.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A record came, at `offset`. At or before the wanted offset, the
    /// broker started there or earlier (records before it are the walk
    /// forward of a step back, which the reader skips): nothing was skipped.
    /// Past it, records may have been.
    pub fn record(&mut self, offset: i64) -> Verdict {
        if offset > self.target {
            self.step_back()
        } else {
            Verdict::Settled
        }
    }

    /// The end of the log came, at `end`, with no record at or past the
    /// wanted offset before it.
    pub fn end(&mut self, end: i64) -> Verdict {
        if end > self.target {
            self.step_back()
        } else {
            Verdict::Settled
        }
    }

    /// Nothing came until the deadline.
    pub fn silence(&mut self) -> Verdict {
        self.step_back()
    }

    fn step_back(&mut self) -> Verdict {
        if self.from <= self.low {
            return Verdict::Settled; // read from the log's start: the gap is real
        }
        self.from = self.target.saturating_sub(self.step).max(self.low);
        self.step = self.step.saturating_mul(4);
        self.deadline = Instant::now() + self.patience;
        Verdict::SeekBack(self.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(target: i64, low: i64) -> OffsetProbe {
        OffsetProbe::new(target, low, Duration::from_millis(320)).unwrap()
    }

    #[test]
    fn no_probe_at_the_log_start() {
        assert!(OffsetProbe::new(5, 5, Duration::ZERO).is_none());
        assert!(OffsetProbe::new(0, 0, Duration::ZERO).is_none());
    }

    #[test]
    fn the_wanted_record_settles_it() {
        assert_eq!(probe(1000, 0).record(1000), Verdict::Settled);
        assert_eq!(probe(1000, 0).record(990), Verdict::Settled);
        assert_eq!(probe(1000, 0).end(1000), Verdict::Settled);
    }

    #[test]
    fn a_record_past_the_offset_steps_back_in_growing_steps_down_to_the_log_start() {
        let mut p = probe(1000, 900);
        assert_eq!(p.record(1010), Verdict::SeekBack(936));
        assert_eq!(p.record(1010), Verdict::SeekBack(900));
        assert_eq!(
            p.record(1010),
            Verdict::Settled,
            "at the log start: a real gap"
        );
    }

    #[test]
    fn silence_and_an_end_past_the_offset_step_back_too() {
        let mut p = probe(1000, 0);
        assert_eq!(p.silence(), Verdict::SeekBack(936));
        assert_eq!(p.end(1200), Verdict::SeekBack(744));
        assert_eq!(p.silence(), Verdict::SeekBack(0));
        assert_eq!(p.silence(), Verdict::Settled);
    }

    #[tokio::test(start_paused = true)]
    async fn each_step_back_gives_the_broker_its_patience_again() {
        let mut p = probe(1000, 0);
        let first = p.deadline();
        tokio::time::advance(Duration::from_millis(500)).await;
        p.silence();
        assert_eq!(p.deadline() - first, Duration::from_millis(500));
    }
}
