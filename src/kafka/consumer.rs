//! The instance's one librdkafka consumer: every partition this instance
//! holds is fetched by it, over one connection per broker, and it answers the
//! metadata and log-offset requests too.
//!
//! Partitions join and leave it with incremental assign and unassign as they
//! are taken and released; each has a fetch queue of its own
//! ([`PartitionReader`]), so one partition's backlog never waits behind
//! another's. Within a hold, a partition's position only moves by `seek`.
//!
//! librdkafka 2.12 aborts the process when a partition is removed from the
//! assignment while the stop of an earlier removal is still pending
//! (confluentinc/librdkafka#5573: a second FETCH_STOP fails an assertion when
//! its reply comes). A removal's stop is pending until librdkafka has served
//! it, and only then does it start the partition's next assignment. So a
//! partition is unassigned only once its current assignment is known to have
//! started: it was the partition's first assignment in this consumer, or a
//! seek on it succeeded, or it fetched something. Otherwise it is paused and
//! stays assigned ("parked"), and taking it again resumes it and seeks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{Consumer as _, StreamConsumer},
    error::{KafkaError as RdError, RDKafkaErrorCode},
    util::Timeout,
};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    KafkaError, Reporter,
    partition_reader::{FetchQueue, PartitionReader},
};
use crate::config::KafkaSettings;

/// How often the consumer's statistics report the ends of each partition's
/// log (for the lag, and to notice a log that ends before the consumer).
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(1);

/// How long a seek waits for librdkafka's answer.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a seek is retried while the partition's assignment has not
/// started yet (an earlier removal's stop is being served).
const START_PATIENCE: Duration = Duration::from_secs(30);

/// Pause between two seeks on an assignment that has not started yet.
const START_RECHECK: Duration = Duration::from_millis(10);

/// librdkafka's settings of the instance's consumer: read_committed, offsets
/// never committed to Kafka, and `kafka.*`'s bounds per partition.
pub fn config(settings: &KafkaSettings) -> ClientConfig {
    let queued_kbytes = (settings.buffered_half() / 1024).max(1);
    let partition_bytes = settings.fetch_max_bytes.max(1024);
    // One fetch request carries every partition led by a broker; each
    // partition brings at most `kafka.fetch_max_bytes` of it.
    let request_bytes = partition_bytes.saturating_mul(64).min(64 << 20);
    let mut config = super::client_config(settings);
    config
        .set("group.id", "warehouse-monitor")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // Our policy (`kafka.offset_out_of_range`) decides, not librdkafka's.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", settings.fetch_max_wait_ms.to_string())
        .set(
            "fetch.max.bytes",
            request_bytes.max(partition_bytes).to_string(),
        )
        .set("fetch.message.max.bytes", partition_bytes.to_string())
        // A record larger than a fetch still comes whole (the broker
        // returns at least one record); a response librdkafka refused for
        // its size would be fetched again forever, so none is refused.
        // `kafka.max_record_bytes` then rejects the record as `too_large`.
        .set("receive.message.max.bytes", i32::MAX.to_string())
        // Per partition, since each has its own queue: a partition whose
        // batches fall behind stops being fetched alone, while the others go on.
        .set("queued.max.messages.kbytes", queued_kbytes.to_string())
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.error.backoff.ms", "100")
        .set(
            "statistics.interval.ms",
            STATISTICS_INTERVAL.as_millis().to_string(),
        );
    config
}

