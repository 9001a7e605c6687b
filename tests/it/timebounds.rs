//! Whatever is accepted can be stored and served: every time `decode` accepts
//! round-trips through PostgreSQL and the API's JSON, and times outside years
//! 1..=9999 (in UTC) are rejected as `invalid_field` naming the field instead
//! of stopping the partition or vanishing from the API.

use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, TestRunner},
};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;
use warehouse_monitor::{api::model::Sender, domain::event};

use crate::support::helpers::{Ev, TestApp};

/// An envelope with any epoch-millisecond `time` and any RFC 3339-shaped
/// `data.timestamp` (years 0000..=9999, any offset).
fn envelopes() -> impl Strategy<Value = Vec<u8>> {
    let stamp = (
        0..=9999_i32,
        1..=12_u8,
        1..=28_u8,
        0..24_u8,
        0..60_u8,
        prop::option::of(0..1_000_000_000_u32),
        -23..=23_i8,
    )
        .prop_map(|(y, mo, d, h, mi, frac, oh)| {
            let frac = frac.map_or(String::new(), |n| format!(".{n:09}"));
            let sign = if oh < 0 { '-' } else { '+' };
            format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:00{frac}{sign}{:02}:30",
                oh.abs()
            )
        });
    let millis = prop_oneof![
        any::<i64>(),
        -70_000_000_000_000_i64..260_000_000_000_000_i64
    ];
    (millis, stamp).prop_map(|(millis, stamp)| {
        let mut doc = Ev::departure(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), 1).json();
        doc["time"] = json!(millis);
        doc["data"]["timestamp"] = json!(stamp);
        serde_json::to_vec(&doc).unwrap()
    })
}

/// The API's JSON form of a time, read back.
fn through_json(at: OffsetDateTime) -> OffsetDateTime {
    let sender = Sender {
        warehouse_id: Uuid::nil(),
        code: "WH-1".into(),
        departed_at: at,
    };
    let text = serde_json::to_string(&sender).expect("serialises");
    serde_json::from_str::<Sender>(&text).unwrap().departed_at
}

#[tokio::test]
async fn every_accepted_time_round_trips_through_postgresql_and_json() {
    let mut runner = TestRunner::new(Config::with_cases(512));
    let strategy = envelopes();
    let cases: Vec<Vec<u8>> = (0..512)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    let app = TestApp::spawn(1).await;
    let client = app.pool.get().await.unwrap();
    let (mut accepted, mut rejected) = (0, 0);
    for value in cases {
        let Ok(e) = event::decode(Some(&value)) else {
            rejected += 1;
            continue;
        };
        accepted += 1;
        let row = client
            .query_one(
                "SELECT $1::timestamptz, $2::timestamptz",
                &[&e.happened_at, &e.emitted_at],
            )
            .await
            .unwrap_or_else(|err| panic!("{e:?}: {err}"));
        let (happened, emitted): (OffsetDateTime, Option<OffsetDateTime>) =
            (row.get(0), row.get(1));
        assert_eq!(happened, e.happened_at);
        assert_eq!(emitted, e.emitted_at);
        assert_eq!(through_json(happened), happened);
        assert_eq!(emitted.map(through_json), emitted);
    }
    assert!(
        accepted > 50 && rejected > 50,
        "{accepted} accepted, {rejected} rejected"
    );
    app.stop().await;
}

#[tokio::test]
async fn edge_years_are_served_and_out_of_range_times_are_rejected() {
    let app = TestApp::spawn(1).await;
    let (m, product) = (Uuid::new_v4(), Uuid::new_v4());
    let mut departure = Ev::departure(m, Uuid::new_v4(), product, 5)
        .at("0001-01-01T00:30:00+00:30")
        .json();
    departure["time"] = json!(-62_135_596_800_000_i64); // 0001-01-01T00:00:00Z
    let arrival = Ev::arrival(m, Uuid::new_v4(), product, 5).at("9999-12-31T23:59:59.999999Z");
    let mut too_early = Ev::departure(Uuid::new_v4(), Uuid::new_v4(), product, 1).json();
    too_early["time"] = json!(-300_000_000_000_000_i64);
    let year_minus_one =
        Ev::departure(Uuid::new_v4(), Uuid::new_v4(), product, 1).at("0000-01-01T00:30:00+01:00");
    app.produce(
        0,
        vec![
            serde_json::to_vec(&departure).unwrap(),
            arrival.bytes(),
            serde_json::to_vec(&too_early).unwrap(),
            year_minus_one.bytes(),
        ],
    )
    .await;
    app.wait_consumed().await;

    let (status, body) = app.get_json(&format!("/api/movements/{m}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["sender"]["departed_at"], "0001-01-01T00:00:00Z",
        "{body}"
    );
    assert_eq!(
        body["receiver"]["arrived_at"], "9999-12-31T23:59:59.999999Z",
        "{body}"
    );

    let rejected = app.rejected().await;
    let got: Vec<(i64, &str, &str)> = rejected
        .iter()
        .map(|r| {
            let field = r.detail.split(' ').next().unwrap();
            (r.offset, r.reason.as_str(), field)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "invalid_field", "time"),
            (3, "invalid_field", "data.timestamp")
        ]
    );
    app.stop().await;
}
