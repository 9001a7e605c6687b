//! The consumer of one partition: a librdkafka consumer assigned to it, whose
//! partition has a fetch queue of its own, drained many records per call.
//!
//! rust-rdkafka's message stream hands over one record per poll, and each
//! poll reads the clock, allocates an event handle and takes the queue's
//! lock: about 7 % of the service's CPU samples (perf) while it read a
//! backlog. librdkafka's `rd_kafka_consume_batch_queue` takes up to
//! [`DRAIN_RECORDS`] records under one lock instead. The partition's queue is
//! split off the consumer's own queue before the first assignment, so records
//! only ever arrive there; the consumer's queue carries the events
//! (statistics, logs, errors), which [`PartitionConsumer::events`] serves.

use std::{
    collections::VecDeque,
    ffi::{CString, c_void},
    ptr::{self, NonNull},
    sync::Arc,
};

use rdkafka::{
    Offset, TopicPartitionList, bindings as rd,
    consumer::{Consumer, MessageStream, StreamConsumer},
    error::KafkaError as RdError,
};
use tokio::sync::Notify;

use super::{KafkaError, LogEnds, Record, Reporter, record::record_time_ms};

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

/// One partition's consumer. Dropped, it closes its queue before the
/// consumer (fields drop in order).
pub struct PartitionConsumer {
    queue: FetchQueue,
    consumer: StreamConsumer<Reporter>,
    topic: String,
    partition: i32,
    max_record_bytes: usize,
}

impl std::fmt::Debug for PartitionConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionConsumer")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl PartitionConsumer {
    /// Splits the partition's queue off `consumer`, then assigns the
    /// partition at `offset`. Values over `max_record_bytes` are cut (see
    /// [`Record::from_parts`]).
    pub fn new(
        consumer: StreamConsumer<Reporter>,
        topic: &str,
        partition: i32,
        offset: i64,
        max_record_bytes: usize,
    ) -> Result<Self, KafkaError> {
        let queue = FetchQueue::split(&consumer, topic, partition)?;
        let this = Self {
            queue,
            consumer,
            topic: topic.to_owned(),
            partition,
            max_record_bytes,
        };
        this.assign(offset)?;
        Ok(this)
    }

    /// (Re)assigns the partition, from `offset`. Records fetched for the
    /// earlier assignment and not drained yet are dropped by librdkafka.
    pub fn assign(&self, offset: i64) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))?;
        self.consumer.assign(&list)?;
        Ok(())
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
        self.queue.drain(self.max_record_bytes, out)
    }

    /// The consumer's own queue: serves its events (statistics, logs) when
    /// polled, and yields the errors that concern no partition.
    pub fn events(&self) -> MessageStream<'_, Reporter> {
        self.consumer.stream()
    }

    /// The consumer's position: the offset after the last record or
    /// transaction marker it passed.
    pub fn position(&self) -> Option<i64> {
        let list = self.consumer.position().ok()?;
        list.elements()
            .iter()
            .find(|e| e.partition() == self.partition)
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0)
    }

    /// The statistics' log ends not read before (see [`Reporter::log_ends`]).
    pub fn log_ends(&self) -> Option<LogEnds> {
        self.consumer.context().log_ends()
    }

    /// The high watermark of the partition as the last fetch reported it,
    /// read from librdkafka's memory without a request; `None` before the
    /// first fetch. rust-rdkafka offers only the request (ListOffsets), which
    /// Tansu 0.6 answers wrongly, and which a fetcher cannot afford per fetch.
    #[allow(unsafe_code)]
    pub fn fetched_high_watermark(&self) -> Option<i64> {
        let topic = CString::new(self.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1_i64, -1_i64);
        // SAFETY: the client handle lives as long as `self.consumer`;
        // librdkafka reads the NUL-terminated topic name and writes the two
        // offsets, under its own lock, and keeps no pointer to any of them.
        let error = unsafe {
            rd::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                self.partition,
                &mut low,
                &mut high,
            )
        };
        (error == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }
}

/// librdkafka's fetch queue of one partition, no longer forwarded to the
/// consumer's queue, with a callback that wakes [`PartitionConsumer::readable`]
/// whenever it goes from empty to holding something.
struct FetchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    readable: Arc<Notify>,
    /// The callback's reference to `readable`, given back on drop.
    callback_ref: *const Notify,
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
    fn split(
        consumer: &StreamConsumer<Reporter>,
        topic: &str,
        partition: i32,
    ) -> Result<Self, KafkaError> {
        let name = CString::new(topic).map_err(|_| KafkaError::NoTopic(topic.to_owned()))?;
        // SAFETY: the client handle is valid while `consumer` lives, which
        // outlives this queue (see `PartitionConsumer`'s field order);
        // librdkafka copies the name. The handle returned is ours to destroy.
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