/// The consumer, and what this instance assigned to it.
pub struct Shared {
    /// Each fetch queue holds the consumer too, so that it is destroyed
    /// before the consumer whatever holds it last.
    slots: Mutex<HashMap<i32, Slot>>,
    pub(super) client: Arc<StreamConsumer<Reporter>>,
    pub(super) topic: String,
    pub(super) max_record_bytes: usize,
    /// Stops the task that serves the consumer's events.
    _events: DropGuard,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// One partition as this consumer knows it.
struct Slot {
    queue: Arc<FetchQueue>,
    /// A reader holds it (this instance holds the partition).
    held: bool,
    /// In librdkafka's assignment (held, or parked after a release).
    assigned: bool,
    /// Paused by a release that could not unassign it.
    paused: bool,
    /// An earlier removal's stop may still be pending: the partition was
    /// unassigned before, and its current assignment is not known to have
    /// started. Removing it now could abort the process.
    stop_may_pend: bool,
    /// Where the current assignment or the last seek put it, while nothing
    /// has been read since.
    fresh_at: Option<i64>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Creates the consumer and the task serving its events (statistics,
    /// logs, errors); the task ends when this is dropped.
    pub fn create(settings: &KafkaSettings) -> Result<Arc<Self>, KafkaError> {
        let client: StreamConsumer<Reporter> =
            config(settings).create_with_context(Reporter::for_topic(&settings.topic))?;
        let client = Arc::new(client);
        let stop = CancellationToken::new();
        tokio::spawn(serve_events(Arc::clone(&client), stop.clone()));
        Ok(Arc::new(Self {
            slots: Mutex::new(HashMap::new()),
            client,
            topic: settings.topic.clone(),
            max_record_bytes: settings.max_record_bytes,
            _events: stop.drop_guard(),
        }))
    }

    /// A reader of `partition`, not assigned yet ([`PartitionReader::start_from`]
    /// assigns it). Its fetch queue is split off the consumer's queue once,
    /// before the partition's first assignment, and kept.
    pub fn reader(self: &Arc<Self>, partition: i32) -> Result<PartitionReader, KafkaError> {
        let mut slots = locked(&self.slots);
        let slot = match slots.entry(partition) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(Slot {
                queue: Arc::new(FetchQueue::split(&self.client, &self.topic, partition)?),
                held: false,
                assigned: false,
                paused: false,
                stop_may_pend: false,
                fresh_at: None,
            }),
        };
        if slot.held {
            return Err(KafkaError::Client(RdError::Subscription(format!(
                "partition {partition} is read already"
            ))));
        }
        slot.held = true;
        Ok(PartitionReader::new(
            Arc::clone(self),
            partition,
            Arc::clone(&slot.queue),
        ))
    }

    fn list(&self, partition: i32, offset: Option<i64>) -> Result<TopicPartitionList, KafkaError> {
        let mut list = TopicPartitionList::new();
        match offset {
            Some(offset) => {
                list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
            }
            None => {
                list.add_partition(&self.topic, partition);
            }
        }
        Ok(list)
    }

    /// Puts `partition` at `offset`: assigns it, or resumes it and seeks
    /// when it is assigned already. Nothing is done when it is there and
    /// nothing was read since.
    pub(super) async fn start_from(
        self: &Arc<Self>,
        partition: i32,
        offset: i64,
    ) -> Result<(), KafkaError> {
        let paused = {
            let mut slots = locked(&self.slots);
            let slot = slot(&mut slots, partition)?;
            if !slot.assigned {
                self.client
                    .incremental_assign(&self.list(partition, Some(offset))?)?;
                slot.assigned = true;
                slot.fresh_at = Some(offset);
                return Ok(());
            }
            if slot.fresh_at == Some(offset) && !slot.paused {
                return Ok(());
            }
            slot.paused
        };
        if paused {
            self.client.resume(&self.list(partition, None)?)?;
            if let Some(slot) = locked(&self.slots).get_mut(&partition) {
                slot.paused = false;
            }
        }
        self.seek(partition, offset).await
    }

