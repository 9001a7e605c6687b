//! The Prometheus text format as a test reads it: the samples of a
//! `/metrics` page, by name and labels, and the scrape of an application.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use openmetrics_parser::{PrometheusValue, prometheus::parse_prometheus};

use super::helpers::TestApp;

/// One sample line of the Prometheus text format.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// A parsed /metrics page: `# TYPE` per family, and every sample.
#[derive(Debug)]
pub(crate) struct Exposition {
    pub(crate) types: HashMap<String, String>,
    pub(crate) samples: Vec<Sample>,
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

    pub(crate) fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }
}

pub(crate) async fn scrape(app: &TestApp) -> Exposition {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET /metrics");
    parse_exposition(&response.text().await.unwrap())
}
