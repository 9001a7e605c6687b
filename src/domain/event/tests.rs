//! Unit tests of [`super::decode`]: every accepted form and every reason code it produces.

use super::*;
use serde_json::json;
use time::macros::datetime;
use uuid::uuid;

/// The arrival example of docs/SPEC.md section 2.
fn arrival() -> Value {
    json!({
        "id": "b3b53031-e83a-4654-87f5-b6b6fb09fd99",
        "source": "WH-3423",
        "specversion": "1.0",
        "type": "ru.retail.warehouses.movement",
        "datacontenttype": "application/json",
        "dataschema": "ru.retail.warehouses.movement.v1.0",
        "time": 1737439421623_i64,
        "subject": "WH-3423:ARRIVAL",
        "destination": "ru.retail.warehouses",
        "data": {
            "movement_id": "c6290746-790e-43fa-8270-014dc90e02e0",
            "warehouse_id": "c1d70455-7e14-11e9-812a-70106f431230",
            "timestamp": "2025-02-18T14:34:56Z",
            "event": "arrival",
            "product_id": "4705204f-498f-4f96-b4ba-df17fb56bf55",
            "quantity": 100
        }
    })
}

/// A change to the example: a field path (`"id"`, `"data.quantity"`) and
/// its new value, or `None` to remove the field.
type Edit = (&'static str, Option<Value>);

fn set(path: &'static str, value: impl Into<Value>) -> Edit {
    (path, Some(value.into()))
}

fn del(path: &'static str) -> Edit {
    (path, None)
}

fn decode_edited(edits: &[Edit]) -> Result<MovementEvent, Rejection> {
    let mut doc = arrival();
    for (path, value) in edits {
        let (parent, key) = match path.split_once('.') {
            Some((_, key)) => (&mut doc["data"], key),
            None => (&mut doc, *path),
        };
        match value {
            Some(value) => parent[key] = value.clone(),
            None => drop(parent.as_object_mut().unwrap().remove(key)),
        }
    }
    let text = doc.to_string();
    let decoded = decode(Some(text.as_bytes()));
    // Every case here also checks that the fast path takes nothing the
    // general path would answer differently.
    assert_eq!(decoded, decode_checked(Some(text.as_bytes())), "{text}");
    decoded
}

#[test]
fn bytes_that_are_not_utf8_are_no_event_even_in_an_ignored_field() {
    // Found by the property below: serde_json skipped an ignored field's
    // bytes unchecked, so the fast path took what the general path refuses.
    let mut bytes = arrival().to_string().into_bytes();
    let field = b"\"destination\":\"";
    let at = bytes.windows(field.len()).position(|w| w == field).unwrap();
    bytes[at + field.len() + 1] = 0xff; // inside the ignored "destination"
    assert_eq!(fast::decode(&bytes), None);
    let rejection = decode(Some(&bytes)).unwrap_err();
    assert_eq!(rejection.reason, RejectReason::MalformedJson);
}

/// The example with `fields` (raw JSON text, comma-separated) inserted first
/// in the envelope, or first in `data` when `in_data`.
fn with_raw_fields(fields: &str, in_data: bool) -> Vec<u8> {
    let text = arrival().to_string();
    let at = if in_data {
        text.find("\"data\":{").unwrap() + "\"data\":{".len()
    } else {
        1
    };
    format!("{}{fields},{}", &text[..at], &text[at..]).into_bytes()
}

/// Asserts that neither path accepts `bytes`, and that the general path calls
/// it `malformed_json` with a detail that contains `why`.
fn malformed_on_both_paths(bytes: &[u8], why: &str) {
    let text = String::from_utf8_lossy(bytes);
    assert_eq!(fast::decode(bytes), None, "{text}");
    let rejection = decode(Some(bytes)).unwrap_err();
    assert_eq!(rejection.reason, RejectReason::MalformedJson, "{text}");
    assert!(
        rejection.detail.contains(why),
        "{text}: {}",
        rejection.detail
    );
}

#[test]
fn a_number_out_of_range_in_an_ignored_field_is_malformed_on_both_paths() {
    // Found by the fuzz target `event` (tests/fuzz): serde's derive skipped an
    // unknown field's value without reading the number, so the fast path
    // accepted the example with `"tim 77":31e439421623` in it.
    let out_of_range = format!("1{}", "0".repeat(400));
    for (fields, in_data) in [
        (r#""tim 77":31e439421623"#, false),
        (r#""extra":-1e309"#, false),
        (r#""extra":{"a":[true,{"b":1E400}]}"#, false),
        (r#""note":1e999"#, true),
        (&format!(r#""extra":{out_of_range}"#), false),
    ] {
        let bytes = with_raw_fields(fields, in_data);
        malformed_on_both_paths(&bytes, "number out of range");
    }
    // Numbers that do fit are no reason to leave the fast path.
    let fits = with_raw_fields(r#""extra":[1e308,-0,18446744073709551616,0.5]"#, false);
    assert_eq!(
        fast::decode(&fits),
        Some(decode_checked(Some(&fits)).unwrap())
    );
}

#[test]
fn a_lone_surrogate_in_an_ignored_field_is_malformed_on_both_paths() {
    // The same gap as above, for strings: a skipped value's `\u` escapes were
    // not decoded, so a lone surrogate, which the general path refuses, went
    // through the fast path.
    for (fields, in_data) in [
        (r#""x-note":"\ud800""#, false),
        (r#""extra":["x\udfff y"]"#, false),
        (r#""note":{"k":"\udbff\u0041"}"#, true),
        (r#""\ud800":1"#, false),
    ] {
        let bytes = with_raw_fields(fields, in_data);
        malformed_on_both_paths(&bytes, "escape");
    }
    let pair = with_raw_fields(r#""extra":"\ud83d\ude00""#, false);
    assert_eq!(
        fast::decode(&pair),
        Some(decode_checked(Some(&pair)).unwrap())
    );
}

#[test]
fn arrays_in_field_order_are_no_events_on_either_path() {
    // serde's derive would take a struct from an array of its fields.
    let envelope = r#"["1.0","ru.retail.warehouses.movement","b3b53031-e83a-4654-87f5-b6b6fb09fd99","WH-3423",null,null,["c6290746-790e-43fa-8270-014dc90e02e0","c1d70455-7e14-11e9-812a-70106f431230","2025-02-18T14:34:56Z","arrival","4705204f-498f-4f96-b4ba-df17fb56bf55",5]]"#;
    assert_eq!(fast::decode(envelope.as_bytes()), None);
    let rejection = decode(Some(envelope.as_bytes())).unwrap_err();
    assert_eq!(rejection.reason, RejectReason::MalformedJson);

    let mut doc = arrival();
    doc["data"] = json!([
        "c6290746-790e-43fa-8270-014dc90e02e0",
        "c1d70455-7e14-11e9-812a-70106f431230",
        "2025-02-18T14:34:56Z",
        "arrival",
        "4705204f-498f-4f96-b4ba-df17fb56bf55",
        100
    ]);
    let text = doc.to_string();
    assert_eq!(fast::decode(text.as_bytes()), None);
    let rejection = decode(Some(text.as_bytes())).unwrap_err();
    assert_eq!(
        rejection.reason,
        RejectReason::InvalidField,
        "{}",
        rejection.detail
    );
}

#[test]
fn the_fast_path_takes_well_formed_events_and_leaves_the_rest() {
    let text = arrival().to_string();
    assert_eq!(
        fast::decode(text.as_bytes()),
        decode_checked(Some(text.as_bytes())).ok()
    );
    // Escaped strings, duplicate keys and nulls go to the general path,
    // which accepts the first two as they are.
    let escaped = text.replace("\"WH-3423\"", "\"\\u0057H-3423\"");
    assert_ne!(escaped, text);
    assert_eq!(fast::decode(escaped.as_bytes()), None);
    assert_eq!(
        decode(Some(escaped.as_bytes())),
        decode(Some(text.as_bytes()))
    );
    let twice = text.replacen('{', "{\"type\":\"x\",", 1);
    assert_eq!(fast::decode(twice.as_bytes()), None);
    assert_eq!(
        decode(Some(twice.as_bytes())),
        decode_checked(Some(twice.as_bytes()))
    );
    let null_time = decode_edited(&[set("time", Value::Null)]).unwrap();
    assert_eq!(null_time.emitted_at, None);
}

fn accepted(edits: &[Edit]) -> MovementEvent {
    decode_edited(edits).expect("should be accepted")
}

/// Asserts the edited example is rejected for `reason` with a detail that
/// starts with the path of the first edit; returns the detail.
fn rejected(reason: RejectReason, edits: &[Edit]) -> String {
    let err = decode_edited(edits).expect_err("should be rejected");
    assert_eq!(err.reason, reason, "{edits:?}: {err}");
    let field = edits[0].0;
    assert!(err.detail.starts_with(&format!("{field} ")), "{err}");
    err.detail
}

#[test]
fn spec_examples_decode_exactly() {
    let arrival_event = MovementEvent {
        message_id: uuid!("b3b53031-e83a-4654-87f5-b6b6fb09fd99"),
        source: WarehouseCode::parse("WH-3423").unwrap(),
        emitted_at: Some(datetime!(2025-01-21 06:03:41.623 UTC)),
        movement_id: uuid!("c6290746-790e-43fa-8270-014dc90e02e0"),
        warehouse_id: uuid!("c1d70455-7e14-11e9-812a-70106f431230"),
        happened_at: datetime!(2025-02-18 14:34:56 UTC),
        kind: EventKind::Arrival,
        product_id: uuid!("4705204f-498f-4f96-b4ba-df17fb56bf55"),
        quantity: 100,
    };
    assert_eq!(accepted(&[]), arrival_event);
    let departure = accepted(&[
        set("source", "WH-3322"),
        set("subject", "WH-3322:DEPARTURE"),
        set("data.event", "departure"),
        set("data.warehouse_id", "25718666-6af6-4281-b5a6-3016e36fa557"),
        set("data.timestamp", "2025-02-18T12:12:56Z"),
    ]);
    let expected = MovementEvent {
        source: WarehouseCode::parse("WH-3322").unwrap(),
        warehouse_id: uuid!("25718666-6af6-4281-b5a6-3016e36fa557"),
        happened_at: datetime!(2025-02-18 12:12:56 UTC),
        kind: EventKind::Departure,
        ..arrival_event
    };
    assert_eq!(departure, expected);
}

#[test]
fn timestamps_become_utc_truncated_to_microseconds() {
    let cases = [
        ("2025-02-18T14:34:56Z", datetime!(2025-02-18 14:34:56 UTC)),
        ("2025-02-18T14:34:56", datetime!(2025-02-18 14:34:56 UTC)),
        (
            "2025-02-18T14:34:56.5",
            datetime!(2025-02-18 14:34:56.5 UTC),
        ),
        (
            "2025-02-18T14:34:56.123+03:00",
            datetime!(2025-02-18 11:34:56.123 UTC),
        ),
        (
            "2025-02-18T14:34:56.123456789Z",
            datetime!(2025-02-18 14:34:56.123456 UTC),
        ),
        (
            "2025-02-18T14:34:56.999999999-01:30",
            datetime!(2025-02-18 16:04:56.999999 UTC),
        ),
    ];
    for (text, expected) in cases {
        let at = accepted(&[set("data.timestamp", text)]).happened_at;
        assert_eq!((at, at.offset()), (expected, UtcOffset::UTC), "{text}");
    }
}

#[test]
fn accepts_optional_absent_unknown_extra_and_boundary_values() {
    assert_eq!(accepted(&[del("time")]).emitted_at, None);
    assert_eq!(accepted(&[set("time", Value::Null)]).emitted_at, None);
    let epoch = accepted(&[set("time", 0)]).emitted_at;
    assert_eq!(epoch, Some(OffsetDateTime::UNIX_EPOCH));
    accepted(&[del("subject")]);
    accepted(&[set("subject", Value::Null)]);
    accepted(&[
        set("extra", json!({"a": [1]})),
        set("data.note", "hi"),
        set("datacontenttype", 42),
        del("dataschema"),
        del("destination"),
    ]);
    let upper = accepted(&[set(
        "data.product_id",
        "4705204F-498F-4F96-B4BA-DF17FB56BF55",
    )]);
    assert_eq!(
        upper.product_id,
        uuid!("4705204f-498f-4f96-b4ba-df17fb56bf55")
    );
    assert_eq!(accepted(&[set("data.quantity", 1)]).quantity, 1);
    let max = accepted(&[set("data.quantity", 1_000_000_000)]).quantity;
    assert_eq!(max, MAX_QUANTITY);
}

#[test]
fn malformed_json() {
    let cases: [(Option<&[u8]>, &str); 7] = [
        (None, "record has no value"),
        (Some(b"\xff\xfe{}"), "not valid UTF-8"),
        (Some(b""), "invalid JSON"),
        (Some(b"{\"id\": "), "invalid JSON"),
        (Some(b"{} {}"), "invalid JSON"),
        (Some(b"[1, 2]"), "expected a JSON object, got array"),
        (Some(b"null"), "expected a JSON object, got null"),
    ];
    for (bytes, prefix) in cases {
        let err = decode(bytes).unwrap_err();
        assert_eq!(err.reason, RejectReason::MalformedJson, "{bytes:?}");
        assert!(err.detail.starts_with(prefix), "{bytes:?}: {}", err.detail);
    }
}

#[test]
fn unsupported_type() {
    use RejectReason::UnsupportedType as U;
    rejected(U, &[set("specversion", "0.3"), set("type", "x")]);
    rejected(U, &[set("specversion", 1.0)]);
    rejected(
        U,
        &[set("type", "ru.retail.warehouses.inventory"), del("id")],
    );
    rejected(U, &[set("type", "RU.RETAIL.WAREHOUSES.MOVEMENT")]);
}

#[test]
fn missing_field_names_the_field() {
    use RejectReason::MissingField as M;
    let required = [
        "specversion",
        "type",
        "id",
        "source",
        "data",
        "data.movement_id",
        "data.warehouse_id",
        "data.timestamp",
        "data.event",
        "data.product_id",
        "data.quantity",
    ];
    for field in required {
        assert_eq!(rejected(M, &[del(field)]), format!("{field} is missing"));
        rejected(M, &[set(field, Value::Null)]);
    }
    let detail = decode(Some(b"{}")).unwrap_err().detail;
    assert_eq!(detail, "specversion is missing");
}

#[test]
fn invalid_field() {
    let cases = [
        set("id", "not-a-uuid"),
        set("id", 12345),
        set("data.movement_id", "c6290746-790e"),
        set("data.warehouse_id", ""),
        set("data.product_id", json!(["x"])),
        set("source", "3423"),
        set("source", "WH-"),
        set("source", "wh-3423"),
        set("source", "WH-34 23"),
        set("source", "WH-3423é"),
        set("source", 3423),
        set("time", "1737439421623"),
        set("time", 1.5),
        set("time", i64::MAX),
        set("subject", 7),
        set("subject", "WH-3423:DEPARTURE"),
        set("subject", "WH-3423:arrival"),
        set("subject", "WH-9999:ARRIVAL"),
        set("data", "{}"),
        set("data", json!([])),
        set("data.event", "Arrival"),
        set("data.event", "transfer"),
        set("data.event", true),
        set("data.timestamp", "2025-02-18"),
        set("data.timestamp", "18.02.2025 14:34"),
        set("data.timestamp", "2025-02-30T14:34:56Z"),
        set("data.timestamp", "2025-02-18T14:34:56+03"),
        set("data.timestamp", 1739889296),
    ];
    for case in cases {
        rejected(RejectReason::InvalidField, &[case]);
    }
    let detail = rejected(RejectReason::InvalidField, &[set("id", "x".repeat(500))]);
    assert!(detail.starts_with("id must be a UUID string, got \"xxx"));
    assert!(detail.ends_with("...") && detail.len() < 120, "{detail}");
}

#[test]
fn invalid_quantity() {
    let bad = [
        json!(0),
        json!(-1),
        json!(MAX_QUANTITY + 1),
        json!("5"),
        json!(2.5),
        json!(100.0),
        json!(1e12),
        json!(u64::MAX),
        json!(true),
        json!([1]),
    ];
    for q in bad {
        rejected(RejectReason::InvalidQuantity, &[set("data.quantity", q)]);
    }
    // `100.0` written literally in the record is a float, not an integer.
    let text = arrival()
        .to_string()
        .replace("\"quantity\":100", "\"quantity\":100.0");
    assert!(text.contains("\"quantity\":100.0"), "{text}");
    let err = decode(Some(text.as_bytes())).unwrap_err();
    assert_eq!(err.reason, RejectReason::InvalidQuantity, "{text}");
}

#[test]
fn first_problem_in_documented_order_wins() {
    use RejectReason::{InvalidField, InvalidQuantity};
    rejected(InvalidField, &[set("id", "x"), del("data")]);
    rejected(
        InvalidField,
        &[set("data.product_id", "x"), del("data.quantity")],
    );
    // The subject's content is compared last, after every data field.
    rejected(
        InvalidQuantity,
        &[set("data.quantity", 0), set("subject", "x")],
    );
}

#[test]
fn names_and_codes_are_stable() {
    let codes = RejectReason::ALL.map(RejectReason::as_str).join(" ");
    let expected = "malformed_json unsupported_type missing_field invalid_field";
    assert_eq!(
        codes,
        format!("{expected} invalid_quantity conflict too_large unprocessable")
    );
    assert_eq!(RejectReason::Conflict.to_string(), "conflict");
    let rejection = Rejection::new(RejectReason::MissingField, "id is missing");
    assert_eq!(rejection.to_string(), "missing_field: id is missing");
    let kinds = [EventKind::Departure, EventKind::Arrival];
    assert_eq!(kinds.map(|k| EventKind::parse(k.as_str())), kinds.map(Some));
    assert_eq!(EventKind::parse("ARRIVAL"), None);
    assert_eq!(WarehouseCode::parse("WH-a1B2").unwrap().as_str(), "WH-a1B2");
    assert!(WarehouseCode::parse("WH-1-2").is_err() && WarehouseCode::parse("").is_err());
}

#[test]
fn times_outside_years_1_to_9999_in_utc_are_invalid_fields() {
    // The envelope `time`: -300000000000000 ms is in year -7537.
    let out = [
        json!(-300_000_000_000_000_i64),
        json!(-62_135_596_800_001_i64), // one ms before 0001-01-01T00:00:00Z
        json!(253_402_300_800_000_i64), // 10000-01-01T00:00:00Z
    ];
    for t in out {
        let detail = rejected(RejectReason::InvalidField, &[set("time", t.clone())]);
        assert!(detail.contains("1..=9999"), "{detail}");
    }
    let first = accepted(&[set("time", -62_135_596_800_000_i64)]).emitted_at;
    assert_eq!(first, Some(datetime!(0001-01-01 00:00 UTC)));
    let last = accepted(&[set("time", 253_402_300_799_999_i64)]).emitted_at;
    assert_eq!(last, Some(datetime!(9999-12-31 23:59:59.999 UTC)));

    // `data.timestamp`: the bound applies after conversion to UTC.
    for text in [
        "0000-01-01T00:30:00+01:00", // year -1 in UTC
        "0000-06-01T00:00:00Z",
        "0001-01-01T00:30:00+01:00", // 0000-12-31T23:30Z
        "9999-12-31T23:30:00-01:00", // 10000-01-01T00:30Z
    ] {
        let detail = rejected(RejectReason::InvalidField, &[set("data.timestamp", text)]);
        assert!(detail.contains("1..=9999"), "{detail}");
    }
    let edge = accepted(&[set("data.timestamp", "0001-01-01T00:30:00+00:30")]).happened_at;
    assert_eq!(edge, datetime!(0001-01-01 00:00 UTC));
    let edge = accepted(&[set("data.timestamp", "9999-12-31T23:59:59.999999Z")]).happened_at;
    assert_eq!(edge, datetime!(9999-12-31 23:59:59.999999 UTC));
}

mod properties;
