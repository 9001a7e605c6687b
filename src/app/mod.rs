//! The application's wiring: settings, the command line, start-up and
//! shutdown, logs and metrics. Everything else is built and connected here.

pub mod cli;
pub mod config;
pub mod metrics;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
