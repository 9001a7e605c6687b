//! Volume: at least 10 000 events over 3 partitions end in exactly the stock a
//! test-side computation expects, and `verify` agrees (and fails when it should).

use std::process::Command;

use crate::support::{helpers::TestApp, stream};

fn verify(database_url: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_warehouse-monitor"))
        .args([
            "--config-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
            "verify",
        ])
        .env("WM_POSTGRES__URL", database_url)
        .output()
        .expect("verify runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn ten_thousand_events_over_three_partitions_give_the_expected_stock() {
    let stream = stream::generate(7, 3_000, 3, false);
    assert!(stream.events >= 10_000, "only {} events", stream.events);
    let app = TestApp::spawn(3).await;
    for (p, values) in (0..).zip(&stream.partitions) {
        app.produce(p, values.clone()).await;
    }
    app.wait_consumed().await;

    stream.assert_stock(&app.pool).await;
    assert!(app.rejected().await.is_empty());

    let (ok, out) = verify(app.settings.postgres.url.expose());
    assert!(ok, "{out}");
    assert!(out.contains("no mismatch"), "{out}");

    // Corrupt one row: verify must notice and name it.
    let client = app.pool.get().await.unwrap();
    let (w, p) = *stream.expected_stock.keys().next().unwrap();
    client
        .execute(
            "UPDATE stock SET quantity = quantity + 1 WHERE warehouse_id = $1 AND product_id = $2",
            &[&w, &p],
        )
        .await
        .unwrap();
    let (ok, out) = verify(app.settings.postgres.url.expose());
    assert!(!ok, "{out}");
    assert!(
        out.contains(&w.to_string()) && out.contains("1 mismatch"),
        "{out}"
    );
    app.stop().await;
}
