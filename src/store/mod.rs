//! PostgreSQL: the pool, the typed errors of the storage layer, and the modules
//! that each own one kind of statement (migrations, batch apply, offsets, verify).

pub mod apply;
pub mod leases;
pub mod members;
pub mod migrate;
pub mod offsets;
pub mod read;
pub mod verify;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::PostgresSettings;

/// A pooled PostgreSQL connection.
pub type Client = deadpool_postgres::Object;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot build the PostgreSQL pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("no PostgreSQL connection available: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "offset of {topic}/{partition} is no longer {expected:?}: another consumer committed it"
    )]
    OffsetConflict {
        topic: String,
        partition: i32,
        expected: Option<i64>,
    },
}

/// Parses the URL and builds a pool (connections are opened lazily).
pub fn pool(settings: &PostgresSettings) -> Result<Pool, StoreError> {
    let pg_config: tokio_postgres::Config = settings.url.parse().map_err(StoreError::Url)?;
    pool_from_config(pg_config, settings.pool_size)
}

fn pool_from_config(pg_config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        pg_config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

/// Connects to the `postgres` maintenance database of the server in `url`;
/// returns the client, its connection task and the database name in `url`.
async fn maintenance(
    url: &str,
) -> Result<Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>, String)>, StoreError> {
    let target: tokio_postgres::Config = url.parse().map_err(StoreError::Url)?;
    let Some(name) = target.get_dbname().map(str::to_owned) else {
        return Ok(None);
    };
    let mut maintenance = target.clone();
    maintenance.dbname("postgres");
    let (client, connection) = maintenance.connect(NoTls).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Some((client, driver, name)))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops the database named in `url` if it exists (load tests start clean).
pub async fn drop_database(url: &str) -> Result<(), StoreError> {
    let Some((client, driver, name)) = maintenance(url).await? else {
        return Ok(());
    };
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote(&name)
        ))
        .await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Creates the database named in `url` when it does not exist yet, connecting to
/// the `postgres` maintenance database of the same server.
pub async fn ensure_database(url: &str) -> Result<(), StoreError> {
    let Some((client, driver, name)) = maintenance(url).await? else {
        return Ok(());
    };
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        match client
            .batch_execute(&format!("CREATE DATABASE {}", quote(&name)))
            .await
        {
            Ok(()) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}
