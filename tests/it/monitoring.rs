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
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use openmetrics_parser::{PrometheusValue, prometheus::parse_prometheus};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Ev, Patience, TestApp, eventually, free_port};

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

/// Parses the text format with openmetrics-parser, then lays every family
/// out as the lines it came from: a histogram `h` becomes its `h_bucket{le}`,
/// `h_sum` and `h_count` samples, a summary likewise.
pub(crate) fn parse_exposition(text: &str) -> Exposition {
    let parsed = parse_prometheus(text).unwrap_or_else(|e| panic!("{e:?} in:\n{text}"));
    let mut out = Exposition {
        types: HashMap::new(),
        samples: Vec::new(),
    };
    for (family, metrics) in &parsed.families {
        out.types
            .insert(family.clone(), metrics.family_type.to_string());
        for metric in metrics.iter_samples() {
            let labels: BTreeMap<String, String> = metric
                .get_labelset()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut push = |suffix: &str, extra: Option<(&str, f64)>, value: f64| {
                let mut labels = labels.clone();
                if let Some((name, bound)) = extra {
                    let bound = if bound.is_infinite() {
                        "+Inf".to_owned()
                    } else {
                        bound.to_string()
                    };
                    labels.insert(name.to_owned(), bound);
                }
                out.samples.push(Sample {
                    name: format!("{family}{suffix}"),
                    labels,
                    value,
                });
            };
            match &metric.value {
                PrometheusValue::Counter(counter) => push("", None, counter.value.as_f64()),
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => {
                    push("", None, n.as_f64());
                }
                PrometheusValue::Histogram(h) => {
                    for bucket in &h.buckets {
                        let le = Some(("le", bucket.upper_bound));
                        push("_bucket", le, bucket.count.as_f64());
                    }
                    if let Some(sum) = &h.sum {
                        push("_sum", None, sum.as_f64());
                    }
                    if let Some(count) = h.count {
                        push("_count", None, exact(count));
                    }
                }
                PrometheusValue::Summary(s) => {
                    for q in &s.quantiles {
                        push("", Some(("quantile", q.quantile)), q.value.as_f64());
                    }
                    if let Some(sum) = &s.sum {
                        push("_sum", None, sum.as_f64());
                    }
                    if let Some(count) = s.count {
                        push("_count", None, exact(count));
                    }
                }
            }
        }
    }
    out
}

/// A count as the f64 every other value is (counts in these tests stay far
/// below 2^32, where the conversion is exact).
fn exact(count: u64) -> f64 {
    f64::from(u32::try_from(count).expect("a count below 2^32"))
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
