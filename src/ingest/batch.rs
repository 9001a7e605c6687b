//! Closing batches, by natural batching (group commit): a batch closes as
//! soon as waiting cannot make it bigger, that is when the partition has
//! caught up with the broker (the chunk holding its last record reached the
//! end of the log) and nothing more has arrived meanwhile. The batcher is
//! only asked for a batch when the partition's writer is free, so records
//! that arrive while a transaction runs are taken together by the next one:
//! at low load batches are small and immediate, under load they grow by
//! themselves. A batch also closes at `size` records, at `max_bytes` of
//! record values, or `wait` after its first record when the log goes on
//! (the upper bound on how long a record waits). Kept apart from fetching so
//! that the rule is tested with a paused clock.
//!
//! Records arrive a fetch at a time ([`Chunk`]), with one reservation of the
//! partition's byte budget for the whole chunk: one channel message, one
//! semaphore acquisition and one wake-up per chunk rather than per record
//! (these per-record hand-overs between the fetcher's and the batcher's
//! threads were service CPU that PostgreSQL's ceiling does not pay). A chunk
//! may be split over several batches; its reservation then goes with the batch
//! that takes its last record, which is committed after the others.

use std::time::Duration;

use tokio::sync::{
    OwnedSemaphorePermit,
    mpsc::{self, error::TryRecvError},
};

use crate::{config::BatchSettings, kafka::Record};

/// A record as the batcher sees it.
pub trait Weighed {
    /// The bytes it counts for against `batch.max_bytes`.
    fn bytes(&self) -> usize;
}

impl Weighed for Record {
    fn bytes(&self) -> usize {
        self.size()
    }
}

/// Records fetched together, in offset order, and their share of the
/// partition's byte budget.
#[derive(Debug)]
pub struct Chunk<T> {
    pub records: Vec<T>,
    /// Held until the batch that takes the last of `records` is committed.
    pub reservation: OwnedSemaphorePermit,
    /// The broker had no record after the last of `records`.
    pub last_in_log: bool,
    /// The offset after this chunk: past its last record and, at the end of
    /// the log, past the transaction markers that follow it. A chunk without
    /// records carries only this.
    pub end: i64,
}

/// A closed batch, and the budget it holds until it is committed.
#[derive(Debug)]
pub struct Batch<T> {
    pub records: Vec<T>,
    pub reservations: Vec<OwnedSemaphorePermit>,
    /// The end of the last chunk the batch took whole: the offset to store
    /// once it is committed, when that is past its last record (markers).
    pub end: Option<i64>,
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

/// The part of a chunk that no batch has taken yet.
#[derive(Debug)]
struct Open<T> {
    records: std::vec::IntoIter<T>,
    reservation: OwnedSemaphorePermit,
    last_in_log: bool,
    end: i64,
}

/// Cuts the chunks of one partition into batches.
#[derive(Debug)]
pub struct Batcher<T> {
    rx: mpsc::Receiver<Chunk<T>>,
    limits: Limits,
    open: Option<Open<T>>,
}

impl<T: Weighed> Batcher<T> {
    pub fn new(rx: mpsc::Receiver<Chunk<T>>, limits: Limits) -> Self {
        Self {
            rx,
            limits,
            open: None,
        }
    }

