//! Reads the service's `/metrics` (Prometheus text): cache hits and misses,
//! the consumer lag and the freshness histogram (Kafka record timestamp →
//! commit), the figures the load test reports per step. The service's own
//! exposition is the contract here, not its internal structs.

use std::net::SocketAddr;

use crate::{error::BenchError, http::Conn};

/// The figures taken from one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Scrape {
    pub(crate) cache_hits: f64,
    pub(crate) cache_misses: f64,
    /// Sum of `wm_consumer_lag` over the partitions.
    pub(crate) lag: f64,
    /// `wm_record_commit_delay_seconds` as (upper bound, cumulative count),
    /// by increasing bound.
    pub(crate) freshness: Vec<(f64, f64)>,
}

impl Scrape {
    pub(crate) fn parse(text: &str) -> Self {
        Self {
            cache_hits: sum(text, "wm_cache_requests", Some(("result", "hit"))),
            cache_misses: sum(text, "wm_cache_requests", Some(("result", "miss"))),
            lag: sum(text, "wm_consumer_lag", None),
            freshness: buckets(text, "wm_record_commit_delay_seconds_bucket"),
        }
    }

    /// The `q` quantile of the freshness observed between `earlier` and
    /// `self`, in seconds, interpolated within its bucket as Prometheus's
    /// `histogram_quantile` does; `None` without observations.
    pub(crate) fn freshness_since(&self, earlier: &Scrape, q: f64) -> Option<f64> {
        let counts: Vec<(f64, f64)> = self
            .freshness
            .iter()
            .map(|&(le, n)| {
                let before = earlier
                    .freshness
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |b| b.1);
                (le, (n - before).max(0.0))
            })
            .collect();
        let total = counts.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, n) in &counts {
            if n >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let share = if n > lower.1 {
                    (rank - lower.1) / (n - lower.1)
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, n);
        }
        Some(lower.0)
    }

    /// Hit ratio of the look-ups between `earlier` and `self` (`None`: none).
    pub(crate) fn hit_ratio_since(&self, earlier: &Scrape) -> Option<f64> {
        let hits = self.cache_hits - earlier.cache_hits;
        let total = hits + self.cache_misses - earlier.cache_misses;
        (total > 0.0).then(|| hits / total)
    }
}

/// Sum of the samples of `metric` (also matched with a `_total` suffix), only
/// those carrying `label` when given.
pub(crate) fn sum(text: &str, metric: &str, label: Option<(&str, &str)>) -> f64 {
    let wanted = label.map(|(k, v)| format!("{k}=\"{v}\""));
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let name = name.strip_suffix("_total").unwrap_or(name);
            if name != metric {
                return None;
            }
            if let Some(wanted) = &wanted {
                if !labels.split(',').any(|l| l == wanted) {
                    return None;
                }
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// The buckets of histogram series `name` (summed over their other labels),
/// as (upper bound, cumulative count) by increasing bound.
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(le) = series
            .split(['{', ',', '}'])
            .find_map(|l| l.strip_prefix("le=\""))
            .map(|l| l.trim_end_matches('"'))
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let Ok(n) = value.parse::<f64>() else {
            continue;
        };
        match out.iter_mut().find(|(l, _)| *l == le) {
            Some(bucket) => bucket.1 += n,
            None => out.push((le, n)),
        }
    }
    out.retain(|(le, _)| !le.is_nan());
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// A dedicated connection for scraping.
#[derive(Debug)]
pub(crate) struct Scraper {
    addr: SocketAddr,
    conn: Option<Conn>,
}

impl Scraper {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    pub(crate) async fn scrape(&mut self) -> Result<Scrape, BenchError> {
        let fail = |f: crate::stats::Failure| BenchError::Http {
            addr: self.addr,
            detail: format!("/metrics: {}", f.as_str()),
        };
        if self.conn.is_none() {
            self.conn = Some(Conn::open(self.addr).await.map_err(fail)?);
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| fail(crate::stats::Failure::Connect))?;
        match conn.get_text("/metrics").await {
            Ok(text) => Ok(Scrape::parse(&text)),
            Err(f) => {
                self.conn = None;
                Err(fail(f))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cache_and_lag_series() {
        let text = "# HELP wm_cache_requests_total Cache look-ups, by result\n\
                    # TYPE wm_cache_requests_total counter\n\
                    wm_cache_requests_total{result=\"error\"} 0\n\
                    wm_cache_requests_total{result=\"hit\"} 75\n\
                    wm_cache_requests_total{result=\"miss\"} 25\n\
                    wm_consumer_lag{partition=\"0\"} 10\n\
                    wm_consumer_lag{partition=\"1\"} 5\n\
                    wm_consumer_lag_other 99\n";
        let now = Scrape::parse(text);
        assert_eq!(now.cache_hits, 75.0);
        assert_eq!(now.lag, 15.0);
        let before = Scrape {
            cache_hits: 25.0,
            cache_misses: 25.0,
            ..Scrape::default()
        };
        assert_eq!(now.hit_ratio_since(&before), Some(1.0));
        assert_eq!(now.hit_ratio_since(&now), None);
    }

    #[test]
    fn freshness_quantiles_come_from_the_bucket_deltas() {
        let at = |a: u32, b: u32, c: u32| {
            Scrape::parse(&format!(
                "wm_record_commit_delay_seconds_bucket{{otel_scope_name=\"wm\",le=\"0.01\"}} {a}\n\
                 wm_record_commit_delay_seconds_bucket{{otel_scope_name=\"wm\",le=\"0.05\"}} {b}\n\
                 wm_record_commit_delay_seconds_bucket{{otel_scope_name=\"wm\",le=\"+Inf\"}} {c}\n\
                 wm_record_commit_delay_seconds_sum 1\n"
            ))
        };
        let before = at(10, 10, 10);
        // 100 new observations: 50 within 10 ms, 50 within 50 ms.
        let after = at(60, 110, 110);
        assert_eq!(after.freshness.len(), 3);
        let p50 = after.freshness_since(&before, 0.5).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p99 = after.freshness_since(&before, 0.99).unwrap();
        assert!((p99 - 0.0492).abs() < 1e-9, "{p99}");
        assert_eq!(after.freshness_since(&after, 0.5), None, "nothing new");
    }
}
