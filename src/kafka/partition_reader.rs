//! One partition as read through the instance's consumer
//! ([`super::consumer`]): its own fetch queue, drained many records per call,
//! and its position, moved by seeking.
//!
//! rust-rdkafka's message stream hands over one record per poll, and each
//! poll reads the clock, allocates an event handle and takes the queue's
//! lock: about 7 % of the service's CPU samples (perf) while it read a
//! backlog. librdkafka's `rd_kafka_consume_batch_queue` takes up to
//! [`DRAIN_RECORDS`] records under one lock instead. The partition's queue is
//! split off the consumer's own queue before its first assignment, so
//! records only ever arrive there; the consumer's queue carries the events
//! (statistics, logs, errors).

use std::{
    collections::VecDeque,
    ffi::{CString, c_void},
    ptr::{self, NonNull},
    sync::Arc,
};

use rdkafka::{
    bindings as rd,
    consumer::{Consumer, StreamConsumer},
    error::KafkaError as RdError,
};
use tokio::sync::Notify;

use super::{KafkaError, LogEnds, Record, Reporter, consumer::Shared, record::record_time_ms};

/// The most records one drain takes off the queue.
pub const DRAIN_RECORDS: usize = 512;

/// What a drain yields, in the log's order.
#[derive(Debug)]
pub enum Fetched {
    Record(Record),
    /// The end of the log, at this offset: past the last record and any
    /// transaction markers after it.
    End(i64),
    /// A fetch error (librdkafka retries on its own, except out of range).
    Failed(KafkaError),
}

/// This instance's hold on one partition of the consumer. Released (or
/// dropped), the partition leaves the consumer's fetching.
pub struct PartitionReader {
    shared: Arc<Shared>,
    partition: i32,
    queue: Arc<FetchQueue>,
    /// Where reading was last (re)started, for a release's confirmation.
    started_at: std::sync::Mutex<Option<i64>>,
    released: bool,
}

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReader")
            .field("topic", &self.shared.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl PartitionReader {
    pub(super) fn new(shared: Arc<Shared>, partition: i32, queue: Arc<FetchQueue>) -> Self {
        Self {
            shared,
            partition,
            queue,
            started_at: std::sync::Mutex::new(None),
            released: false,
        }
    }

    /// The partition read.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Reads from `offset` on: the partition is assigned there, or, when it
    /// is assigned already, sought there. Records fetched for the earlier
    /// position and not drained yet are dropped by librdkafka.
    pub async fn start_from(&self, offset: i64) -> Result<(), KafkaError> {
        *self
            .started_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(offset);
        self.shared.start_from(self.partition, offset).await
    }

    /// Moves the position to `offset` (a seek on the assigned partition).
    pub async fn seek(&self, offset: i64) -> Result<(), KafkaError> {
        self.shared.seek(self.partition, offset).await
    }

    /// Waits until records (or an end of log, or an error) may be waiting.
    /// It may wake with nothing to drain; it never sleeps through an arrival
    /// that happened after the last drain found the queue empty.
    pub async fn readable(&self) {
        self.queue.readable.notified().await;
    }

    /// Moves what the queue holds now, at most [`DRAIN_RECORDS`], to `out`;
    /// returns how many were moved (fewer than [`DRAIN_RECORDS`]: the queue
    /// was empty at the end).
    pub fn drain(&self, out: &mut VecDeque<Fetched>) -> usize {
        let taken = self.queue.drain(self.shared.max_record_bytes, out);
        if taken > 0 {
            self.shared.read_from(self.partition);
        }
        taken
    }

    /// The consumer's position in the partition: the offset after the last
    /// record or transaction marker it passed.
    pub fn position(&self) -> Option<i64> {
        let list = self.shared.client.position().ok()?;
        list.elements()
            .iter()
            .find(|e| e.topic() == self.shared.topic && e.partition() == self.partition)
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0)
    }

    /// The statistics' log ends not read before (see [`Reporter::log_ends`]).
    pub fn log_ends(&self) -> Option<LogEnds> {
        self.shared.client.context().log_ends(self.partition)
    }

    /// The high watermark of the partition as the last fetch reported it,
    /// read from librdkafka's memory without a request; `None` before the
    /// first fetch. rust-rdkafka offers only the request (ListOffsets), which
    /// Tansu 0.6 answers wrongly, and which a fetcher cannot afford per fetch.
    #[allow(unsafe_code)]
    pub fn fetched_high_watermark(&self) -> Option<i64> {
        let topic = CString::new(self.shared.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1_i64, -1_i64);
        // SAFETY: the client handle lives as long as `self.shared`;
        // librdkafka reads the NUL-terminated topic name and writes the two
        // offsets, under its own lock, and keeps no pointer to any of them.
        let error = unsafe {
            rd::rd_kafka_get_watermark_offsets(
                self.shared.client.client().native_ptr(),
                topic.as_ptr(),
                self.partition,
                &mut low,
                &mut high,
            )
        };
        (error == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }

    /// Gives the partition up: it leaves the consumer's assignment (or, when
    /// that could abort librdkafka, is paused; see [`super::consumer`]).
    pub async fn release(&mut self) {
        if self.released {
            return;
        }
        let at = *self
            .started_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.shared.release(self.partition, at).await;
        self.released = true;
    }
}

impl Drop for PartitionReader {
    /// A reader dropped without [`PartitionReader::release`] (its task
    /// panicked or was cancelled) pauses the partition, which needs no wait.
    fn drop(&mut self) {
        if !self.released {
            self.shared.park(self.partition);
        }
    }
}

/// librdkafka's fetch queue of one partition, no longer forwarded to the
/// consumer's queue, with a callback that wakes [`PartitionReader::readable`]
/// whenever it goes from empty to holding something.
///
/// It holds the consumer: librdkafka's queue handle points into the client,
/// so the client must outlive it. A reader dropped last, after the
/// [`Shared`] it read through, would otherwise destroy its queue in a freed
/// client (a segmentation fault seen when a service shut down).
pub(super) struct FetchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    readable: Arc<Notify>,
    /// The callback's reference to `readable`, given back on drop.
    callback_ref: *const Notify,
    /// Released after `drop` destroyed `queue`.
    _client: Arc<StreamConsumer<Reporter>>,
}

