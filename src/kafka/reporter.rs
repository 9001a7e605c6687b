//! What librdkafka reports on its own threads, kept for the service: its
//! logs routed to tracing, its last error (a TLS or SASL refusal is only ever
//! logged, so a failed connection says why with it), and the log ends of a
//! partition consumer's statistics (lag, and a log that ends before the
//! consumer).

use std::sync::Mutex;

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
    log_ends: Mutex<Option<LogEnds>>,
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

    /// The statistics' log ends not read before, if any: each snapshot is
    /// seen once, so that one taken before a reassignment is not acted on twice.
    pub fn log_ends(&self) -> Option<LogEnds> {
        locked(&self.log_ends).take()
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

    /// A partition consumer's statistics: only its one partition is kept.
    fn stats(&self, statistics: Statistics) {
        let ends = statistics.topics.values().find_map(|topic| {
            topic
                .partitions
                .iter()
                .find(|(id, _)| **id >= 0)
                .map(|(_, p)| LogEnds {
                    low: p.lo_offset,
                    high: p.hi_offset,
                    stable: p.ls_offset,
                    fetching: p.next_offset,
                })
        });
        if ends.is_some() {
            *locked(&self.log_ends) = ends;
        }
    }
}

impl ConsumerContext for Reporter {}
