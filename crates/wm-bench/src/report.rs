//! The run's written outputs: a CSV row per step (the mix), a CSV row per
//! step and endpoint, the per-second time series, and a Markdown table of the
//! same figures for the README.

use std::{fmt::Write as _, path::Path};

use crate::{
    error::BenchError,
    stats::{Endpoint, Failure, Figures, StepStats},
};

/// One step of the run and what was read from the service around it.
#[derive(Debug, Clone)]
pub(crate) struct StepRow {
    pub(crate) users: usize,
    /// Open-loop target rate; `None` in closed loop.
    pub(crate) rate: Option<f64>,
    pub(crate) seconds: f64,
    pub(crate) stats: StepStats,
    pub(crate) cache_hit_ratio: Option<f64>,
    /// Highest consumer lag (records) sampled during the step.
    pub(crate) lag_max: f64,
    /// Freshness during the step, p50 and p99 ms: Kafka record timestamp →
    /// commit (`wm_record_commit_delay_seconds`); `None` without commits.
    pub(crate) freshness_ms: Option<(f64, f64)>,
    /// The generator's rate against `/health/live` at the same concurrency.
    pub(crate) ceiling: Option<f64>,
}

impl StepRow {
    pub(crate) fn ceiling_share(&self) -> Option<f64> {
        self.ceiling
            .filter(|c| *c > 0.0)
            .map(|c| self.stats.mix.per_second / c)
    }
}

/// One second of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TimePoint {
    pub(crate) second: f64,
    pub(crate) requests: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
    pub(crate) users: f64,
    pub(crate) lag: f64,
    /// Freshness p99 over that second, ms (0 without commits).
    pub(crate) freshness_p99_ms: f64,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or(String::new(), |v| format!("{v:.digits$}"))
}

