//! The server's own settings, read for the start-up check (`app/check.rs`):
//! a few of them (the WAL budget, its compression, the checkpoint interval)
//! decide whether ingest keeps its rate once the tables outgrow memory, and
//! only the server knows what it runs with.

use super::{Client, StoreError};

const SERVER_SETTINGS: &str = include_str!("../../sql/queries/server_settings.sql");

/// One row of `pg_settings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSetting {
    pub name: String,
    /// The value as the server prints it in `unit`: `1024`, `off`.
    pub setting: String,
    /// `MB`, `8kB`, `s`, `ms`...; `None` for a setting without one.
    pub unit: Option<String>,
}

/// The settings of `names` the server has (an unknown name is left out).
pub async fn read(client: &Client, names: &[&str]) -> Result<Vec<ServerSetting>, StoreError> {
    let stmt = client.prepare_cached(SERVER_SETTINGS).await?;
    let rows = client.query(&stmt, &[&names]).await?;
    Ok(rows
        .iter()
        .map(|r| ServerSetting {
            name: r.get(0),
            setting: r.get(1),
            unit: r.get(2),
        })
        .collect())
}