    /// Seeks `partition` to `offset`, waiting while its assignment has not
    /// started; afterwards no earlier stop of it can be pending.
    pub(super) async fn seek(
        self: &Arc<Self>,
        partition: i32,
        offset: i64,
    ) -> Result<(), KafkaError> {
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        loop {
            let (shared, list) = (Arc::clone(self), self.list(partition, Some(offset))?);
            let answer = super::blocking(move || Ok(seek(&shared.client, list))).await?;
            match answer {
                Ok(()) => {
                    let mut slots = locked(&self.slots);
                    if let Some(slot) = slots.get_mut(&partition) {
                        slot.stop_may_pend = false;
                        slot.fresh_at = Some(offset);
                    }
                    return Ok(());
                }
                Err(e) if not_started(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(START_RECHECK).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Something was read from `partition`: its assignment has started.
    pub(super) fn read_from(&self, partition: i32) {
        if let Some(slot) = locked(&self.slots).get_mut(&partition) {
            slot.stop_may_pend = false;
            slot.fresh_at = None;
        }
    }

    /// Gives `partition` up: unassigns it when that is safe (see the module
    /// doc), confirming with a seek to `offset` that its assignment started
    /// when that is not known; otherwise pauses it.
    pub(super) async fn release(self: &Arc<Self>, partition: i32, offset: Option<i64>) {
        let confirm = {
            let slots = locked(&self.slots);
            slots
                .get(&partition)
                .is_some_and(|s| s.assigned && s.stop_may_pend)
        };
        if confirm {
            let confirmed = match offset {
                Some(offset) => self.seek(partition, offset).await,
                None => Err(KafkaError::Client(RdError::Seek("no position".into()))),
            };
            if let Err(e) = confirmed {
                tracing::warn!(partition, error = %e, "partition's assignment not started; pausing it instead of unassigning it");
                self.park(partition);
                return;
            }
        }
        let mut slots = locked(&self.slots);
        let Some(slot) = slots.get_mut(&partition) else {
            return;
        };
        slot.held = false;
        if !slot.assigned {
            return;
        }
        // Here no earlier stop can pend: it was never unassigned before, or
        // the seek above confirmed its assignment started (only this reader
        // changes the slot meanwhile).
        debug_assert!(!slot.stop_may_pend);
        let unassigned = self
            .list(partition, None)
            .and_then(|list| Ok(self.client.incremental_unassign(&list)?));
        match unassigned {
            Ok(()) => {
                slot.assigned = false;
                slot.paused = false;
                slot.stop_may_pend = true;
                slot.fresh_at = None;
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "cannot unassign the partition; pausing it");
                drop(slots);
                self.park(partition);
            }
        }
    }

    /// Releases `partition` without a removal: paused, it stays assigned.
    pub(super) fn park(&self, partition: i32) {
        let mut slots = locked(&self.slots);
        let Some(slot) = slots.get_mut(&partition) else {
            return;
        };
        slot.held = false;
        if slot.assigned && !slot.paused {
            match self
                .list(partition, None)
                .and_then(|list| Ok(self.client.pause(&list)?))
            {
                Ok(()) => slot.paused = true,
                Err(e) => tracing::warn!(partition, error = %e, "cannot pause the partition"),
            }
        }
        slot.fresh_at = None;
    }

    /// The partitions in librdkafka's assignment that a reader holds, and
    /// those parked (tests and diagnostics).
    pub fn assigned(&self) -> (Vec<i32>, Vec<i32>) {
        let slots = locked(&self.slots);
        let mut held: Vec<i32> = slots
            .iter()
            .filter(|(_, s)| s.assigned && s.held)
            .map(|(p, _)| *p)
            .collect();
        let mut parked: Vec<i32> = slots
            .iter()
            .filter(|(_, s)| s.assigned && !s.held)
            .map(|(p, _)| *p)
            .collect();
        held.sort_unstable();
        parked.sort_unstable();
        (held, parked)
    }
}

fn slot(slots: &mut HashMap<i32, Slot>, partition: i32) -> Result<&mut Slot, KafkaError> {
    slots.get_mut(&partition).ok_or_else(|| {
        KafkaError::Client(RdError::Subscription(format!(
            "partition {partition} has no reader"
        )))
    })
}

/// Seeks the one partition of `list`, waiting for librdkafka's answer.
fn seek(client: &StreamConsumer<Reporter>, list: TopicPartitionList) -> Result<(), RdError> {
    let list = client.seek_partitions(list, Timeout::After(SEEK_TIMEOUT))?;
    list.elements().first().map_or(
        Ok(()),
        rdkafka::topic_partition_list::TopicPartitionListElem::error,
    )
}

/// librdkafka's answer to a seek on a partition whose assignment has not
/// started yet (or is stopping).
fn not_started(e: &RdError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::State | RDKafkaErrorCode::PreviousInProgress)
    )
}

/// Serves the consumer's own queue until `stop`: statistics, logs and
/// errors reach [`Reporter`] here. Records never arrive on it (each
/// partition's queue is split off before its first assignment); one that did
/// would be dropped with a warning, and read again after the next restart.
async fn serve_events(client: Arc<StreamConsumer<Reporter>>, stop: CancellationToken) {
    {
        let mut events = client.stream();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                item = events.next() => match item {
                    Some(Ok(message)) => {
                        use rdkafka::Message as _;
                        tracing::warn!(partition = message.partition(), offset = message.offset(),
                            "a record arrived outside its partition's queue; dropped");
                    }
                    Some(Err(RdError::PartitionEOF(_))) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "consumer event"),
                    None => break,
                },
            }
        }
    }
    // Closing a consumer blocks while librdkafka stops its fetchers.
    let _ = tokio::task::spawn_blocking(move || drop(client)).await;
}

impl Drop for Shared {
    /// Closing the consumer removes every partition still assigned: one whose
    /// earlier removal may still be stopping is first confirmed started (see
    /// the module doc), so that the close cannot abort the process.
    fn drop(&mut self) {
        let pending: Vec<i32> = locked(&self.slots)
            .iter()
            .filter(|(_, s)| s.assigned && s.stop_may_pend)
            .map(|(p, _)| *p)
            .collect();
        for partition in pending {
            let started = std::time::Instant::now();
            while started.elapsed() < START_PATIENCE {
                let Ok(list) = self.list(partition, Some(0)) else {
                    break;
                };
                match seek(&self.client, list) {
                    Err(e) if not_started(&e) => std::thread::sleep(START_RECHECK),
                    _ => break,
                }
            }
        }
    }
}
