//! Applying the same stream twice gives the tables applying it once gave
//! (SPEC section 4): an operator deletes the stored offsets and restarts, and
//! the whole topic is read again.

use crate::support::{
    helpers::{self, TestApp, test_settings},
    stream,
};

#[tokio::test]
async fn replaying_the_whole_topic_changes_nothing() {
    let settings = test_settings(2);
    let app = TestApp::spawn_with(settings.clone()).await;
    let stream = stream::generate(13, 300, 2, true);
    for (p, values) in (0..).zip(&stream.partitions) {
        let mut values = values.clone();
        values.push(b"not json".to_vec());
        app.produce(p, values).await;
    }
    app.wait_consumed().await;
    let once = helpers::dump(&app.pool).await;
    let versions = |pool: deadpool_postgres::Pool| async move {
        let c = pool.get().await.unwrap();
        let row = c
            .query_one(
                "SELECT (SELECT sum(version)::bigint FROM stock) AS stock,
                        (SELECT sum(version)::bigint FROM movements) AS movements",
                &[],
            )
            .await
            .unwrap();
        Versions {
            stock: row.get("stock"),
            movements: row.get("movements"),
        }
    };
    let versions_once = versions(app.pool.clone()).await;
    let produced = app.producer.produced();
    app.stop_keeping_data().await;

    // The operator resets the offsets; the next instance reads everything again.
    let pool = warehouse_monitor::store::pool(&settings.postgres).unwrap();
    pool.get()
        .await
        .unwrap()
        .execute("DELETE FROM consumer_offsets", &[])
        .await
        .unwrap();
    let again = TestApp::spawn_with(settings).await;
    // Nothing new is produced: the replay must reach the same ends.
    helpers::wait_committed(&again.pool, &again.settings.kafka.topic, &produced).await;
    let twice = helpers::dump(&again.pool).await;
    assert_eq!(once.len(), twice.len(), "the same tables");
    for (a, b) in once.iter().zip(&twice) {
        assert!(
            a == b,
            "a table changed on replay:\n{}\n---\n{}",
            first_line(a),
            first_line(b)
        );
    }
    assert_eq!(
        versions(again.pool.clone()).await,
        versions_once,
        "no row was even rewritten"
    );
    let metrics = crate::support::metrics::parse_exposition(&again.metrics.render());
    let total = |name: &str| -> f64 { metrics.find(name, &[]).map(|s| s.value).sum() };
    assert_eq!(
        total("wm_events_applied_total"),
        0.0,
        "nothing applied twice"
    );
    let consumed: i64 = produced.values().sum();
    assert_eq!(
        total("wm_events_consumed_total"),
        f64::from(i32::try_from(consumed).unwrap()),
        "everything read again"
    );
    again.stop().await;
}

/// The sums of the cache versions of `stock` and `movements` rows.
#[derive(Debug, PartialEq)]
struct Versions {
    stock: Option<i64>,
    movements: Option<i64>,
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}
