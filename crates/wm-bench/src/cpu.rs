//! Who used the CPU during a benchmark phase. On the 2-core machine the
//! service, PostgreSQL, Redis and the broker share two cores, so a rate
//! alone does not say why a phase took as long as it did: this reads the
//! CPU time of every process from `/proc` before and after the phase and
//! groups it by program (the ingest ratio is bounded by what the other
//! programs take from PostgreSQL). Linux only; elsewhere, or when
//! `/proc` cannot be read, the figures are all zero.

use std::{collections::BTreeMap, fmt::Write as _, fs};

/// Clock ticks per second of `/proc` times: `USER_HZ`, 100 on every Linux
/// architecture this runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// The programs told apart, by process name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Program {
    Postgres,
    Service,
    Redis,
    Broker,
    Bench,
    Other,
}

impl Program {
    /// The program of a process named `comm` (at most 15 bytes, as the
    /// kernel keeps it).
    fn of(comm: &str) -> Self {
        match comm {
            c if c.starts_with("postgres") => Program::Postgres,
            c if "warehouse-monitor".starts_with(c) && c.len() >= 9 => Program::Service,
            c if c.starts_with("redis-server") => Program::Redis,
            "tansu" => Program::Broker,
            "wm-bench" => Program::Bench,
            _ => Program::Other,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Program::Postgres => "postgres",
            Program::Service => "service",
            Program::Redis => "redis",
            Program::Broker => "broker",
            Program::Bench => "bench",
            Program::Other => "other",
        }
    }
}

/// CPU ticks of every live process, and of the idle CPUs, at one instant.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    processes: BTreeMap<u32, (Program, u64)>,
    idle: u64,
}

/// CPU seconds per program between two snapshots, and idle seconds (summed
/// over the CPUs: two fully idle cores for one second are 2.0).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Usage {
    pub(crate) by_program: BTreeMap<Program, f64>,
    pub(crate) idle: f64,
}

impl Snapshot {
    /// Reads `/proc` now.
    pub(crate) fn take() -> Self {
        let mut snapshot = Snapshot {
            idle: fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| idle_ticks(&s))
                .unwrap_or(0),
            ..Snapshot::default()
        };
        let Ok(entries) = fs::read_dir("/proc") else {
            return snapshot;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // A process may end between the listing and the read.
            if let Some(stat) = fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| process_ticks(&s))
            {
                snapshot.processes.insert(pid, stat);
            }
        }
        snapshot
    }

    /// What was used from `earlier` to this snapshot. A process that started
    /// in between counts from its start; one that ended in between is lost,
    /// so take the later snapshot before stopping what is measured.
    pub(crate) fn since(&self, earlier: &Snapshot) -> Usage {
        let mut usage = Usage {
            idle: self.idle.saturating_sub(earlier.idle) as f64 / TICKS_PER_SEC,
            ..Usage::default()
        };
        for (pid, (program, ticks)) in &self.processes {
            let before = earlier
                .processes
                .get(pid)
                .filter(|(p, _)| p == program)
                .map_or(0, |(_, t)| *t);
            *usage.by_program.entry(*program).or_default() +=
                ticks.saturating_sub(before) as f64 / TICKS_PER_SEC;
        }
        usage
    }
}

impl Usage {
    pub(crate) fn secs(&self, program: Program) -> f64 {
        self.by_program.get(&program).copied().unwrap_or(0.0)
    }

    /// `postgres 2.10, service 0.95, ..., idle 0.50` (CPU seconds), the
    /// programs that used any, largest first.
    pub(crate) fn summary(&self) -> String {
        let mut used: Vec<(Program, f64)> = self
            .by_program
            .iter()
            .filter(|(_, s)| **s >= 0.005)
            .map(|(p, s)| (*p, *s))
            .collect();
        used.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut out = String::new();
        for (program, secs) in used {
            let _ = write!(out, "{} {secs:.2}, ", program.name());
        }
        let _ = write!(out, "idle {:.2}", self.idle);
        out
    }
}

/// Idle and I/O-wait ticks of all CPUs, from the first line of `/proc/stat`.
fn idle_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    Some(values.get(3)? + values.get(4)?)
}

/// The program and user + system ticks of one `/proc/<pid>/stat`.
fn process_ticks(stat: &str) -> Option<(Program, u64)> {
    // The name sits in parentheses and may itself hold spaces or ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state (field 3) ... utime (14), stime (15).
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((Program::of(comm), utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_process_and_the_idle_time() {
        let stat = "4242 (postgres) S 1 4242 4242 0 -1 4194560 90 0 0 0 150 25 0 0 20 0 1 0 77 0 0";
        assert_eq!(process_ticks(stat), Some((Program::Postgres, 175)));
        let odd = "7 (tokio (rt) x) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 77 0 0";
        assert_eq!(process_ticks(odd), Some((Program::Other, 7)));
        assert_eq!(
            idle_ticks("cpu  10 0 5 300 20 0 1 0 0 0\ncpu0 5 0 2 150 10 0 1 0 0 0\n"),
            Some(320)
        );
        assert_eq!(Program::of("warehouse-monit"), Program::Service);
        assert_eq!(Program::of("redis-server"), Program::Redis);
    }

    #[test]
    fn usage_is_the_difference_and_new_processes_count_whole() {
        let earlier = Snapshot {
            processes: BTreeMap::from([(1, (Program::Postgres, 100)), (2, (Program::Redis, 50))]),
            idle: 1000,
        };
        let later = Snapshot {
            processes: BTreeMap::from([
                (1, (Program::Postgres, 250)),
                (2, (Program::Redis, 60)),
                (3, (Program::Postgres, 40)),
            ]),
            idle: 1100,
        };
        let usage = later.since(&earlier);
        assert!((usage.secs(Program::Postgres) - 1.9).abs() < 1e-9);
        assert!((usage.secs(Program::Redis) - 0.1).abs() < 1e-9);
        assert!((usage.idle - 1.0).abs() < 1e-9);
        assert_eq!(usage.summary(), "postgres 1.90, redis 0.10, idle 1.00");
    }

    #[test]
    fn this_process_is_seen() {
        let now = Snapshot::take();
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(now.processes.contains_key(&std::process::id()));
        }
    }
}
