//! Fuzz target `event`: arbitrary bytes as a Kafka record value, through the
//! decoder the pipeline uses (`domain::event::decode`).
//!
//! `decode` tries a fast path first and falls back on the general path, so a
//! record it answers must be answered the same by the general path alone:
//! the fast path may only accept what the general path accepts, and build the
//! same event (a differential check). It must never panic, an accepted event
//! must keep the rules of docs/SPEC.md sections 2 and 3, and written back as
//! a record it must decode to itself (what is stored can be served and read
//! again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use warehouse_monitor::domain::event::{
    self, MAX_QUANTITY, MovementEvent, RejectReason, WarehouseCode, YEARS, paths,
};

fuzz_target!(|bytes: &[u8]| {
    let decoded = event::decode(Some(bytes));
    let general = paths::general(Some(bytes));
    if let Some(fast) = paths::fast(bytes) {
        assert_eq!(
            Ok(&fast),
            general.as_ref(),
            "the fast path accepted what the general path answers differently"
        );
    }
    assert_eq!(decoded, general, "decode differs from its general path");
    match decoded {
        Ok(event) => accepted(&event),
        Err(rejection) => {
            // The stage that applies events gives these, never the decoder.
            let later = [
                RejectReason::Conflict,
                RejectReason::TooLarge,
                RejectReason::Unprocessable,
            ];
            assert!(!later.contains(&rejection.reason), "{rejection}");
            assert!(!rejection.detail.is_empty());
        }
    }
});

/// The rules an accepted event keeps, and its round trip as a record.
fn accepted(event: &MovementEvent) {
    assert!((1..=MAX_QUANTITY).contains(&event.quantity), "{event:?}");
    assert_eq!(
        WarehouseCode::parse(event.source.as_str()).as_ref(),
        Ok(&event.source)
    );
    let happened = event.happened_at;
    assert_eq!(happened.offset(), UtcOffset::UTC, "{event:?}");
    assert!(YEARS.contains(&happened.year()), "{event:?}");
    assert_eq!(happened.nanosecond() % 1_000, 0, "not whole microseconds");
    if let Some(emitted) = event.emitted_at {
        assert!(YEARS.contains(&emitted.year()), "{event:?}");
    }

    let record = written_back(event);
    assert_eq!(
        event::decode(Some(record.as_bytes())).as_ref(),
        Ok(event),
        "{record}"
    );
}

/// The event as a record in the form of docs/SPEC.md section 2.
fn written_back(event: &MovementEvent) -> String {
    let time = event.emitted_at.map_or("null".to_owned(), millis);
    let timestamp = event.happened_at.format(&Rfc3339).expect("RFC 3339");
    let source = event.source.as_str();
    let kind = event.kind.as_str();
    format!(
        r#"{{"specversion":"1.0","type":"{}","id":"{}","source":"{source}","time":{time},"subject":"{source}:{}","data":{{"movement_id":"{}","warehouse_id":"{}","timestamp":"{timestamp}","event":"{kind}","product_id":"{}","quantity":{}}}}}"#,
        event::EVENT_TYPE,
        event.message_id,
        kind.to_ascii_uppercase(),
        event.movement_id,
        event.warehouse_id,
        event.product_id,
        event.quantity,
    )
}

fn millis(t: OffsetDateTime) -> String {
    (t.unix_timestamp_nanos() / 1_000_000).to_string()
}
