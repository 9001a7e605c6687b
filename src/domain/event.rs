//! Decoding and validation of one warehouse movement event.
//!
//! A Kafka record value is turned into a [`MovementEvent`] or into a
//! [`Rejection`] that carries a stable [`RejectReason`] code (docs/SPEC.md sections 2
//! and 3). This module does no I/O: it only looks at bytes, so every reason
//! code and every accepted form can be covered by plain unit tests, and the
//! consumer can store the rejection next to the raw record.
//!
//! Checks run in a fixed order and the first problem found is reported:
//! `specversion`, `type`, `id`, `source`, `time`, `subject` (type only),
//! `data`, then inside `data`: `movement_id`, `warehouse_id`, `timestamp`,
//! `event`, `product_id`, `quantity`; last, the *content* of `subject` is
//! compared with `<source>:<EVENT>`, because it needs `data.event`.

use std::fmt;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

/// CloudEvents `type` of every accepted record.
pub const EVENT_TYPE: &str = "ru.retail.warehouses.movement";
/// Largest accepted `data.quantity`.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// The only accepted CloudEvents `specversion`.
const SPEC_VERSION: &str = "1.0";
/// Longest rendering of an offending value kept in a rejection detail.
const MAX_SHOWN_CHARS: usize = 64;
/// Years an accepted time may fall in, after conversion to UTC: what both a
/// PostgreSQL `timestamptz` and an RFC 3339 string can hold, so that anything
/// accepted can be stored and served.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Whether goods left a warehouse or reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Departure,
    Arrival,
}

impl EventKind {
    /// The wire name: `"departure"` or `"arrival"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Departure => "departure",
            EventKind::Arrival => "arrival",
        }
    }

    /// Parses the exact, lower-case wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "departure" => Some(EventKind::Departure),
            "arrival" => Some(EventKind::Arrival),
            _ => None,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A warehouse code: `WH-` followed by one or more ASCII letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WarehouseCode(String);

