//! wm-bench: the developer tools that measure warehouse-monitor from the
//! outside. `loadtest` loads the HTTP API in steps while events keep
//! arriving; `ingest` times a backlog against PostgreSQL's own ceiling;
//! `freshness` times produce → visible of single events; `flood` sends
//! random unknown ids at full speed and watches Redis' memory; `growth`
//! times ingest into a database prefilled with N movements against an empty
//! one; `produce`
//! writes demo traffic to the topic. The measurements run the release
//! service binary as a separate process; this crate is not part of the
//! service, so its library and binary carry none of this.

// Counts and durations become `f64` for rates and milliseconds; they stay far
// below 2^52, so the precision that lint warns about is never lost here.
#![allow(clippy::cast_precision_loss)]

/// The same allocator as the service: the generator shares its two cores.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod chart;
mod cpu;
mod error;
mod feed;
mod flood;
mod freshness;
mod growth;
mod http;
mod ingest_rate;
mod ingest_report;
mod load;
mod loadtest;
mod report;
mod scrape;
mod seed;
mod stats;
mod under_test;
mod wm;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use error::BenchError;

/// Load test and ingest benchmark of warehouse-monitor (needs the local stack).
#[derive(Debug, Parser)]
#[command(name = "wm-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP load in steps of users (or open-loop rates) during ingestion.
    Loadtest(loadtest::Options),
    /// Backlog ingest rate of the service against PostgreSQL's ceiling.
    Ingest(ingest_rate::Options),
    /// Produce → visible in the API, one event at a time, with and without
    /// background ingest.
    Freshness(freshness::Options),
    /// Random unknown movement ids at full speed for N seconds: Redis'
    /// memory before and after, and whether every answer was a right 404.
    Flood(flood::Options),
    /// Ingest into a database prefilled with N movements against an empty
    /// one, alternating: both rates, their ratio, WAL per event.
    Growth(growth::Options),
    /// Produce generated demo events (departures, arrivals, duplicates, a few
    /// malformed records) to the configured topic.
    Produce(ProduceOptions),
}

/// `produce`'s options: the settings the service reads, and what to send.
#[derive(Debug, clap::Args)]
struct ProduceOptions {
    /// Directory of the `default.toml` read by the service (and the
    /// `WM_*` variables over it, as the service reads them).
    #[arg(long, default_value = under_test::CONFIG_DIR)]
    config_dir: PathBuf,
    #[command(flatten)]
    traffic: wm::produce::ProduceArgs,
}

/// Options of both commands.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// The service binary (default: `warehouse-monitor` next to this tool).
    #[arg(long)]
    pub(crate) service: Option<PathBuf>,
    /// Directory of the `default.toml` read by this tool and the service.
    #[arg(long, default_value = under_test::CONFIG_DIR)]
    pub(crate) config_dir: PathBuf,
    /// TrueType font for the PNG charts.
    #[arg(long, default_value = chart::DEFAULT_FONT)]
    pub(crate) font: PathBuf,
}

impl Common {
    /// The service binary to run: `--service`, or the one next to this tool.
    pub(crate) fn service_binary(&self) -> PathBuf {
        self.service
            .clone()
            .unwrap_or_else(under_test::default_binary)
    }
}

/// Creates `<out>/<UTC timestamp>/`.
pub(crate) fn run_dir(out: &Path) -> Result<PathBuf, BenchError> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let dir = out.join(stamp);
    std::fs::create_dir_all(&dir).map_err(BenchError::io(&dir))?;
    Ok(dir)
}

#[tokio::main]
async fn main() -> ExitCode {
    warehouse_monitor::alloc::tune();
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Produce(options) => {
            let settings = wm::Settings::load(&options.config_dir, None)?;
            let summary = wm::produce::run(&settings.kafka, options.traffic).await?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Loadtest(options) => {
            let outcome = loadtest::run(options).await?;
            println!("\n{}", outcome.table);
            println!("outputs: {}", outcome.dir.display());
            if outcome.errors > 0 {
                eprintln!(
                    "FAILED: {} request(s) failed (unexpected status or socket error)",
                    outcome.errors
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Freshness(options) => {
            let (dir, table) = freshness::run(options).await?;
            println!("\n{table}");
            println!("outputs: {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Flood(options) => {
            let (report, passed) = flood::run(options).await?;
            println!("\n{report}");
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Growth(options) => {
            let (dir, table) = growth::run(options).await?;
            println!("\n{table}");
            println!("outputs: {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest(options) => {
            let (dir, table) = ingest_rate::run(options).await?;
            println!("\n{table}");
            println!("outputs: {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
