//! Monitoring as an operator meets it: the counters on /metrics match a known
//! stream, every metric the Grafana dashboard queries is exported, compose.yaml
//! is consistent with the repository and config/, and a real Prometheus (the
//! Debian package) scrapes the service.

mod compose;
mod counters;
mod dashboard;
mod prometheus;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Ev, TestApp};

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
const STREAM_REASONS: usize = 6;

const DASHBOARD: &str = "observability/grafana/dashboards/warehouse-monitor.json";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------ exposition

/// One sample line of the Prometheus text format.
#[derive(Debug)]
pub(crate) struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// A parsed /metrics page: `# TYPE` per family, and every sample.
#[derive(Debug)]
pub(crate) struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut out = Exposition {
        types: HashMap::new(),
        samples: Vec::new(),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            out.types.insert(name.into(), kind.trim().into());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).expect("sample line");
        let (name, mut rest) = line.split_at(end);
        let mut labels = BTreeMap::new();
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                r = r.trim_start_matches([',', ' ']);
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = r.split_once("=\"").expect("label");
                let (mut value, mut chars) = (String::new(), after.char_indices());
                let close = loop {
                    match chars.next().expect("closing quote") {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key.trim().to_owned(), value);
                r = &after[close + 1..];
            }
        }
        let value = rest.split_whitespace().next().expect("value");
        out.samples.push(Sample {
            name: name.into(),
            labels,
            value: value.parse().unwrap_or_else(|_| panic!("value in {line}")),
        });
    }
    out
}

impl Exposition {
    /// Samples of `name` carrying every label of `labels`.
    pub(crate) fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the single sample `name{labels}`.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self.find(name, labels).collect();
        assert_eq!(found.len(), 1, "one sample {name}{labels:?}, got {found:?}");
        found[0].value
    }

    fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }
}

pub(crate) async fn scrape(app: &TestApp) -> Exposition {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET /metrics");
    parse_exposition(&response.text().await.unwrap())
}

// ------------------------------------------------------------ a known stream

/// Produces 6 good events (3 departures on partition 0, 3 arrivals on 1),
/// waits, then 2 exact duplicates, one record per decode reason and one
/// conflict; returns the number of records produced.
async fn known_stream(app: &TestApp) -> usize {
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
async fn settled(app: &TestApp, produced: usize) -> Exposition {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(app).await;
        let consumed: f64 = m
            .find("wm_events_consumed_total", &[])
            .map(|s| s.value)
            .sum();
        let lag: Vec<f64> = m.find("wm_consumer_lag", &[]).map(|s| s.value).collect();
        if consumed == produced as f64 && lag.iter().all(|l| *l == 0.0) {
            return m;
        }
        let late = tokio::time::Instant::now() >= deadline;
        assert!(!late, "consumed {consumed} of {produced}, lag {lag:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
