//! Every reason code: a bad record is stored as rejected with its code, raw
//! bytes and position, and the good records after it on the partition apply.

use serde_json::json;
use uuid::Uuid;

use crate::support::helpers::{Ev, TestApp};

#[tokio::test]
async fn each_reason_code_is_stored_and_later_good_records_apply() {
    let app = TestApp::spawn(1).await;
    let (m, wh, product) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let good = Ev::departure(m, wh, product, 5);

    let mut unsupported = good.json();
    unsupported["type"] = json!("ru.retail.warehouses.inventory");
    let mut missing = good.json();
    missing["data"]
        .as_object_mut()
        .unwrap()
        .remove("product_id");
    let mut invalid = good.json();
    invalid["data"]["warehouse_id"] = json!("not-a-uuid");
    let mut quantity = good.json();
    quantity["data"]["quantity"] = json!(0);
    let conflicting = good.clone().quantity(6);

    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed_json"),
        (
            serde_json::to_vec(&unsupported).unwrap(),
            "unsupported_type",
        ),
        (serde_json::to_vec(&missing).unwrap(), "missing_field"),
        (serde_json::to_vec(&invalid).unwrap(), "invalid_field"),
        (serde_json::to_vec(&quantity).unwrap(), "invalid_quantity"),
    ];
    // offset 0: the good departure; 1..=5: one bad record per decode reason;
    // 6: a conflicting repeat of offset 0; 7, 8: good records after them.
    let mut values = vec![good.bytes()];
    values.extend(bad.iter().map(|(v, _)| v.clone()));
    values.push(conflicting.bytes());
    let later = Ev::arrival(m, Uuid::new_v4(), product, 5);
    let other = Ev::departure(Uuid::new_v4(), wh, product, 3);
    values.push(later.bytes());
    values.push(other.bytes());
    app.produce(0, values.clone()).await;
    app.wait_consumed().await;

    let rejected = app.rejected().await;
    let codes: Vec<(i64, &str)> = rejected
        .iter()
        .map(|r| (r.offset, r.reason.as_str()))
        .collect();
    let mut expected: Vec<(i64, &str)> = (1..).zip(&bad).map(|(o, (_, c))| (o, *c)).collect();
    expected.push((6, "conflict"));
    assert_eq!(codes, expected);

    // Raw bytes are kept exactly, and details say what was wrong.
    let raw = app.rejected_raw(3).await;
    assert_eq!(raw, values[3]);
    let detail = &rejected[2].detail;
    assert!(detail.contains("product_id"), "{detail}");

    // The good records around them are applied.
    assert_eq!(app.count("movement_events").await, 3);
    assert_eq!(app.stock(wh, product).await, Some(-5 - 3));
    assert_eq!(app.stock(later.warehouse_id, product).await, Some(5));
    app.stop().await;
}
