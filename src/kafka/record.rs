//! The record type of the pipeline, copied out of librdkafka's buffers with
//! its size bounded, and the record timestamp as the service uses it: a value
//! it cannot represent (none, -1, or beyond the years 1 to 9999) is unknown,
//! never an error, since any 64-bit timestamp is legal in Kafka.

use rdkafka::{Message, Timestamp};
use time::OffsetDateTime;

/// One Kafka record as fetched from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// The record's timestamp, `None` when absent or not representable.
    pub timestamp: Option<OffsetDateTime>,
    pub value: Option<Vec<u8>>,
    /// `Some(n)` when the value was `n` bytes, over `kafka.max_record_bytes`:
    /// `value` then holds only a bounded prefix and the record is rejected as
    /// `too_large`.
    pub truncated_from: Option<usize>,
}

impl Record {
    /// A record whose whole value was kept.
    pub fn new(offset: i64, timestamp: Option<OffsetDateTime>, value: Option<Vec<u8>>) -> Self {
        Self {
            offset,
            timestamp,
            value,
            truncated_from: None,
        }
    }

    /// Bytes this record holds in memory (its value, or the kept prefix).
    pub fn size(&self) -> usize {
        self.value.as_ref().map_or(0, Vec::len)
    }

    /// Copies a fetched message (see [`Record::from_parts`]).
    pub fn from_message(message: &impl Message, max_record_bytes: usize) -> Self {
        Self::from_parts(
            message.offset(),
            record_time(message.timestamp()),
            message.payload(),
            max_record_bytes,
        )
    }

    /// A record of the given parts, its value copied. A value over
    /// `max_record_bytes` is cut to its first [`KEPT_PREFIX_BYTES`] bytes and
    /// marked, so that it is rejected instead of held in memory.
    pub fn from_parts(
        offset: i64,
        timestamp: Option<OffsetDateTime>,
        payload: Option<&[u8]>,
        max_record_bytes: usize,
    ) -> Self {
        let (value, truncated_from) = match payload {
            Some(bytes) if bytes.len() > max_record_bytes => {
                let kept = KEPT_PREFIX_BYTES.min(max_record_bytes);
                (Some(bytes[..kept].to_vec()), Some(bytes.len()))
            }
            other => (other.map(<[u8]>::to_vec), None),
        };
        Self {
            offset,
            timestamp,
            value,
            truncated_from,
        }
    }
}

/// Bytes kept of a record value over `kafka.max_record_bytes`, stored with its
/// `too_large` rejection so that an operator can see what it was.
pub const KEPT_PREFIX_BYTES: usize = 4096;

/// The earliest record time the service represents (0001-01-01), in epoch ms.
const EARLIEST_MS: i64 = -62_135_596_800_000;
/// The latest (9999-12-31T23:59:59.999), in epoch ms.
const LATEST_MS: i64 = 253_402_300_799_999;

/// A record timestamp as a time, `None` when there is none or when it lies
/// outside the years 1 to 9999 (which PostgreSQL and the time crate both hold).
pub fn record_time(timestamp: Timestamp) -> Option<OffsetDateTime> {
    record_time_ms(timestamp.to_millis()?)
}

/// [`record_time`] of a timestamp in epoch milliseconds, -1 meaning none (as
/// librdkafka reports it).
pub fn record_time_ms(millis: i64) -> Option<OffsetDateTime> {
    if !(EARLIEST_MS..=LATEST_MS).contains(&millis) || millis == -1 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_64_bit_timestamp_is_a_time_or_unknown() {
        let at = |ms| record_time(Timestamp::CreateTime(ms));
        assert_eq!(at(-1), None, "-1 is Kafka's 'no timestamp'");
        assert_eq!(record_time(Timestamp::NotAvailable), None);
        assert_eq!(at(0), Some(OffsetDateTime::UNIX_EPOCH));
        assert_eq!(
            at(-2).map(|t| t.year()),
            Some(1969),
            "before the epoch: a time"
        );
        assert_eq!(
            record_time(Timestamp::LogAppendTime(1_700_000_000_123)).map(|t| t.unix_timestamp()),
            Some(1_700_000_000)
        );
        assert_eq!(at(10_i64.pow(16)), None, "year 318 857");
        assert_eq!(at(LATEST_MS).map(|t| t.year()), Some(9999));
        assert_eq!(at(LATEST_MS + 1), None);
        assert_eq!(at(EARLIEST_MS).map(|t| t.year()), Some(1));
        assert_eq!(at(EARLIEST_MS - 1), None);
        for ms in [i64::MIN, i64::MIN + 1, i64::MAX - 1, i64::MAX] {
            assert_eq!(at(ms), None, "{ms}");
        }
    }
}
