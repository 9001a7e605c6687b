//! What each partition's consumer is doing, shared with health checks and
//! metrics without locks on the hot path.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicI64, Ordering},
};

/// Live state of one partition's consumer.
#[derive(Debug)]
pub struct PartitionStatus {
    pub partition: i32,
    committed: AtomicI64,
    invalidated: AtomicI64,
    high_watermark: AtomicI64,
    running: AtomicBool,
    owned: AtomicBool,
    settled: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Cancelled to make this instance give the partition up (rebalancing).
    handle: Mutex<Option<tokio_util::sync::CancellationToken>>,
}

const UNKNOWN: i64 = -1;

impl PartitionStatus {
    pub fn new(partition: i32) -> Self {
        Self {
            partition,
            committed: AtomicI64::new(UNKNOWN),
            invalidated: AtomicI64::new(UNKNOWN),
            high_watermark: AtomicI64::new(UNKNOWN),
            running: AtomicBool::new(false),
            owned: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            last_error: Mutex::new(None),
            handle: Mutex::new(None),
        }
    }

    pub fn set_committed(&self, offset: i64) {
        self.committed.store(offset, Ordering::Relaxed);
    }

    /// Records that the cache keys of every batch before `offset` are invalidated.
    pub fn set_invalidated(&self, offset: i64) {
        self.invalidated.store(offset, Ordering::Relaxed);
    }

    /// Offset up to which committed batches have had their cache keys invalidated
    /// (or queued for invalidation while Redis is unreachable, reads then
    /// bypassing the cache).
    pub fn invalidated(&self) -> Option<i64> {
        Some(self.invalidated.load(Ordering::Relaxed)).filter(|o| *o >= 0)
    }

    pub fn set_high_watermark(&self, offset: i64) {
        self.high_watermark.store(offset, Ordering::Relaxed);
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

    /// Marks the pipeline as running (clearing the last error) or not.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
        if running {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Marks whether this instance holds the partition's lease.
    pub fn set_owned(&self, owned: bool) {
        self.owned.store(owned, Ordering::Relaxed);
    }

    /// Records that the first lease attempt has answered (held or not).
    pub fn set_settled(&self) {
        self.settled.store(true, Ordering::Relaxed);
    }

    /// True once this instance knows whether it holds the partition.
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }

    /// Remembers the token that stops this partition's pipeline while held.
    pub fn set_handle(&self, token: Option<tokio_util::sync::CancellationToken>) {
        *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// Asks the pipeline to stop and the lease to be released.
    pub fn hand_back(&self) {
        if let Some(token) = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take() {
            token.cancel();
        }
    }

    /// True while this instance holds the partition's lease.
    pub fn is_owned(&self) -> bool {
        self.owned.load(Ordering::Relaxed)
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    pub fn set_error(&self, error: String) {
        self.running.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
