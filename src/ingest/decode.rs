//! The decode stage: every record of a batch becomes an event or a rejection.
//! A record cut to a prefix at fetch time because it was too large is
//! rejected as `too_large` without being decoded; the rest go through
//! [`crate::domain::event::decode`].

use crate::{
    domain::event::{self, MovementEvent, RejectReason, Rejection},
    kafka::Record,
};

/// One decoded record: its event, or why it is rejected.
pub type Decoded = Result<MovementEvent, Rejection>;

/// Decodes every record of a batch, in order.
pub fn decode_all(records: &[Record]) -> Vec<Decoded> {
    records.iter().map(decode_record).collect()
}

/// Every record rejected with the same reason and detail (quarantine).
pub fn reject_all(records: &[Record], reason: RejectReason, detail: &str) -> Vec<Decoded> {
    records
        .iter()
        .map(|_| Err(Rejection::new(reason, detail)))
        .collect()
}

fn decode_record(record: &Record) -> Decoded {
    match record.truncated_from {
        Some(size) => Err(Rejection::new(
            RejectReason::TooLarge,
            format!(
                "record value is {size} bytes, over kafka.max_record_bytes; \
                 its first {} bytes are kept",
                record.size()
            ),
        )),
        None => event::decode(record.value.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    #[test]
    fn a_truncated_record_is_too_large_and_others_are_decoded() {
        let mut big = Record::new(1, Some(OffsetDateTime::UNIX_EPOCH), Some(vec![b'{'; 10]));
        big.truncated_from = Some(5_000_000);
        let plain = Record::new(2, Some(OffsetDateTime::UNIX_EPOCH), Some(b"{".to_vec()));
        let decoded = decode_all(&[big, plain]);
        let reasons: Vec<RejectReason> = decoded
            .iter()
            .map(|d| d.as_ref().unwrap_err().reason)
            .collect();
        assert_eq!(
            reasons,
            vec![RejectReason::TooLarge, RejectReason::MalformedJson]
        );
        let detail = &decoded[0].as_ref().unwrap_err().detail;
        assert!(detail.contains("5000000 bytes"), "{detail}");
    }
}