fn errors_csv(f: &Figures) -> String {
    Failure::ALL
        .iter()
        .map(|k| f.errors.get(*k).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn error_header() -> String {
    Failure::ALL
        .iter()
        .map(|k| format!("errors_{}", k.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `steps.csv`: one row per step, the whole mix.
pub(crate) fn steps_csv(rows: &[StepRow]) -> String {
    let mut out = format!(
        "users,target_rate,seconds,requests,req_per_s,p50_ms,p90_ms,p95_ms,p99_ms,max_ms,{},cache_hit_ratio,ingest_lag_max,freshness_p50_ms,freshness_p99_ms,ceiling_req_per_s,share_of_ceiling\n",
        error_header()
    );
    for r in rows {
        let m = &r.stats.mix;
        let _ = writeln!(
            out,
            "{},{},{:.2},{},{:.1},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{:.0},{},{},{},{}",
            r.users,
            opt(r.rate, 0),
            r.seconds,
            m.requests,
            m.per_second,
            m.p50,
            m.p90,
            m.p95,
            m.p99,
            m.max,
            errors_csv(m),
            opt(r.cache_hit_ratio, 4),
            r.lag_max,
            opt(r.freshness_ms.map(|f| f.0), 2),
            opt(r.freshness_ms.map(|f| f.1), 2),
            opt(r.ceiling, 1),
            opt(r.ceiling_share(), 4),
        );
    }
    out
}

/// `endpoints.csv`: one row per step and endpoint.
pub(crate) fn endpoints_csv(rows: &[StepRow]) -> String {
    let mut out = format!(
        "users,target_rate,endpoint,requests,req_per_s,p50_ms,p90_ms,p95_ms,p99_ms,max_ms,{}\n",
        error_header()
    );
    for r in rows {
        for (e, f) in Endpoint::ALL.iter().zip(&r.stats.endpoints) {
            let _ = writeln!(
                out,
                "{},{},{},{},{:.1},{:.3},{:.3},{:.3},{:.3},{:.3},{}",
                r.users,
                opt(r.rate, 0),
                e.as_str(),
                f.requests,
                f.per_second,
                f.p50,
                f.p90,
                f.p95,
                f.p99,
                f.max,
                errors_csv(f)
            );
        }
    }
    out
}

/// `timeseries.csv`: one row per second.
pub(crate) fn timeseries_csv(points: &[TimePoint]) -> String {
    let mut out =
        String::from("second,req_per_s,p99_ms,errors,users,consumer_lag,freshness_p99_ms\n");
    for p in points {
        let _ = writeln!(
            out,
            "{:.0},{:.0},{:.3},{},{:.0},{:.0},{:.1}",
            p.second, p.requests, p.p99_ms, p.errors, p.users, p.lag, p.freshness_p99_ms
        );
    }
    out
}

/// The Markdown tables: the mix per step, then p99 per endpoint.
pub(crate) fn markdown(rows: &[StepRow]) -> String {
    let open = rows.iter().any(|r| r.rate.is_some());
    let first = if open {
        "target req/s | connections"
    } else {
        "users"
    };
    let mut out = format!(
        "| {first} | req/s | p50 ms | p90 ms | p95 ms | p99 ms | max ms | errors (status/connect/io/timeout) | cache hits | max ingest lag | freshness p50 / p99 ms | generator ceiling req/s | share of ceiling |\n"
    );
    let cols = first.matches('|').count() + 13;
    out.push_str(&format!("|{}\n", "---:|".repeat(cols)));
    for r in rows {
        let m = &r.stats.mix;
        let lead = match r.rate {
            Some(rate) => format!("{rate:.0} | {}", r.users),
            None => r.users.to_string(),
        };
        let errors = Failure::ALL
            .iter()
            .map(|k| m.errors.get(*k).to_string())
            .collect::<Vec<_>>()
            .join("/");
        let _ = writeln!(
            out,
            "| {lead} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {errors} | {} | {:.0} | {} | {} | {} |",
            m.per_second,
            m.p50,
            m.p90,
            m.p95,
            m.p99,
            m.max,
            r.cache_hit_ratio
                .map_or("-".into(), |h| format!("{:.1}%", h * 100.0)),
            r.lag_max,
            r.freshness_ms
                .map_or("-".into(), |(p50, p99)| format!("{p50:.1} / {p99:.1}")),
            r.ceiling.map_or("-".into(), |c| format!("{c:.0}")),
            r.ceiling_share()
                .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
        );
    }
    let lead = if open { "target req/s" } else { "users" };
    let _ = write!(
        out,
        "\nPer endpoint (req/s, p50 / p95 / p99 ms):\n\n| {lead} |"
    );
    for e in Endpoint::ALL {
        let _ = write!(out, " {} |", e.as_str());
    }
    out.push_str("\n|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = match r.rate {
            Some(rate) => write!(out, "| {rate:.0} |"),
            None => write!(out, "| {} |", r.users),
        };
        for f in &r.stats.endpoints {
            let _ = write!(
                out,
                " {:.0}, {:.2} / {:.2} / {:.2} |",
                f.per_second, f.p50, f.p95, f.p99
            );
        }
        out.push('\n');
    }
    out
}

/// Writes `text` to `dir/name`.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> Result<(), BenchError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(BenchError::io(path))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::stats::Recorder;

    fn row(users: usize) -> StepRow {
        let recorder = Recorder::new(Instant::now());
        for i in 1..=10 {
            recorder.record(Endpoint::Movement, Duration::from_millis(i), Ok(()));
        }
        recorder.record(
            Endpoint::Unknown,
            Duration::from_millis(1),
            Err(Failure::Timeout),
        );
        StepRow {
            users,
            rate: None,
            seconds: 1.0,
            stats: recorder.take_step(Duration::from_secs(1)),
            cache_hit_ratio: Some(0.5),
            lag_max: 12.0,
            freshness_ms: Some((14.0, 30.0)),
            ceiling: Some(22.0),
        }
    }

    #[test]
    fn csv_has_one_row_per_step_and_matching_columns() {
        let rows = [row(10), row(20)];
        let csv = steps_csv(&rows);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        let columns = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == columns));
        assert!(lines[1].starts_with("10,,1.00,11,11.0,"));
        assert!(lines[1].contains(",0,0,0,1,0.5000,12,14.00,30.00,22.0,0.5000"));
        let endpoints = endpoints_csv(&rows);
        assert_eq!(endpoints.lines().count(), 1 + 2 * 3);
    }

    #[test]
    fn markdown_rows_have_as_many_cells_as_the_header() {
        let md = markdown(&[row(10)]);
        let table: Vec<&str> = md.lines().take_while(|l| l.starts_with('|')).collect();
        assert_eq!(table.len(), 3);
        let cells = |l: &str| l.matches('|').count();
        assert!(table.iter().all(|l| cells(l) == cells(table[0])), "{md}");
        assert!(table[2].contains("| 50.0% |") && table[2].contains("| 50% |"));
    }
}
