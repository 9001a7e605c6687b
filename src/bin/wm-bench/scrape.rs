//! Reads the service's `/metrics` (Prometheus text): cache hits and misses
//! and the consumer lag, the two figures the load test reports per step. The
//! service's own exposition is the contract here, not its internal structs.

use std::net::SocketAddr;

use crate::{error::BenchError, http::Conn};

/// The figures taken from one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Scrape {
    pub(crate) cache_hits: f64,
    pub(crate) cache_misses: f64,
    /// Sum of `wm_consumer_lag` over the partitions.
    pub(crate) lag: f64,
}

impl Scrape {
    pub(crate) fn parse(text: &str) -> Self {
        Self {
            cache_hits: sum(text, "wm_cache_requests", Some(("result", "hit"))),
            cache_misses: sum(text, "wm_cache_requests", Some(("result", "miss"))),
            lag: sum(text, "wm_consumer_lag", None),
        }
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
            lag: 0.0,
        };
        assert_eq!(now.hit_ratio_since(&before), Some(1.0));
        assert_eq!(now.hit_ratio_since(&now), None);
    }
}
