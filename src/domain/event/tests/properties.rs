//! Property tests of the decoder: anything `decode` accepts has times that an
//! RFC 3339 string (the API's JSON) can hold and read back unchanged
//! (`tests/it/timebounds.rs` checks the same through PostgreSQL), and the fast
//! path accepts only what the general path accepts, building the same event.

use proptest::prelude::*;
use time::format_description::well_known::Rfc3339;

use super::*;

/// Any RFC 3339-shaped timestamp, years 0000..=9999, any offset.
fn rfc3339_like() -> impl Strategy<Value = String> {
    (
        0..=9999_i32,
        1..=12_u8,
        1..=28_u8,
        0..24_u8,
        0..60_u8,
        0..60_u8,
        prop::option::of(0..1_000_000_000_u32),
        prop_oneof![Just(None), (-23..=23_i8, 0..60_u8).prop_map(Some)],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, offset)| {
            let frac = frac.map_or(String::new(), |n| format!(".{n:09}"));
            let offset = match offset {
                None => "Z".to_owned(),
                Some((oh, om)) if oh < 0 => format!("-{:02}:{om:02}", -oh),
                Some((oh, om)) => format!("+{oh:02}:{om:02}"),
            };
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{offset}")
        })
}

fn json_round_trip(t: OffsetDateTime) {
    let text = t.format(&Rfc3339).expect("formats as RFC 3339");
    assert_eq!(OffsetDateTime::parse(&text, &Rfc3339).unwrap(), t);
}

/// The example with one byte changed, inserted or removed at `at`.
fn mutated(at: usize, byte: u8, how: u8) -> Vec<u8> {
    let mut bytes = arrival().to_string().into_bytes();
    let at = at % (bytes.len() + 1);
    match how % 3 {
        0 if at < bytes.len() => bytes[at] = byte,
        1 => bytes.insert(at, byte),
        _ if at < bytes.len() => drop(bytes.remove(at)),
        _ => bytes.push(byte),
    }
    bytes
}

proptest! {
    /// The fast path accepts only what the general path accepts, and
    /// builds the same event: for arbitrary bytes and for the example
    /// with a byte changed.
    #[test]
    fn the_fast_path_accepts_only_what_the_general_path_accepts(
        noise in prop::collection::vec(any::<u8>(), 0..256),
        at in any::<usize>(),
        byte in prop_oneof![any::<u8>(), Just(b'['), Just(b'{'), Just(b'"'), Just(b',')],
        how in any::<u8>(),
    ) {
        for bytes in [noise, mutated(at, byte, how)] {
            if let Some(event) = fast::decode(&bytes) {
                prop_assert_eq!(Ok(event), decode_checked(Some(&bytes)));
            }
        }
    }

    #[test]
    fn accepted_times_are_in_range_and_format(
        millis in prop_oneof![
            any::<i64>(),
            -70_000_000_000_000_i64..260_000_000_000_000_i64,
        ],
        stamp in rfc3339_like(),
    ) {
        match decode_edited(&[set("time", millis), set("data.timestamp", stamp.as_str())]) {
            Ok(event) => {
                let emitted = event.emitted_at.expect("time given");
                prop_assert!(YEARS.contains(&emitted.year()));
                prop_assert!(YEARS.contains(&event.happened_at.year()));
                prop_assert_eq!(event.happened_at.offset(), UtcOffset::UTC);
                json_round_trip(emitted);
                json_round_trip(event.happened_at);
            }
            Err(rejection) => {
                prop_assert_eq!(rejection.reason, RejectReason::InvalidField);
                prop_assert!(
                    rejection.detail.starts_with("time ")
                        || rejection.detail.starts_with("data.timestamp "),
                    "{}", rejection.detail
                );
            }
        }
    }
}
