//! What each partition's consumer is doing, shared with health checks and
//! metrics without locks on the hot path.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

/// Live state of one partition's consumer.
#[derive(Debug)]
pub struct PartitionStatus {
    pub partition: i32,
    committed: AtomicI64,
    high_watermark: AtomicI64,
    running: AtomicBool,
    owned: AtomicBool,
    settled: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Cancelled to make this instance give the partition up (rebalancing).
    handle: Mutex<Option<tokio_util::sync::CancellationToken>>,
    /// Last commit, or when this instance took the partition if later.
    progress_at: Mutex<Option<Instant>>,
    /// Records waiting this long without a commit make the partition stalled.
    stall_after: Duration,
}

const UNKNOWN: i64 = -1;

impl PartitionStatus {
    pub fn new(partition: i32, stall_after: Duration) -> Self {
        Self {
            progress_at: Mutex::new(None),
            stall_after,
            partition,
            committed: AtomicI64::new(UNKNOWN),
            high_watermark: AtomicI64::new(UNKNOWN),
            running: AtomicBool::new(false),
            owned: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            last_error: Mutex::new(None),
            handle: Mutex::new(None),
        }
    }

    /// Records the offset loaded from the store (no progress implied).
    pub fn set_committed(&self, offset: i64) {
        self.committed.store(offset, Ordering::Relaxed);
    }

    /// Records a successful commit up to `offset`.
    pub fn committed_now(&self, offset: i64) {
        self.set_committed(offset);
        *lock(&self.progress_at) = Some(Instant::now());
    }

    /// Time since the last commit, or since this instance took the partition
    /// if it has not committed since; `None` while not held.
    pub fn since_progress(&self) -> Option<Duration> {
        if !self.is_owned() {
            return None;
        }
        lock(&self.progress_at).map(|at| at.elapsed())
    }

    /// Held here, records waiting, and no commit for `stall_after`.
    pub fn is_stalled(&self) -> bool {
        self.lag() > 0 && self.since_progress().is_some_and(|d| d >= self.stall_after)
    }

    /// Records the high watermark of a fetch response.
    pub fn set_high_watermark(&self, offset: i64) {
        self.high_watermark.store(offset, Ordering::Relaxed);
    }

    /// Raises the known high watermark to at least `offset` (an estimate taken
    /// while fetches fail: never lowers what a fetch reported).
    pub fn raise_high_watermark(&self, offset: i64) {
        self.high_watermark.fetch_max(offset, Ordering::Relaxed);
    }

    /// Next offset committed to PostgreSQL, if any.
    pub fn committed(&self) -> Option<i64> {
        Some(self.committed.load(Ordering::Relaxed)).filter(|o| *o >= 0)
    }

    /// Latest high watermark reported by the broker, if any.
    pub fn high_watermark(&self) -> Option<i64> {
        Some(self.high_watermark.load(Ordering::Relaxed)).filter(|o| *o >= 0)
    }

    /// Records on the broker not yet committed (0 when unknown).
    pub fn lag(&self) -> i64 {
        match (self.high_watermark(), self.committed()) {
            (Some(hw), Some(c)) => (hw - c).max(0),
            (Some(hw), None) => hw,
            _ => 0,
        }
    }

    /// Marks the pipeline as running or not. A restarted pipeline keeps the
    /// error that stopped the last one until its fetcher hands records (or
    /// the end of the log) over, so that an error that recurs at every
    /// restart never reads as gone between two of them.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    /// Marks whether this instance holds the partition; taking it
    /// starts the clock of [`Self::since_progress`].
    pub fn set_owned(&self, owned: bool) {
        self.owned.store(owned, Ordering::Relaxed);
        *lock(&self.progress_at) = owned.then(Instant::now);
    }

    /// Records that the first attempt to take the partition has answered (held or not).
    pub fn set_settled(&self) {
        self.settled.store(true, Ordering::Relaxed);
    }

