//! Monitoring as an operator meets it: the counters on /metrics match a known
//! stream, every metric the Grafana dashboard queries is exported, compose.yaml
//! is consistent with the repository and config/, and a real Prometheus (the
//! Debian package) scrapes the service.

mod alert_rules;
mod compose;
mod counters;
mod dashboard;
mod prometheus;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    helpers::{Ev, Patience, TestApp, eventually, free_port},
    metrics::{Exposition, scrape},
};

const REASONS: [&str; 8] = [
    "malformed_json",
    "unsupported_type",
    "missing_field",
    "invalid_field",
    "invalid_quantity",
    "conflict",
    "too_large",
    "unprocessable",
];

/// The reasons `known_stream` produces one record of each (the others are
/// covered by tests/it/limits.rs and tests/it/quarantine.rs).
const STREAM_REASONS: u32 = 6;

const DASHBOARD: &str = "observability/grafana/dashboards/warehouse-monitor.json";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------ a known stream

/// Produces 6 good events (3 departures on partition 0, 3 arrivals on 1),
/// waits, then 2 exact duplicates, one record per decode reason and one
/// conflict; returns the number of records produced.
async fn known_stream(app: &TestApp) -> u32 {
    let goods: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let ids = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
            if i < 3 {
                Ev::departure(ids.0, ids.1, ids.2, 10 + i).bytes()
            } else {
                Ev::arrival(ids.0, ids.1, ids.2, 10 + i).bytes()
            }
        })
        .collect();
    app.produce(0, goods[..3].to_vec()).await;
    app.produce(1, goods[3..].to_vec()).await;
    app.wait_consumed().await;

    let good: Value = serde_json::from_slice(&goods[1]).unwrap();
    let variant = |edit: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let bad = vec![
        b"{not json".to_vec(),
        variant(&|v| v["specversion"] = json!("0.3")),
        variant(&|v| {
            v["data"].as_object_mut().unwrap().remove("movement_id");
        }),
        variant(&|v| v["data"]["timestamp"] = json!("yesterday")),
        variant(&|v| v["data"]["quantity"] = json!(-4)),
        variant(&|v| v["data"]["quantity"] = json!(999)), // same key, other content
    ];
    app.produce(0, [vec![goods[0].clone()], bad].concat()).await;
    app.produce(1, vec![goods[4].clone()]).await;
    app.wait_consumed().await;
    6 + 2 + STREAM_REASONS
}

/// Scrapes until the counters include all `produced` records and no partition
/// lags (20 s at most): metrics are recorded just after the commit that
/// `wait_consumed` sees.
async fn settled(app: &TestApp, produced: u32) -> Exposition {
    let patience = Patience::secs(20).every(Duration::from_millis(100));
    eventually(patience, || async {
        let m = scrape(app).await;
        let consumed: f64 = m
            .find("wm_events_consumed_total", &[])
            .map(|s| s.value)
            .sum();
        let lag: Vec<f64> = m.find("wm_consumer_lag", &[]).map(|s| s.value).collect();
        if consumed == f64::from(produced) && lag.iter().all(|l| *l == 0.0) {
            Ok(m)
        } else {
            Err(format!("consumed {consumed} of {produced}, lag {lag:?}"))
        }
    })
    .await
}