// SAFETY: librdkafka's queue handles may be used from any thread (every
// operation takes the queue's lock); `callback_ref` is only dereferenced by
// the callback and released on drop, after the callback is disabled.
#[allow(unsafe_code)]
unsafe impl Send for FetchQueue {}
// SAFETY: as above; `&FetchQueue` only drains and waits.
#[allow(unsafe_code)]
unsafe impl Sync for FetchQueue {}

/// Called by librdkafka, on one of its threads, when the queue goes from
/// empty to holding something.
#[allow(unsafe_code)]
unsafe extern "C" fn on_nonempty(_: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Arc<Notify>` reference that `FetchQueue` holds
    // for the callback until after it disabled the callback.
    let readable = unsafe { &*opaque.cast::<Notify>() };
    readable.notify_one();
}

impl FetchQueue {
    #[allow(unsafe_code)]
    pub(super) fn split(
        consumer: &Arc<StreamConsumer<Reporter>>,
        topic: &str,
        partition: i32,
    ) -> Result<Self, KafkaError> {
        let name = CString::new(topic).map_err(|_| KafkaError::NoTopic(topic.to_owned()))?;
        // SAFETY: the client handle is valid while `consumer` lives, and
        // this queue holds it; librdkafka copies the name. The handle returned is ours to destroy.
        let raw = unsafe {
            rd::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                name.as_ptr(),
                partition,
            )
        };
        let queue = NonNull::new(raw).ok_or_else(|| {
            KafkaError::Client(RdError::Subscription(format!(
                "no fetch queue for {topic} partition {partition}"
            )))
        })?;
        let readable = Arc::new(Notify::new());
        let callback_ref = Arc::into_raw(Arc::clone(&readable));
        // SAFETY: `queue` is a valid handle. Forwarding to nothing keeps the
        // records on this queue (and librdkafka never forwards a queue the
        // application forwarded). The callback's opaque pointer stays valid
        // until `drop` disabled the callback.
        unsafe {
            rd::rd_kafka_queue_forward(queue.as_ptr(), ptr::null_mut());
            rd::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(on_nonempty),
                callback_ref.cast_mut().cast(),
            );
        }
        Ok(Self {
            queue,
            readable,
            callback_ref,
            _client: Arc::clone(consumer),
        })
    }

    #[allow(unsafe_code)]
    fn drain(&self, max_record_bytes: usize, out: &mut VecDeque<Fetched>) -> usize {
        let mut messages = [ptr::null_mut::<rd::rd_kafka_message_t>(); DRAIN_RECORDS];
        // SAFETY: `messages` has room for `DRAIN_RECORDS` pointers; with a
        // zero timeout the call does not block.
        let taken = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                messages.as_mut_ptr(),
                DRAIN_RECORDS,
            )
        };
        let taken = usize::try_from(taken).unwrap_or(0).min(DRAIN_RECORDS);
        for &message in &messages[..taken] {
            // SAFETY: librdkafka returned `taken` valid messages, each ours
            // until destroyed; the payload slice is copied before that.
            let fetched = unsafe {
                let m = &*message;
                let fetched = match m.err {
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => {
                        let payload = (!m.payload.is_null())
                            .then(|| std::slice::from_raw_parts(m.payload.cast::<u8>(), m.len));
                        let mut kind =
                            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
                        let millis = rd::rd_kafka_message_timestamp(message, &mut kind);
                        Fetched::Record(Record::from_parts(
                            m.offset,
                            record_time_ms(millis),
                            payload,
                            max_record_bytes,
                        ))
                    }
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                        Fetched::End(m.offset)
                    }
                    code => Fetched::Failed(RdError::MessageConsumption(code.into()).into()),
                };
                rd::rd_kafka_message_destroy(message);
                fetched
            };
            out.push_back(fetched);
        }
        taken
    }
}

impl Drop for FetchQueue {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: disabling the callback (under the queue's lock) comes
        // before the handle is destroyed and before the callback's reference
        // to `readable` is released; neither is used afterwards.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
            drop(Arc::from_raw(self.callback_ref));
        }
    }
}
