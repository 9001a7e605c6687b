//! The application's wiring: the command line, start-up and shutdown, the
//! start-up check, and logs. Everything else is built and connected here. The settings
//! ([`crate::config`]) and the metrics ([`crate::metrics`]) are not wiring:
//! every layer uses them, so they live at the bottom, importing nothing of
//! the service.

pub mod check;
pub mod cli;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
