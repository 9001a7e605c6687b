//! The tool's typed errors. Each names what was being done, so the one line
//! printed at the binary's edge says where a run went wrong.

use std::{net::SocketAddr, path::PathBuf};

use crate::wm::{ConfigError, KafkaError, ServiceError, StoreError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    #[error("cannot read the settings: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Kafka(#[from] KafkaError),
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("PostgreSQL pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("the consumer committed {committed} of {target} records within {secs} s")]
    NotConsumed {
        committed: i64,
        target: i64,
        secs: u64,
    },
    #[error("HTTP to {addr}: {detail}")]
    Http { addr: SocketAddr, detail: String },
    #[error("a task of the tool failed: {0}")]
    Task(String),
    #[error("the seeded database holds no {0}")]
    NothingSeeded(&'static str),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} migrate: {detail}")]
    Migrate { binary: PathBuf, detail: String },
    #[error("chart {path}: {detail}")]
    Chart { path: PathBuf, detail: String },
    #[error("font {path}: {detail} (pass --font with a TrueType file)")]
    Font { path: PathBuf, detail: String },
}

impl BenchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| BenchError::Io { path, source }
    }
}