impl WarehouseCode {
    /// Accepts `WH-` (upper case) followed by one or more ASCII alphanumerics.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("WH-")
            .ok_or_else(|| "a warehouse code must start with \"WH-\"".to_string())?;
        if rest.is_empty() {
            return Err(
                "a warehouse code needs at least one letter or digit after \"WH-\"".to_string(),
            );
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(
                "a warehouse code may only have ASCII letters or digits after \"WH-\"".to_string(),
            );
        }
        Ok(WarehouseCode(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WarehouseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One validated movement event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementEvent {
    /// Envelope `id`. Not unique: see docs/SPEC.md section 2.
    pub message_id: Uuid,
    /// Envelope `source`.
    pub source: WarehouseCode,
    /// Envelope `time` (epoch milliseconds), `None` when absent.
    pub emitted_at: Option<OffsetDateTime>,
    pub movement_id: Uuid,
    pub warehouse_id: Uuid,
    /// `data.timestamp` in UTC, truncated to whole microseconds (the precision
    /// of a PostgreSQL `timestamptz`), so a stored value compares equal to a
    /// freshly decoded one.
    pub happened_at: OffsetDateTime,
    pub kind: EventKind,
    pub product_id: Uuid,
    /// Always in `1..=MAX_QUANTITY`.
    pub quantity: i64,
}

/// Stable reason codes; never reuse or rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    MalformedJson,
    UnsupportedType,
    MissingField,
    InvalidField,
    InvalidQuantity,
    /// Produced by the stage that applies events, never by [`decode`].
    Conflict,
    /// The record's value is over `kafka.max_record_bytes`; only a prefix is kept.
    TooLarge,
    /// PostgreSQL refused to store the record (data-dependent error); the
    /// detail holds the database's SQLSTATE and message.
    Unprocessable,
}

impl RejectReason {
    pub const ALL: [RejectReason; 8] = [
        RejectReason::MalformedJson,
        RejectReason::UnsupportedType,
        RejectReason::MissingField,
        RejectReason::InvalidField,
        RejectReason::InvalidQuantity,
        RejectReason::Conflict,
        RejectReason::TooLarge,
        RejectReason::Unprocessable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::UnsupportedType => "unsupported_type",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::InvalidQuantity => "invalid_quantity",
            RejectReason::Conflict => "conflict",
            RejectReason::TooLarge => "too_large",
            RejectReason::Unprocessable => "unprocessable",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record was not applied: a stable code and a human detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// Decode one Kafka record value. `None` (a record without a value) is `malformed_json`.
pub fn decode(value: Option<&[u8]>) -> Result<MovementEvent, Rejection> {
    if let Some(event) = value.and_then(fast::decode) {
        return Ok(event);
    }
    decode_checked(value)
}

/// The general path of [`decode`]: every check, in order, with its reason.
fn decode_checked(value: Option<&[u8]>) -> Result<MovementEvent, Rejection> {
    let malformed = |detail: String| Rejection::new(RejectReason::MalformedJson, detail);
    let bytes = value.ok_or_else(|| malformed("record has no value".into()))?;
    let text =
        std::str::from_utf8(bytes).map_err(|e| malformed(format!("not valid UTF-8: {e}")))?;
    let root: Value =
        serde_json::from_str(text).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    let Value::Object(envelope) = &root else {
        return Err(malformed(format!(
            "expected a JSON object, got {}",
            json_kind(&root)
        )));
    };

    supported(envelope, "specversion", SPEC_VERSION)?;
    supported(envelope, "type", EVENT_TYPE)?;

    let message_id = uuid_field(envelope, "id", "id")?;
    let source_value = required(envelope, "source", "source")?;
    let source = source_value
        .as_str()
        .ok_or_else(|| invalid("source", "must be a string", source_value))
        .and_then(|s| {
            WarehouseCode::parse(s)
                .map_err(|why| invalid("source", &format!("is invalid ({why})"), source_value))
        })?;
    let emitted_at = optional(envelope, "time").map(epoch_millis).transpose()?;
    let subject = match optional(envelope, "subject") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => return Err(invalid("subject", "must be a string", other)),
    };

    let data_value = required(envelope, "data", "data")?;
    let Value::Object(data) = data_value else {
        return Err(invalid("data", "must be a JSON object", data_value));
    };
    let movement_id = uuid_field(data, "movement_id", "data.movement_id")?;
    let warehouse_id = uuid_field(data, "warehouse_id", "data.warehouse_id")?;
    let happened_at = timestamp(required(data, "timestamp", "data.timestamp")?)?;
    let event_value = required(data, "event", "data.event")?;
    let event_rule = "must be \"departure\" or \"arrival\"";
    let kind = (event_value.as_str().and_then(EventKind::parse))
        .ok_or_else(|| invalid("data.event", event_rule, event_value))?;
    let product_id = uuid_field(data, "product_id", "data.product_id")?;
    let quantity = quantity(required(data, "quantity", "data.quantity")?)?;

    // Last check: the subject's content depends on both `source` and `data.event`.
    if let Some(given) = subject {
        let expected = self::subject(&source, kind);
        if given != expected {
            return Err(invalid(
                "subject",
                &format!("must be \"{expected}\""),
                &given.into(),
            ));
        }
    }

    Ok(MovementEvent {
        message_id,
        source,
        emitted_at,
        movement_id,
        warehouse_id,
        happened_at,
        kind,
        product_id,
        quantity,
    })
}

/// The `subject` an event of `kind` from `source` carries: `<source>:<EVENT>`.
fn subject(source: &WarehouseCode, kind: EventKind) -> String {
    format!("{}:{}", source.as_str(), kind.as_str().to_ascii_uppercase())
}

/// `specversion` and `type`: required, and exactly `expected` or `unsupported_type`.
fn supported(obj: &Map<String, Value>, key: &str, expected: &str) -> Result<(), Rejection> {
    let v = required(obj, key, key)?;
    if v.as_str() == Some(expected) {
        return Ok(());
    }
    let detail = format!("{key} must be \"{expected}\", got {}", show(v));
    Err(Rejection::new(RejectReason::UnsupportedType, detail))
}

/// A field that must be present and not null; `path` names it in the detail.
fn required<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a Value, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(Rejection::new(
            RejectReason::MissingField,
            format!("{path} is missing"),
        )),
        Some(v) => Ok(v),
    }
}

/// An optional field: absent and null both mean "not given".
fn optional<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn invalid(path: &str, rule: &str, got: &Value) -> Rejection {
    Rejection::new(
        RejectReason::InvalidField,
        format!("{path} {rule}, got {}", show(got)),
    )
}

fn uuid_field(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Uuid, Rejection> {
    let v = required(obj, key, path)?;
    v.as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| invalid(path, "must be a UUID string", v))
}

/// `time`: an integer number of milliseconds since the Unix epoch, within [`YEARS`].
fn epoch_millis(v: &Value) -> Result<OffsetDateTime, Rejection> {
    let rule = "must be an integer of epoch milliseconds within years 1..=9999 (UTC)";
    v.as_i64()
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .filter(|t| YEARS.contains(&t.year()))
        .ok_or_else(|| invalid("time", rule, v))
}

/// `data.timestamp`: RFC 3339, or RFC 3339 without an offset (taken as UTC),
/// within [`YEARS`] once in UTC. The result is in UTC and truncated to whole
/// microseconds.
fn timestamp(v: &Value) -> Result<OffsetDateTime, Rejection> {
    let rule = "must be an RFC 3339 timestamp within years 1..=9999 in UTC \
                (an offset-less one is taken as UTC)";
    v.as_str()
        .and_then(parse_timestamp)
        .ok_or_else(|| invalid("data.timestamp", rule, v))
}

/// The rule of [`timestamp`] on the string itself (shared with [`fast`]).
fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    let parsed = OffsetDateTime::parse(s, &Rfc3339)
        // Appending `Z` only helps a string that has no offset of its own:
        // one that already ends in an offset becomes invalid.
        .or_else(|_| OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339))
        .ok()?;
    let utc = parsed
        .checked_to_offset(UtcOffset::UTC)
        .filter(|t| YEARS.contains(&t.year()))?;
    utc.replace_microsecond(utc.microsecond()).ok()
}

