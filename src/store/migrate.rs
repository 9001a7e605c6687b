//! Ordered schema migrations from `sql/migrations`, applied once each and recorded
//! in `schema_migrations`, under an advisory lock so that instances starting
//! together do not race.

use super::{Client, StoreError};

/// One migration: a version that sorts in apply order, and its SQL.
#[derive(Debug)]
pub struct Migration {
    pub version: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Never edit one that has shipped: add a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: "0001_schema",
        sql: include_str!("../../sql/migrations/0001_schema.sql"),
    },
    Migration {
        version: "0002_partition_leases",
        sql: include_str!("../../sql/migrations/0002_partition_leases.sql"),
    },
    Migration {
        version: "0003_consumer_instances",
        sql: include_str!("../../sql/migrations/0003_consumer_instances.sql"),
    },
];

const MIGRATIONS_TABLE: &str = include_str!("../../sql/queries/migrations_table.sql");
const APPLIED: &str = include_str!("../../sql/queries/migration_applied.sql");
const RECORD: &str = include_str!("../../sql/queries/record_migration.sql");

/// Advisory lock key held while migrating ("wm-migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x0077_6d2d_6d69_6772;

/// Applies the pending migrations; returns the versions it applied.
pub async fn run(client: &mut Client) -> Result<Vec<&'static str>, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(MIGRATIONS_TABLE).await?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let done = tx
            .query_opt(APPLIED, &[&migration.version])
            .await?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(migration.sql).await?;
        tx.execute(RECORD, &[&migration.version]).await?;
        applied.push(migration.version);
    }
    tx.commit().await?;
    Ok(applied)
}