    /// True once this instance knows whether it holds the partition.
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }

    /// Remembers the token that stops this partition's pipeline while held.
    pub fn set_handle(&self, token: Option<tokio_util::sync::CancellationToken>) {
        *lock(&self.handle) = token;
    }

    /// Asks the pipeline to stop and the partition to be released.
    pub fn hand_back(&self) {
        if let Some(token) = lock(&self.handle).take() {
            token.cancel();
        }
    }

    /// True while this instance holds the partition.
    pub fn is_owned(&self) -> bool {
        self.owned.load(Ordering::Relaxed)
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    pub fn set_error(&self, error: String) {
        self.running.store(false, Ordering::Relaxed);
        *lock(&self.last_error) = Some(error);
    }

    /// Forgets the last error without claiming the pipeline runs.
    pub fn clear_error(&self) {
        *lock(&self.last_error) = None;
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
}

/// A poisoned lock still holds a usable value: every writer here leaves it whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The partitions of the topic this instance knows, shared by the consumer,
/// health checks and metrics; it grows when the topic gains partitions.
#[derive(Debug, Clone)]
pub struct Partitions {
    known: Arc<RwLock<Vec<Arc<PartitionStatus>>>>,
    stall_after: Duration,
}

impl Partitions {
    pub fn new(ids: &[i32], stall_after: Duration) -> Self {
        let partitions = Self {
            known: Arc::default(),
            stall_after,
        };
        partitions.add_missing(ids);
        partitions
    }

    /// Every known partition, in partition order.
    pub fn snapshot(&self) -> Vec<Arc<PartitionStatus>> {
        self.known.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn get(&self, partition: i32) -> Option<Arc<PartitionStatus>> {
        self.snapshot()
            .into_iter()
            .find(|s| s.partition == partition)
    }

    pub fn len(&self) -> usize {
        self.known.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Partitions this instance holds.
    pub fn owned(&self) -> usize {
        self.snapshot().iter().filter(|s| s.is_owned()).count()
    }

    /// Hands back `excess` of the partitions held here, highest numbers first.
    pub fn hand_back(&self, excess: usize) {
        let mut owned: Vec<Arc<PartitionStatus>> = self
            .snapshot()
            .into_iter()
            .filter(|s| s.is_owned())
            .collect();
        owned.sort_by_key(|s| std::cmp::Reverse(s.partition));
        for status in owned.into_iter().take(excess) {
            tracing::info!(
                partition = status.partition,
                "handing a partition back to rebalance"
            );
            status.hand_back();
        }
    }

    /// Adds the partitions of `ids` not known yet; returns them.
    pub fn add_missing(&self, ids: &[i32]) -> Vec<Arc<PartitionStatus>> {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        let mut added = Vec::new();
        for id in ids {
            if !known.iter().any(|s| s.partition == *id) {
                let status = Arc::new(PartitionStatus::new(*id, self.stall_after));
                known.push(Arc::clone(&status));
                added.push(status);
            }
        }
        known.sort_by_key(|s| s.partition);
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_keeps_the_best_known_high_watermark() {
        let s = PartitionStatus::new(0, Duration::from_secs(60));
        assert_eq!(s.lag(), 0, "unknown");
        s.raise_high_watermark(40);
        s.set_committed(10);
        assert_eq!(s.lag(), 30);
        s.set_high_watermark(100);
        s.raise_high_watermark(40);
        assert_eq!(s.lag(), 90, "an estimate never lowers a fetched value");
    }

    #[test]
    fn stalled_needs_ownership_waiting_records_and_time() {
        let s = PartitionStatus::new(0, Duration::ZERO);
        s.set_high_watermark(5);
        s.set_committed(0);
        assert!(!s.is_stalled(), "not held here");
        s.set_owned(true);
        assert!(s.is_stalled());
        s.committed_now(5);
        assert!(!s.is_stalled(), "nothing waits");
        let slow = PartitionStatus::new(1, Duration::from_secs(3600));
        slow.set_high_watermark(5);
        slow.set_owned(true);
        assert!(!slow.is_stalled(), "not for long enough");
    }

    #[test]
    fn excess_partitions_are_handed_back_highest_first() {
        let p = Partitions::new(&[0, 1, 2], Duration::from_secs(60));
        let tokens: Vec<tokio_util::sync::CancellationToken> = p
            .snapshot()
            .iter()
            .map(|s| {
                s.set_owned(true);
                let t = tokio_util::sync::CancellationToken::new();
                s.set_handle(Some(t.clone()));
                t
            })
            .collect();
        assert_eq!(p.owned(), 3);
        p.hand_back(1);
        let handed: Vec<bool> = tokens.iter().map(|t| t.is_cancelled()).collect();
        assert_eq!(handed, vec![false, false, true]);
    }

    #[test]
    fn partitions_grow_without_duplicates() {
        let p = Partitions::new(&[0, 1], Duration::from_secs(1));
        let added = p.add_missing(&[1, 0, 3, 2]);
        let ids: Vec<i32> = added.iter().map(|s| s.partition).collect();
        assert_eq!(ids, vec![3, 2]);
        let all: Vec<i32> = p.snapshot().iter().map(|s| s.partition).collect();
        assert_eq!(all, vec![0, 1, 2, 3]);
    }
}
