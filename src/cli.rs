//! The command line: `serve`, `migrate` and `verify`, each a thin call into the
//! library so that `main` only wires the process edge.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::kafka::Codec;

/// Turns a Kafka stream of warehouse movement events into queryable state.
#[derive(Debug, Parser)]
#[command(name = "warehouse-monitor", version)]
pub struct Cli {
    /// Directory holding `default.toml`.
    #[arg(long, env = "WM_CONFIG_DIR", default_value = "config", global = true)]
    pub config_dir: PathBuf,
    /// Extra TOML file applied over `default.toml` (environment variables still win).
    #[arg(long, env = "WM_CONFIG_FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the topic and serve the HTTP API until SIGINT/SIGTERM.
    Serve,
    /// Create the database if missing and apply pending migrations.
    Migrate,
    /// Recompute stock from the stored events; exit 1 on any mismatch.
    Verify,
    /// Print the OpenAPI document (the one committed as docs/openapi.json).
    Openapi,
    /// Produce generated demo events (departures, arrivals, duplicates, a few
    /// malformed records) to the configured topic.
    Produce {
        /// Number of movements (each has 1-3 products, so 2-6 events).
        #[arg(long, default_value_t = 1000)]
        movements: usize,
        /// Random seed; the same seed gives the same movements (default: a new
        /// seed each run, so that runs add new movements).
        #[arg(long)]
        seed: Option<u64>,
        /// Share of events sent twice, as a producer retry would.
        #[arg(long, default_value_t = 0.02)]
        duplicate_ratio: f64,
        /// Share of records replaced by malformed ones.
        #[arg(long, default_value_t = 0.01)]
        invalid_ratio: f64,
        /// Compression of the produced record batches.
        #[arg(long, value_enum, default_value_t = Codec::None)]
        compression: Codec,
    },
}
