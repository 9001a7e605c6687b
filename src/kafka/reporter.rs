//! What librdkafka reports on its own threads, kept for the service: its
//! logs routed to tracing, its last error (a TLS or SASL refusal is only ever
//! logged, so a failed connection says why with it), and the log ends of
//! each partition in the consumer's statistics (lag, and a log that ends
//! before the consumer).

use std::{collections::HashMap, sync::Mutex};

use rdkafka::{
    ClientContext,
    config::RDKafkaLogLevel,
    consumer::ConsumerContext,
    error::{KafkaError as RdError, RDKafkaErrorCode},
    statistics::Statistics,
};

/// Routes librdkafka's logs to tracing and keeps its last error, so that a
/// failed connection says why (a TLS or SASL failure is only ever logged).
#[derive(Debug, Default)]
pub struct Reporter {
    last_error: Mutex<Option<String>>,
    /// Per partition of the consumed topic, the statistics not read yet.
    log_ends: Mutex<HashMap<i32, LogEnds>>,
    /// The topic whose partitions' statistics are kept; empty: none.
    topic: String,
}

/// Where the log of a consumer's partition ends, as its last fetch said,
/// and where the consumer was fetching then (librdkafka's statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEnds {
    /// The first offset the broker holds.
    pub low: i64,
    /// The high watermark.
    pub high: i64,
    /// The last stable offset: the end as a `read_committed` consumer sees it.
    pub stable: i64,
    /// The next offset librdkafka fetches.
    pub fetching: i64,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Reporter {
    /// What librdkafka last reported as an error, if anything.
    pub fn last_error(&self) -> Option<String> {
        locked(&self.last_error).clone()
    }

    /// A reporter that also keeps the statistics of `topic`'s partitions.
    pub fn for_topic(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            ..Self::default()
        }
    }

    /// The statistics' log ends of `partition` not read before, if any: each
    /// snapshot is seen once, so that one taken before the position moved is
    /// not acted on twice.
    pub fn log_ends(&self, partition: i32) -> Option<LogEnds> {
        locked(&self.log_ends).remove(&partition)
    }
}

impl ClientContext for Reporter {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // librdkafka retries on its own: its errors are warnings of ours.
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: RdError, reason: &str) {
        if matches!(error, RdError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            return; // the end of the log, not an error
        }
        tracing::warn!(target: "librdkafka", %error, "{reason}");
        // "All brokers are down" follows the failure that took them down
        // (a TLS or SASL refusal): keep the cause.
        let summary = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        let mut last = locked(&self.last_error);
        if !(summary && last.is_some()) {
            *last = Some(reason.to_owned());
        }
    }

    /// The consumer's statistics: the log ends of each partition of the
    /// consumed topic that is being fetched.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut kept = locked(&self.log_ends);
        for (&id, p) in &topic.partitions {
            // -1 is librdkafka's internal "unassigned" partition; one that is
            // not being fetched (released, being moved) reports nothing of use.
            if id < 0 || p.fetch_state != "active" {
                continue;
            }
            kept.insert(
                id,
                LogEnds {
                    low: p.lo_offset,
                    high: p.hi_offset,
                    stable: p.ls_offset,
                    fetching: p.next_offset,
                },
            );
        }
    }
}

impl ConsumerContext for Reporter {}
