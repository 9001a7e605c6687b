//! The command line: `serve`, `migrate`, `verify`, `check`, `config` and
//! `openapi`, each a thin call into the library so that `main` only wires
//! the process edge.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Turns a Kafka stream of warehouse movement events into queryable state.
#[derive(Debug, Parser)]
#[command(name = "warehouse-monitor", version)]
pub struct Cli {
    /// Directory holding a `default.toml` applied over the built-in defaults
    /// (none is needed: the defaults are compiled in).
    #[arg(long, env = "WM_CONFIG_DIR", global = true)]
    pub config_dir: Option<PathBuf>,
    /// Extra TOML file applied over the defaults and the config directory
    /// (environment variables still win).
    #[arg(long, env = "WM_CONFIG_FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the topic and serve the HTTP API until SIGINT/SIGTERM.
    Serve {
        /// What this instance runs (overrides the `role` setting and WM_ROLE).
        #[arg(long, value_enum)]
        role: Option<crate::config::Role>,
    },
    /// Create the database if missing and apply pending migrations.
    Migrate,
    /// Recompute stock from the stored events; exit 1 on any mismatch.
    Verify,
    /// Check the PostgreSQL, Redis and topic settings the service depends on
    /// (what `serve` warns about at start); exit 3 on a warning, 4 when a
    /// check could not run.
    Check,
    /// Print the effective configuration as TOML, passwords masked.
    Config,
    /// Print the OpenAPI document (the one committed as docs/openapi.json).
    Openapi,
}
