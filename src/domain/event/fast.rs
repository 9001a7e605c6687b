//! The fast path of [`super::decode`]: a well-formed event deserialized
//! straight into borrowed, typed fields (no `serde_json::Value` tree, no
//! allocation per key), then checked with the same rules as the general
//! path. It answers only "accepted, here is the event"; anything it cannot
//! take as it is (a missing or mistyped field, an escaped string, a
//! duplicate key, a value a rule refuses) returns `None`, and the general
//! path decides, with its ordered checks and its reason codes. So both paths
//! accept exactly the same records and build the same events (a property
//! test checks it on arbitrary and mutated bytes, and so does the fuzz
//! target `event` under tests/fuzz). Decoding was 38% of the service's CPU
//! while ingesting a backlog (perf).

use serde::{Deserialize, Deserializer, de::Visitor, forward_to_deserialize_any};
use uuid::Uuid;

use super::{
    EVENT_TYPE, EventKind, MAX_QUANTITY, MovementEvent, SPEC_VERSION, WarehouseCode, epoch_millis,
    parse_timestamp,
};

#[derive(Deserialize)]
struct Envelope<'a> {
    specversion: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    source: &'a str,
    /// Absent and null both mean "not given", as in the general path.
    time: Option<i64>,
    subject: Option<&'a str>,
    #[serde(borrow, deserialize_with = "object")]
    data: Data<'a>,
    #[serde(flatten)]
    _others: Others,
}

#[derive(Deserialize)]
struct Data<'a> {
    movement_id: &'a str,
    warehouse_id: &'a str,
    timestamp: &'a str,
    event: &'a str,
    product_id: &'a str,
    quantity: i64,
    #[serde(flatten)]
    _others: Others,
}

/// The fields that are not checked, read and dropped. serde's derive skips an
/// unknown field's value without reading it as what it is, so a number out of
/// `f64`'s range (found by the fuzz target `event`) or a string with a lone
/// surrogate escape (`"\ud800"`) went through, where the general path, which
/// reads every value, refuses the record as `malformed_json`. A flattened
/// field makes the derive read each of them in full (into serde's buffer,
/// borrowed where it can be), with the same errors as the general path.
#[derive(Deserialize)]
struct Others {}

/// A struct read only from a JSON object. serde's derive also takes a JSON
/// array holding the fields in order, which the general path refuses
/// (`malformed_json`, or `invalid_field` for `data`): so the fast path asks
/// for a map.
struct MapOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// `data`, from a JSON object only.
fn object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Data<'de>, D::Error> {
    Data::deserialize(MapOnly(deserializer))
}

/// The envelope, from a JSON object only.
fn envelope(text: &str) -> Result<Envelope<'_>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let envelope = Envelope::deserialize(MapOnly(&mut deserializer))?;
    deserializer.end()?;
    Ok(envelope)
}

/// The event, when `bytes` is a well-formed one that every rule accepts.
pub(super) fn decode(bytes: &[u8]) -> Option<MovementEvent> {
    // The whole value must be UTF-8, as on the general path: serde_json
    // would skip an ignored field's bytes unchecked.
    let text = std::str::from_utf8(bytes).ok()?;
    let e: Envelope<'_> = envelope(text).ok()?;
    if e.specversion != SPEC_VERSION || e.kind != EVENT_TYPE {
        return None;
    }
    let message_id = Uuid::parse_str(e.id).ok()?;
    let source = WarehouseCode::parse(e.source).ok()?;
    let emitted_at = match e.time {
        Some(ms) => Some(epoch_millis(&ms.into()).ok()?),
        None => None,
    };
    let d = e.data;
    let movement_id = Uuid::parse_str(d.movement_id).ok()?;
    let warehouse_id = Uuid::parse_str(d.warehouse_id).ok()?;
    let happened_at = parse_timestamp(d.timestamp)?;
    let kind = EventKind::parse(d.event)?;
    let product_id = Uuid::parse_str(d.product_id).ok()?;
    if !(1..=MAX_QUANTITY).contains(&d.quantity) {
        return None;
    }
    if let Some(subject) = e.subject {
        // `<source>:<EVENT>`, compared without building the expected string.
        let upper = match kind {
            EventKind::Departure => "DEPARTURE",
            EventKind::Arrival => "ARRIVAL",
        };
        let (code, event) = subject.split_once(':')?;
        if code != source.as_str() || event != upper {
            return None;
        }
    }
    Some(MovementEvent {
        message_id,
        source,
        emitted_at,
        movement_id,
        warehouse_id,
        happened_at,
        kind,
        product_id,
        quantity: d.quantity,
    })
}
