//! Integration tests: the real service against the real PostgreSQL, Redis and
//! Kafka-compatible broker of the local stack (`scripts/stack.sh up`). One
//! binary, one module per capability; every test has its own database, topic
//! and port.

mod eventually;
mod helpers;
mod pki;
mod service;
mod stream;

mod anywhere;
mod api;
mod cache;
mod compression;
mod crash;
mod failover;
mod faults;
mod guards;
mod ingest;
mod instances;
mod isolation;
mod kafka_security;
mod legal_records;
mod librdkafka;
mod limits;
mod lost_writes;
mod markers;
mod monitoring;
mod near;
mod offsets;
mod outage;
mod outbox;
mod outbox_bound;
mod partitions;
mod quarantine;
mod rejects;
mod replay;
mod roles;
mod security;
mod timebounds;
mod transactions;
mod unknown_ids;
mod volume;
mod wire;