/// `data.quantity`: a JSON integer (not `100.0`, not `"100"`) in `1..=MAX_QUANTITY`.
fn quantity(v: &Value) -> Result<i64, Rejection> {
    v.as_i64()
        .filter(|q| (1..=MAX_QUANTITY).contains(q))
        .ok_or_else(|| {
            let detail = format!(
                "data.quantity must be an integer from 1 to {MAX_QUANTITY}, got {}",
                show(v)
            );
            Rejection::new(RejectReason::InvalidQuantity, detail)
        })
}

/// The value as compact JSON, cut to [`MAX_SHOWN_CHARS`] characters.
fn show(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
// The service never encodes an event; producers written in Rust (the
// developer tools among them) use the same format as the decoder.
pub mod encode;
mod fast;
#[cfg(test)]
mod tests;

/// The two paths of [`decode`] one at a time, for the differential fuzz
/// target under `tests/fuzz`: it checks that the fast path accepts only what
/// the general path accepts and builds the same event. Not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod paths {
    use super::{MovementEvent, Rejection};

    /// The fast path alone: `Some` only for an event it takes as it is.
    pub fn fast(bytes: &[u8]) -> Option<MovementEvent> {
        super::fast::decode(bytes)
    }

    /// The general path alone: every check in order, with its reason.
    pub fn general(value: Option<&[u8]>) -> Result<MovementEvent, Rejection> {
        super::decode_checked(value)
    }
}
