//! Closing batches: a batch is the records that arrived until it holds `size`
//! of them, holds `max_bytes` of record values, or `wait` has passed since its
//! first record, whichever comes first. It also closes at once on the last
//! record the broker had when that record has already been in the log for
//! `wait` or more (the end of a backlog): waiting is for records produced
//! close together, and none is coming (issue 8: the last batch of every
//! partition waited 200 ms at the end of each run). Kept apart from fetching
//! so that the timing rule is tested with a paused clock.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::{app::config::BatchSettings, kafka::Record};

/// Anything with a size in bytes.
pub trait Weighed {
    fn bytes(&self) -> usize;

    /// True for the last record the broker had when it was fetched, if it
    /// has been in the log for at least `wait`: nothing produced within
    /// `wait` of it is left to wait for.
    fn ends_backlog(&self, _wait: Duration) -> bool {
        false
    }
}

impl Weighed for Record {
    fn bytes(&self) -> usize {
        self.size()
    }
}

/// When a batch closes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub records: usize,
    pub bytes: usize,
    pub wait: Duration,
}

impl From<&BatchSettings> for Limits {
    fn from(s: &BatchSettings) -> Self {
        Self {
            records: s.size,
            bytes: s.max_bytes,
            wait: s.wait(),
        }
    }
}

/// Waits for the next batch, in offset order; `None` once the channel is
/// closed and empty. A closed channel also ends a partly filled batch, which
/// is returned first. A batch closes once it reaches `limits.bytes`, so it
/// exceeds it by less than one record.
pub async fn next_batch<T: Weighed>(rx: &mut mpsc::Receiver<T>, limits: Limits) -> Option<Vec<T>> {
    // Until the first record, wait as long as it takes.
    let first = rx.recv().await?;
    let mut bytes = first.bytes();
    let mut ended = first.ends_backlog(limits.wait);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + limits.wait;
    while !ended && batch.len() < limits.records && bytes < limits.bytes {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => {
                bytes += r.bytes();
                ended = r.ends_backlog(limits.wait);
                batch.push(r);
            }
            Err(_) | Ok(None) => break, // deadline passed, or the fetcher is gone
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn record(offset: i64) -> Record {
        Record::new(offset, OffsetDateTime::UNIX_EPOCH, None)
    }

    fn limits(records: usize, wait: Duration) -> Limits {
        Limits {
            records,
            bytes: usize::MAX,
            wait,
        }
    }

    fn offsets(batch: &[Record]) -> Vec<i64> {
        batch.iter().map(|r| r.offset).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn closes_at_size_without_waiting() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0..5 {
            tx.send(record(i)).await.unwrap();
        }
        let start = tokio::time::Instant::now();
        let batch = next_batch(&mut rx, limits(3, Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(offsets(&batch), vec![0, 1, 2]);
        assert_eq!(start.elapsed(), Duration::ZERO);
        let batch = next_batch(&mut rx, limits(3, Duration::from_secs(60)));
        drop(tx);
        assert_eq!(offsets(&batch.await.unwrap()), vec![3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_after_wait_counted_from_the_first_record() {
        let (tx, mut rx) = mpsc::channel(16);
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            tx.send(record(0)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            tx.send(record(1)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(record(2)).await.unwrap();
            tx
        });
        let start = tokio::time::Instant::now();
        let batch = next_batch(&mut rx, limits(100, Duration::from_millis(200)))
            .await
            .unwrap();
        // First record at 500 ms, deadline 700 ms: record 1 (650 ms) is in, record 2 (750 ms) is not.
        assert_eq!(offsets(&batch), vec![0, 1]);
        assert_eq!(start.elapsed(), Duration::from_millis(700));
        let batch = next_batch(&mut rx, limits(100, Duration::from_millis(200)))
            .await
            .unwrap();
        assert_eq!(offsets(&batch), vec![2]);
        drop(producer.await.unwrap());
        assert!(
            next_batch(&mut rx, limits(100, Duration::from_millis(200)))
                .await
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closes_once_it_holds_max_bytes() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0..6 {
            let value = vec![b'x'; 400];
            tx.send(Record::new(i, OffsetDateTime::UNIX_EPOCH, Some(value)))
                .await
                .unwrap();
        }
        let limits = Limits {
            records: 100,
            bytes: 1000,
            wait: Duration::from_secs(60),
        };
        let start = tokio::time::Instant::now();
        // 400 + 400 < 1000, the third reaches it: 1200 bytes, closed at once.
        let batch = next_batch(&mut rx, limits).await.unwrap();
        assert_eq!(offsets(&batch), vec![0, 1, 2]);
        assert_eq!(start.elapsed(), Duration::ZERO);
        let batch = next_batch(&mut rx, limits).await.unwrap();
        assert_eq!(offsets(&batch), vec![3, 4, 5]);
    }

    /// A record that says whether it ends a backlog.
    struct Tail(i64, bool);

    impl Weighed for Tail {
        fn bytes(&self) -> usize {
            1
        }
        fn ends_backlog(&self, _wait: Duration) -> bool {
            self.1
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_a_backlog_closes_the_batch_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        for (offset, ends) in [(0, false), (1, true), (2, true)] {
            tx.send(Tail(offset, ends)).await.unwrap();
        }
        let start = tokio::time::Instant::now();
        let wait = Duration::from_millis(200);
        let first = next_batch(&mut rx, limits(100, wait)).await.unwrap();
        assert_eq!(first.iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 1]);
        let second = next_batch(&mut rx, limits(100, wait)).await.unwrap();
        assert_eq!(second.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2]);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no wait at the end of a backlog"
        );

        // A tail that is not the end of a backlog waits as before.
        tx.send(Tail(3, false)).await.unwrap();
        let third = next_batch(&mut rx, limits(100, wait)).await.unwrap();
        assert_eq!(third.len(), 1);
        assert_eq!(start.elapsed(), wait);
    }
}
