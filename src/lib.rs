//! warehouse-monitor: turns a Kafka stream of warehouse movement events into
//! correct, queryable state in PostgreSQL, cached in Redis, served over HTTP.
//!
//! The data's path: [`consumer`] fetches and batches records, [`event`]
//! decodes them, [`batch`] judges them, [`store`] writes each batch in one
//! transaction with its offset, [`cache`] invalidates what changed, and
//! [`api`] answers queries.

pub mod api;
pub mod batch;
pub mod cache;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod event;
pub mod kafka;
pub mod metrics;
pub mod produce;
pub mod retry;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
