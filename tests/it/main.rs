//! Integration tests: the real service against the real PostgreSQL, Redis and
//! Kafka-compatible broker of the local stack (`scripts/stack.sh up`). One
//! binary, one module per capability; every test has its own database, topic
//! and port.
//!
//! They inject faults through the service's `faults` feature, which `make
//! test` enables (`cargo test --workspace --features warehouse-monitor/faults`).
//! Built without it, by a plain `cargo test`, they are one ignored test whose
//! reason says so, rather than nothing at all.

#[cfg(not(feature = "faults"))]
#[test]
#[ignore = "the integration tests need the local stack and the `faults` feature: run `make test`"]
fn integration_tests_run_with_make_test() {}

#[cfg(feature = "faults")]
mod support;

#[cfg(feature = "faults")]
mod anywhere;
#[cfg(feature = "faults")]
mod cached_reads;
#[cfg(feature = "faults")]
mod compression;
#[cfg(feature = "faults")]
mod crash;
#[cfg(feature = "faults")]
mod failover;
#[cfg(feature = "faults")]
mod faults;
#[cfg(feature = "faults")]
mod footprint;
#[cfg(feature = "faults")]
mod guards;
#[cfg(feature = "faults")]
mod http_api;
#[cfg(feature = "faults")]
mod instances;
#[cfg(feature = "faults")]
mod isolation;
#[cfg(feature = "faults")]
mod kafka_security;
#[cfg(feature = "faults")]
mod legal_records;
#[cfg(feature = "faults")]
mod librdkafka;
#[cfg(feature = "faults")]
mod limits;
#[cfg(feature = "faults")]
mod lost_writes;
#[cfg(feature = "faults")]
mod markers;
#[cfg(feature = "faults")]
mod monitoring;
#[cfg(feature = "faults")]
mod movement_rules;
#[cfg(feature = "faults")]
mod near_cache;
#[cfg(feature = "faults")]
mod one_consumer;
#[cfg(feature = "faults")]
mod outage;
#[cfg(feature = "faults")]
mod outbox_bound;
#[cfg(feature = "faults")]
mod outbox_delivery;
#[cfg(feature = "faults")]
mod partitions;
#[cfg(feature = "faults")]
mod quarantine;
#[cfg(feature = "faults")]
mod redis_cluster;
#[cfg(feature = "faults")]
mod redis_deployments;
#[cfg(feature = "faults")]
mod redis_refuses;
#[cfg(feature = "faults")]
mod rejects;
#[cfg(feature = "faults")]
mod replay;
#[cfg(feature = "faults")]
mod roles;
#[cfg(feature = "faults")]
mod secure_connections;
#[cfg(feature = "faults")]
mod startup_check;
#[cfg(feature = "faults")]
mod stored_offsets;
#[cfg(feature = "faults")]
mod timebounds;
#[cfg(feature = "faults")]
mod transactions;
#[cfg(feature = "faults")]
mod unknown_ids;
#[cfg(feature = "faults")]
mod volume;
#[cfg(feature = "faults")]
mod wire;
