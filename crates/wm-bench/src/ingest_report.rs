//! The tables `wm-bench ingest` writes (`ingest.md`, `ingest.csv`): the
//! median round of each configuration, every round, and the CPU seconds by
//! program of the median round.

use std::fmt::Write as _;

use crate::{
    cpu::{Program, Usage},
    ingest_rate::{Config, Row, mib, percent},
};

impl Row {
    /// Ceiling seconds, events/s and ratio cells (a failure in the first).
    fn ceiling_cells(&self) -> (String, String, String) {
        match &self.ceiling {
            Ok(c) => (
                format!("{:.2}", c.took.as_secs_f64()),
                format!("{:.0}", self.ceiling_rate().unwrap_or(0.0)),
                percent(self.ratio()),
            ),
            Err(e) => {
                let e = e.replace('\n', " ").replace('|', "/");
                (format!("failed: {e}"), "-".into(), "-".into())
            }
        }
    }
}

pub(crate) fn markdown(configs: &[Config]) -> String {
    let mut out = String::from(
        "Median of each configuration's rounds (each round: the service, then the ceiling, each on a fresh database):\n\n\
         | binary | partitions | batch size | events | rounds | events/s | PostgreSQL ceiling events/s | service / ceiling | ratio by round | peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for c in configs {
        let first = c.first();
        let ratios: Vec<String> = c.rounds.iter().map(|r| percent(r.ratio())).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            first.binary,
            first.partitions,
            first.batch_size,
            first.events,
            c.rounds.len(),
            c.service_rate(),
            c.ceiling_rate()
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}")),
            percent(c.ratio()),
            ratios.join(", "),
            mib(c.rounds.iter().filter_map(|r| r.peak_rss).max()),
        );
    }
    out.push_str(
        "\nEvery round:\n\n\
         | binary | partitions | batch size | round | service s (start-up) | events/s | PostgreSQL ceiling s | ceiling events/s | service / ceiling | peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in configs.iter().flat_map(|c| &c.rounds) {
        let (ceiling_s, ceiling_rate, ratio) = r.ceiling_cells();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} ({:.2}) | {:.0} | {} | {} | {} | {} |",
            r.binary,
            r.partitions,
            r.batch_size,
            r.round,
            r.service.as_secs_f64(),
            r.start_up.as_secs_f64(),
            r.service_rate(),
            ceiling_s,
            ceiling_rate,
            ratio,
            mib(r.peak_rss),
        );
    }
    out.push_str(
        "\nCPU seconds by program in the median round (both cores together; 2 per second of the phase), from `/proc`:\n\n\
         | binary | partitions | batch size | round | phase | PostgreSQL | service | Redis | broker | wm-bench | other | idle |\n\
         |---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in configs.iter().map(Config::median_round) {
        // A ceiling that failed measured nothing: no row.
        let ceiling = r.ceiling.as_ref().ok().map(|c| ("ceiling", &c.cpu));
        for (phase, cpu) in std::iter::once(("service", &r.service_cpu)).chain(ceiling) {
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {phase} |",
                r.binary, r.partitions, r.batch_size, r.round
            );
            for secs in cpu_cells(cpu) {
                let _ = write!(out, " {secs:.2} |");
            }
            out.push('\n');
        }
    }
    out
}

/// The programs of the CPU table and CSV, in their order (idle follows).
const CPU_COLUMNS: [Program; 6] = [
    Program::Postgres,
    Program::Service,
    Program::Redis,
    Program::Broker,
    Program::Bench,
    Program::Other,
];

/// The CPU seconds of one phase in the columns' order, idle last.
fn cpu_cells(cpu: &Usage) -> impl Iterator<Item = f64> + '_ {
    CPU_COLUMNS
        .iter()
        .map(|program| cpu.secs(*program))
        .chain(std::iter::once(cpu.idle))
}

