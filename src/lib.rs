//! warehouse-monitor: turns a Kafka stream of warehouse movement events into
//! correct, queryable state in PostgreSQL, cached in Redis, served over HTTP.
//!
//! The tree follows the data's path. [`ingest`] fetches each partition's
//! records ([`ingest::fetch`]), closes batches ([`ingest::batch`]), decodes
//! them ([`ingest::decode`], with the rules of [`domain::event`]), plans them
//! against what is stored ([`domain::plan`]), writes the plan and the offset in
//! one transaction ([`store::write`]), invalidating the cache before its
//! COMMIT ([`ingest::invalidate`]; the cache's protocol, outbox included,
//! is all in [`cache`]). [`api`] answers queries. [`cluster`]
//! shares partitions between instances, and [`app`] wires it all together:
//! settings, start-up, shutdown, logs and metrics ([`alloc`] tunes the
//! binaries' allocator).

// The library's surface is what it exports: nothing `pub` that cannot be reached.
#![warn(unreachable_pub)]

pub mod alloc;
pub mod api;
pub mod app;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod fault;
pub mod ingest;
pub mod kafka;
pub mod metrics;
pub mod redact;
pub mod retry;
pub mod store;
pub mod throttle;
pub mod tls;
