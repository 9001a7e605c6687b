//! Encoding of one movement event as a warehouse sends it: the inverse of
//! [`decode`](crate::domain::event::decode), written once for everything that makes events (the demo
//! producer, the benchmarks, the integration tests), so that they all send
//! the wire format the decoder reads and a change of that format is one edit.
//!
//! A test that needs a malformed or hostile record starts from [`to_json`]
//! and breaks only what it tests (a field removed, a type changed, a
//! timestamp written with an offset), so the rest of the record stays valid.

use serde_json::{Map, Value};
use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

use super::{EVENT_TYPE, MovementEvent, SPEC_VERSION, subject};

/// Attributes a warehouse also sends, which the decoder does not read.
const DATA_CONTENT_TYPE: &str = "application/json";
const DATA_SCHEMA: &str = "ru.retail.warehouses.movement.v1.0";
const DESTINATION: &str = "ru.retail.warehouses";

/// `event` as its CloudEvents JSON document, attributes in the order a
/// warehouse writes them. `time` is left out when `emitted_at` is `None`;
/// `data.timestamp` is written in UTC. What the decoder gives back equals
/// `event` when `emitted_at` holds whole milliseconds and `happened_at` whole
/// microseconds (the precisions of the wire and of the decoder).
pub fn to_json(event: &MovementEvent) -> Value {
    let mut data = Map::new();
    data.insert("movement_id".into(), event.movement_id.to_string().into());
    data.insert("warehouse_id".into(), event.warehouse_id.to_string().into());
    data.insert("timestamp".into(), rfc3339(event.happened_at).into());
    data.insert("event".into(), event.kind.as_str().into());
    data.insert("product_id".into(), event.product_id.to_string().into());
    data.insert("quantity".into(), event.quantity.into());

    let mut envelope = Map::new();
    envelope.insert("id".into(), event.message_id.to_string().into());
    envelope.insert("source".into(), event.source.as_str().into());
    envelope.insert("specversion".into(), SPEC_VERSION.into());
    envelope.insert("type".into(), EVENT_TYPE.into());
    envelope.insert("datacontenttype".into(), DATA_CONTENT_TYPE.into());
    envelope.insert("dataschema".into(), DATA_SCHEMA.into());
    if let Some(emitted_at) = event.emitted_at {
        envelope.insert("time".into(), epoch_millis(emitted_at).into());
    }
    envelope.insert("subject".into(), subject(&event.source, event.kind).into());
    envelope.insert("destination".into(), DESTINATION.into());
    envelope.insert("data".into(), Value::Object(data));
    Value::Object(envelope)
}

/// `event` as the bytes of a Kafka record value ([`to_json`], compact).
pub fn encode(event: &MovementEvent) -> Vec<u8> {
    to_json(event).to_string().into_bytes()
}

/// RFC 3339 in UTC. A time outside years 0..=9999, which no decoded event
/// holds, is written as an empty string, which the decoder rejects.
fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Whole milliseconds since the Unix epoch (any year of an `OffsetDateTime`
/// fits an `i64` of them).
fn epoch_millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
    use crate::domain::event::{EventKind, WarehouseCode, decode};

    fn event(kind: EventKind) -> MovementEvent {
        MovementEvent {
            message_id: Uuid::new_v4(),
            source: WarehouseCode::parse("WH-3322").unwrap(),
            emitted_at: Some(datetime!(2025-01-21 06:03:41.623 UTC)),
            movement_id: Uuid::new_v4(),
            warehouse_id: Uuid::new_v4(),
            happened_at: datetime!(2025-02-18 12:12:56.123456 UTC),
            kind,
            product_id: Uuid::new_v4(),
            quantity: 42,
        }
    }

    #[test]
    fn an_encoded_event_decodes_to_itself() {
        for kind in [EventKind::Departure, EventKind::Arrival] {
            let original = event(kind);
            assert_eq!(decode(Some(&encode(&original))), Ok(original));
        }
        let without_time = MovementEvent {
            emitted_at: None,
            ..event(EventKind::Arrival)
        };
        assert_eq!(decode(Some(&encode(&without_time))), Ok(without_time));
    }

    #[test]
    fn the_timestamp_is_written_in_utc_and_the_time_in_epoch_milliseconds() {
        let mut original = event(EventKind::Departure);
        original.happened_at = datetime!(2025-02-18 17:00:00 +03:00);
        original.emitted_at = Some(datetime!(1969-12-31 23:59:59.999 UTC));
        let json = to_json(&original);
        assert_eq!(json["data"]["timestamp"], "2025-02-18T14:00:00Z");
        assert_eq!(json["time"], -1);
        assert_eq!(json["subject"], "WH-3322:DEPARTURE");
        let decoded = decode(Some(&encode(&original))).unwrap();
        assert_eq!(decoded.happened_at, original.happened_at);
        assert_eq!(decoded.emitted_at, original.emitted_at);
    }
}