/// Every round, one line each.
pub(crate) fn csv(configs: &[Config]) -> String {
    let mut out = String::from(
        "binary,partitions,batch_size,events,round,peak_rss_bytes,service_s,start_up_s,service_events_per_s,ceiling_s,ceiling_events_per_s,ratio,ceiling_splits,ceiling_error",
    );
    for phase in ["service", "ceiling"] {
        for program in CPU_COLUMNS {
            let _ = write!(out, ",{phase}_cpu_{}_s", program.name());
        }
        let _ = write!(out, ",{phase}_idle_s");
    }
    out.push('\n');
    for r in configs.iter().flat_map(|c| &c.rounds) {
        let ceiling = r.ceiling.as_ref().ok();
        let _ = write!(
            out,
            "{},{},{},{},{},{},{:.3},{:.3},{:.0},{},{},{},{},{}",
            r.binary,
            r.partitions,
            r.batch_size,
            r.events,
            r.round,
            r.peak_rss.map_or(String::new(), |b| b.to_string()),
            r.service.as_secs_f64(),
            r.start_up.as_secs_f64(),
            r.service_rate(),
            ceiling.map_or(String::new(), |c| format!("{:.3}", c.took.as_secs_f64())),
            r.ceiling_rate()
                .map_or(String::new(), |v| format!("{v:.0}")),
            r.ratio().map_or(String::new(), |v| format!("{v:.4}")),
            ceiling.map_or(String::new(), |c| c.splits.to_string()),
            r.ceiling.as_ref().err().map_or(String::new(), |e| format!(
                "\"{}\"",
                e.replace('"', "'").replace('\n', " ")
            )),
        );
        for secs in cpu_cells(&r.service_cpu) {
            let _ = write!(out, ",{secs:.2}");
        }
        match ceiling {
            Some(c) => cpu_cells(&c.cpu).for_each(|secs| {
                let _ = write!(out, ",{secs:.2}");
            }),
            // A ceiling that failed measured nothing: empty cells.
            None => out.push_str(&",".repeat(CPU_COLUMNS.len() + 1)),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;
    use crate::ingest_rate::{Ceiling, median};

    fn round(round: u32, service_s: u64, ceiling: Result<Ceiling, String>) -> Row {
        Row {
            binary: "service",
            partitions: 3,
            batch_size: 1000,
            events: 1000,
            round,
            service: Duration::from_secs(service_s),
            start_up: Duration::from_millis(250),
            ceiling,
            service_cpu: Usage {
                by_program: BTreeMap::from([(Program::Postgres, 1.5), (Program::Redis, 0.25)]),
                idle: 0.5,
            },
            peak_rss: Some(300 << 20),
        }
    }

    fn took(secs: u64) -> Result<Ceiling, String> {
        Ok(Ceiling {
            took: Duration::from_secs(secs),
            cpu: Usage::default(),
            splits: 0,
        })
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn the_median_round_gives_the_ratio_and_every_round_is_listed() {
        // Ratios 50%, 25%, 100%: the median round is the first.
        let config = Config {
            rounds: vec![
                round(1, 2, took(1)),
                round(2, 4, took(1)),
                round(3, 1, took(1)),
            ],
        };
        assert_eq!(config.rounds[0].ratio(), Some(0.5));
        assert_eq!(config.ratio(), Some(0.5));
        assert_eq!(config.median_round().round, 1);
        assert_eq!(config.service_rate(), 500.0);
        let md = markdown(std::slice::from_ref(&config));
        assert!(
            md.contains(
                "| service | 3 | 1000 | 1000 | 3 | 500 | 1000 | 50% | 50%, 25%, 100% | 300 MiB |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| service | 3 | 1000 | 2 | 4.00 (0.25) | 250 | 1.00 | 1000 | 25% | 300 MiB |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| service | 3 | 1000 | 1 | service | 1.50 | 0.00 | 0.25 | 0.00 | 0.00 | 0.00 | 0.50 |"
            ),
            "{md}"
        );
        assert_eq!(
            md.matches("| service | 1.50").count(),
            1,
            "the median round only"
        );
        let lines = csv(std::slice::from_ref(&config));
        assert_eq!(lines.lines().count(), 4, "a header and every round");
        let line = lines.lines().nth(1).unwrap();
        assert!(
            line.starts_with(
                "service,3,1000,1000,1,314572800,2.000,0.250,500,1.000,1000,0.5000,0,,"
            ),
            "{line}"
        );
        assert!(
            line.ends_with(
                ",1.50,0.00,0.25,0.00,0.00,0.00,0.50,0.00,0.00,0.00,0.00,0.00,0.00,0.00"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_failed_ceiling_has_no_ratio_and_no_cpu_row() {
        let config = Config {
            rounds: vec![round(1, 2, Err("out of shared memory".into()))],
        };
        assert_eq!(config.ratio(), None);
        assert_eq!(config.ceiling_rate(), None);
        let md = markdown(std::slice::from_ref(&config));
        assert!(
            md.contains("| 3 | 1000 | 1000 | 1 | 500 | - | - | - |"),
            "{md}"
        );
        assert!(
            md.contains("| failed: out of shared memory | - | - |"),
            "{md}"
        );
        assert!(
            !md.contains("| ceiling |"),
            "no CPU row for a ceiling that failed: {md}"
        );
        let lines = csv(&[config]);
        let line = lines.lines().nth(1).unwrap();
        assert!(
            line.contains(",,,,,\"out of shared memory\",1.50,"),
            "{line}"
        );
        assert!(
            line.ends_with(",0.50,,,,,,,"),
            "empty CPU cells for a ceiling that failed: {line}"
        );
    }
}