    /// Waits for the next batch, in offset order; `None` once the channel is
    /// closed and every record has been returned. A closed channel also ends
    /// a partly filled batch, which is returned first. A batch closes once it
    /// reaches `limits.bytes`, so it exceeds it by less than one record.
    pub async fn next(&mut self) -> Option<Batch<T>> {
        let limits = self.limits;
        let mut batch = Batch {
            records: Vec::new(),
            reservations: Vec::new(),
            end: None,
        };
        let mut bytes = 0;
        // Set when the batch takes its first record.
        let mut deadline = None;
        // The last chunk taken whole reached the end of the log.
        let mut caught_up = false;
        loop {
            let open = match self.open.as_mut() {
                Some(open) => open,
                None => {
                    let has_content = !batch.records.is_empty() || batch.end.is_some();
                    let chunk = match (has_content, deadline) {
                        // Until the first record, wait as long as it takes.
                        (false, _) => self.rx.recv().await?,
                        (true, _) if caught_up => match self.rx.try_recv() {
                            // More came while the writer was busy: take it too.
                            Ok(chunk) => chunk,
                            // Nothing more to wait for.
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                                return Some(batch);
                            }
                        },
                        (true, None) => return Some(batch),
                        (true, Some(at)) => {
                            match tokio::time::timeout_at(at, self.rx.recv()).await {
                                Ok(Some(chunk)) => chunk,
                                // Deadline passed, or the fetcher is gone.
                                Err(_) | Ok(None) => return Some(batch),
                            }
                        }
                    };
                    if batch.records.capacity() == 0 {
                        batch
                            .records
                            .reserve(limits.records.min(chunk.records.len()));
                    }
                    self.open.insert(Open {
                        records: chunk.records.into_iter(),
                        reservation: chunk.reservation,
                        last_in_log: chunk.last_in_log,
                        end: chunk.end,
                    })
                }
            };
            let mut full = false;
            for record in open.records.by_ref() {
                if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + limits.wait);
                }
                bytes += record.bytes();
                batch.records.push(record);
                full = batch.records.len() >= limits.records || bytes >= limits.bytes;
                if full {
                    break;
                }
            }
            if open.records.len() == 0 {
                caught_up = open.last_in_log;
                if let Some(done) = self.open.take() {
                    batch.reservations.push(done.reservation);
                    batch.end = Some(done.end);
                }
            } else {
                batch.end = None;
            }
            if full {
                return Some(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    /// A record with an offset and a size.
    #[derive(Debug)]
    struct Rec {
        offset: i64,
        bytes: usize,
    }

    impl Weighed for Rec {
        fn bytes(&self) -> usize {
            self.bytes
        }
    }

    fn rec(offset: i64) -> Rec {
        Rec { offset, bytes: 1 }
    }

    /// A chunk of `records` holding one reservation per record of `budget`.
    fn chunk(budget: &Arc<Semaphore>, records: Vec<Rec>, last_in_log: bool) -> Chunk<Rec> {
        let n = u32::try_from(records.len()).unwrap();
        let end = records.last().map_or(0, |r| r.offset + 1);
        Chunk {
            reservation: Arc::clone(budget).try_acquire_many_owned(n).unwrap(),
            records,
            last_in_log,
            end,
        }
    }

    fn limits(records: usize, wait: Duration) -> Limits {
        Limits {
            records,
            bytes: usize::MAX,
            wait,
        }
    }

    fn offsets(batch: &Batch<Rec>) -> Vec<i64> {
        batch.records.iter().map(|r| r.offset).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn closes_at_size_without_waiting() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::channel(16);
        tx.send(chunk(&budget, (0..2).map(rec).collect(), false))
            .await
            .unwrap();
        tx.send(chunk(&budget, (2..5).map(rec).collect(), false))
            .await
            .unwrap();
        let mut batcher = Batcher::new(rx, limits(3, Duration::from_secs(60)));
        let start = tokio::time::Instant::now();
        let batch = batcher.next().await.unwrap();
        assert_eq!(offsets(&batch), vec![0, 1, 2]);
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(tx);
        assert_eq!(offsets(&batcher.next().await.unwrap()), vec![3, 4]);
        assert!(batcher.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_larger_than_a_batch_fills_several() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::channel(16);
        tx.send(chunk(&budget, (0..7).map(rec).collect(), false))
            .await
            .unwrap();
        let mut batcher = Batcher::new(rx, limits(3, Duration::from_secs(60)));
        let start = tokio::time::Instant::now();
        let first = batcher.next().await.unwrap();
        let second = batcher.next().await.unwrap();
        assert_eq!(
            (offsets(&first), offsets(&second)),
            (vec![0, 1, 2], vec![3, 4, 5])
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The fetch's budget stays held until the batch with its last record.
        assert!(first.reservations.is_empty() && second.reservations.is_empty());
        drop((first, second));
        assert_eq!(budget.available_permits(), 93);
        let third = batcher.next().await.unwrap();
        assert_eq!(offsets(&third), vec![6]);
        assert_eq!(start.elapsed(), Duration::from_secs(60), "waited for more");
        assert_eq!(budget.available_permits(), 93);
        drop(third);
        assert_eq!(budget.available_permits(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_after_wait_counted_from_the_first_record() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::channel(16);
        let sent = Arc::clone(&budget);
        let producer = tokio::spawn(async move {
            for (pause, offset) in [(500, 0), (150, 1), (100, 2)] {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                tx.send(chunk(&sent, vec![rec(offset)], false))
                    .await
                    .unwrap();
            }
            tx
        });
        let mut batcher = Batcher::new(rx, limits(100, Duration::from_millis(200)));
        let start = tokio::time::Instant::now();
        let batch = batcher.next().await.unwrap();
        // First record at 500 ms, deadline 700 ms: record 1 (650 ms) is in, record 2 (750 ms) is not.
        assert_eq!(offsets(&batch), vec![0, 1]);
        assert_eq!(start.elapsed(), Duration::from_millis(700));
        assert_eq!(batch.reservations.len(), 2);
        let batch = batcher.next().await.unwrap();
        assert_eq!(offsets(&batch), vec![2]);
        drop(producer.await.unwrap());
        assert!(batcher.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn closes_once_it_holds_max_bytes() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::channel(16);
        let big = |offset| Rec { offset, bytes: 400 };
        tx.send(chunk(&budget, (0..6).map(big).collect(), false))
            .await
            .unwrap();
        let limits = Limits {
            records: 100,
            bytes: 1000,
            wait: Duration::from_secs(60),
        };
        let mut batcher = Batcher::new(rx, limits);
        let start = tokio::time::Instant::now();
        // 400 + 400 < 1000, the third reaches it: 1200 bytes, closed at once.
        assert_eq!(offsets(&batcher.next().await.unwrap()), vec![0, 1, 2]);
        assert_eq!(offsets(&batcher.next().await.unwrap()), vec![3, 4, 5]);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_partition_closes_on_its_one_record_at_once() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::channel(16);
        let mut batcher = Batcher::new(rx, limits(1000, Duration::from_millis(200)));
        let start = tokio::time::Instant::now();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            // The record the partition waited for, and nothing after it.
            tx.send(chunk(&budget, vec![rec(0)], true)).await.unwrap();
            tx
        });
        assert_eq!(offsets(&batcher.next().await.unwrap()), vec![0]);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3),
            "no wait for company that never comes"
        );
        drop(producer.await.unwrap());
        assert!(batcher.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_is_committed_record_by_record() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::channel(16);
        let mut batcher = Batcher::new(rx, limits(1000, Duration::from_millis(200)));
        let sent = Arc::clone(&budget);
        let producer = tokio::spawn(async move {
            for offset in 0..5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send(chunk(&sent, vec![rec(offset)], true))
                    .await
                    .unwrap();
            }
        });
        let start = tokio::time::Instant::now();
        for offset in 0..5 {
            let batch = batcher.next().await.unwrap();
            assert_eq!(offsets(&batch), vec![offset]);
            assert_eq!(
                start.elapsed(),
                Duration::from_millis(20 * (u64::try_from(offset).unwrap() + 1)),
                "each closes as it arrives"
            );
        }
        producer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_fills_batches_and_its_end_closes_at_once() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::channel(16);
        // Fetches from the middle of the log, then its end.
        tx.send(chunk(&budget, (0..4).map(rec).collect(), false))
            .await
            .unwrap();
        tx.send(chunk(&budget, (4..8).map(rec).collect(), false))
            .await
            .unwrap();
        tx.send(chunk(&budget, (8..10).map(rec).collect(), true))
            .await
            .unwrap();
        let mut batcher = Batcher::new(rx, limits(6, Duration::from_millis(200)));
        let start = tokio::time::Instant::now();
        assert_eq!(
            offsets(&batcher.next().await.unwrap()),
            vec![0, 1, 2, 3, 4, 5]
        );
        assert_eq!(offsets(&batcher.next().await.unwrap()), vec![6, 7, 8, 9]);
        assert_eq!(start.elapsed(), Duration::ZERO, "the end of a backlog");

        // A fetch that did not reach the end waits for more, up to `wait`.
        tx.send(chunk(&budget, vec![rec(10)], false)).await.unwrap();
        assert_eq!(offsets(&batcher.next().await.unwrap()), vec![10]);
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_slower_than_the_producer_gets_bigger_batches() {
        let budget = Arc::new(Semaphore::new(1000));
        let (tx, rx) = mpsc::channel(64);
        let sent = Arc::clone(&budget);
        // One record every 10 ms, each fetch reaching the end of the log.
        let producer = tokio::spawn(async move {
            for offset in 0..30 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.send(chunk(&sent, vec![rec(offset)], true))
                    .await
                    .unwrap();
            }
        });
        let mut batcher = Batcher::new(rx, limits(1000, Duration::from_millis(200)));
        let mut sizes = Vec::new();
        let mut next = 0;
        while next < 30 {
            let batch = batcher.next().await.unwrap();
            let got = offsets(&batch);
            assert_eq!(got[0], next, "in order, none lost");
            next = got[got.len() - 1] + 1;
            sizes.push(got.len());
            // The transaction takes 45 ms: records keep arriving meanwhile.
            tokio::time::sleep(Duration::from_millis(45)).await;
        }
        producer.await.unwrap();
        assert_eq!(sizes[0], 1, "the first record goes alone: {sizes:?}");
        assert!(
            sizes[1..sizes.len() - 1]
                .iter()
                .all(|n| (4..=5).contains(n)),
            "then what arrived during each transaction: {sizes:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn markers_at_the_end_of_the_log_move_the_end_and_close_at_once() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::channel(8);
        let mut batcher = Batcher::new(rx, limits(100, Duration::from_millis(200)));
        let start = tokio::time::Instant::now();
        // Records 0..3, then a commit marker at 3: the end moves to 4.
        tx.send(chunk(&budget, vec![rec(0), rec(1), rec(2)], false))
            .await
            .unwrap();
        let mut markers = chunk(&budget, Vec::new(), true);
        markers.end = 4;
        tx.send(markers).await.unwrap();
        let batch = batcher.next().await.unwrap();
        assert_eq!(offsets(&batch), vec![0, 1, 2]);
        assert_eq!(batch.end, Some(4), "past the marker");
        assert_eq!(start.elapsed(), Duration::ZERO, "nothing more is coming");

        // A marker alone: a batch without records that only moves the end.
        let mut markers = chunk(&budget, Vec::new(), true);
        markers.end = 9;
        tx.send(markers).await.unwrap();
        let batch = batcher.next().await.unwrap();
        assert!(batch.records.is_empty());
        assert_eq!(batch.end, Some(9));

        // A batch cut inside a chunk ends at its last record.
        let mut batcher_small = {
            let (tx2, rx2) = mpsc::channel(8);
            tx2.send(chunk(&budget, vec![rec(10), rec(11), rec(12)], true))
                .await
                .unwrap();
            Batcher::new(rx2, limits(2, Duration::from_millis(200)))
        };
        let first = batcher_small.next().await.unwrap();
        assert_eq!((offsets(&first), first.end), (vec![10, 11], None));
        let second = batcher_small.next().await.unwrap();
        assert_eq!((offsets(&second), second.end), (vec![12], Some(13)));
    }
}
