//! Integration tests: the real service against the real PostgreSQL, Redis and
//! Kafka-compatible broker of the local stack (`scripts/stack.sh up`). One
//! binary, one module per capability; every test has its own database, topic
//! and port.

mod support;

mod anywhere;
mod cached_reads;
mod compression;
mod crash;
mod failover;
mod faults;
mod footprint;
mod guards;
mod http_api;
mod instances;
mod isolation;
mod kafka_security;
mod legal_records;
mod librdkafka;
mod limits;
mod lost_writes;
mod markers;
mod monitoring;
mod movement_rules;
mod near_cache;
mod one_consumer;
mod outage;
mod outbox_bound;
mod outbox_delivery;
mod partitions;
mod quarantine;
mod redis_refuses;
mod rejects;
mod replay;
mod roles;
mod secure_connections;
mod startup_check;
mod stored_offsets;
mod timebounds;
mod transactions;
mod unknown_ids;
mod volume;
mod wire;
