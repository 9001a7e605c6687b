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

/// Every migration, oldest first: the files of `sql/migrations` in name
/// order, embedded by `build.rs`. Never edit one that has shipped: add a file.
pub const MIGRATIONS: &[Migration] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

const MIGRATIONS_TABLE: &str = include_str!("../../sql/queries/migrations_table.sql");
const APPLIED: &str = include_str!("../../sql/queries/migration_applied.sql");
const RECORD: &str = include_str!("../../sql/queries/record_migration.sql");
const LOCK: &str = include_str!("../../sql/queries/migration_lock.sql");

/// Advisory lock key held while migrating ("wm-migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x0077_6d2d_6d69_6772;

/// Applies the pending migrations; returns the versions it applied.
pub async fn run(client: &mut Client) -> Result<Vec<&'static str>, StoreError> {
    let tx = client.transaction().await?;
    tx.execute(LOCK, &[&MIGRATION_LOCK]).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_the_files_in_name_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{}.sql", m.version))
            .collect();
        assert_eq!(embedded, files);
        assert!(MIGRATIONS.iter().all(|m| !m.sql.trim().is_empty()));
        assert_eq!(MIGRATIONS[0].version, "0001_schema");
    }
}
