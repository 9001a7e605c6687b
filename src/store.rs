//! PostgreSQL: the [`Store`] that owns the connection pool, the typed errors of
//! the storage layer, and the modules that each own one kind of statement
//! (migrations, the batch transaction, offsets, reads, verify, the server's
//! settings; partition ownership and instances, on the dedicated
//! [`session::Session`]).

pub mod member_locks;
pub mod migrate;
pub mod offsets;
pub mod partition_locks;
pub mod read;
pub mod server_settings;
pub mod session;
pub mod sslmode;
pub mod verify;
pub mod write;

use std::{
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use uuid::Uuid;

use self::sslmode::MakeRustls;
use crate::{
    config::{PgSslMode, PostgresSettings},
    tls::TlsError,
};

/// A pooled PostgreSQL connection.
pub type Client = deadpool_postgres::Object;

/// The part of the work a database error happened in: a low-cardinality
/// label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Taking a connection from the pool.
    Connect,
    /// Opening or committing the batch transaction.
    Transaction,
    /// Advisory locks on the batch's movements.
    Lock,
    /// Reading the stored events and sides of the batch's movements.
    ReadState,
    /// Binary COPY of the new events.
    Copy,
    /// Upserting the movements.
    Movements,
    /// Upserting the stock deltas.
    Stock,
    /// Inserting the rejected records.
    Rejects,
    /// The offset compare-and-set.
    Offset,
    /// The cache outbox (in the batch transaction, or on its own).
    Outbox,
    /// Any statement outside the batch transaction.
    Query,
}

impl Step {
    pub const BATCH: [Step; 10] = [
        Step::Connect,
        Step::Transaction,
        Step::Lock,
        Step::ReadState,
        Step::Copy,
        Step::Movements,
        Step::Stock,
        Step::Rejects,
        Step::Offset,
        Step::Outbox,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Transaction => "transaction",
            Step::Lock => "lock",
            Step::ReadState => "read_state",
            Step::Copy => "copy",
            Step::Movements => "movements",
            Step::Stock => "stock",
            Step::Rejects => "rejects",
            Step::Offset => "offset",
            Step::Outbox => "outbox",
            Step::Query => "query",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the storage layer. Each message already holds what its cause
/// said (SQLSTATE and server message), so causes are not chained again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid PostgreSQL URL: {}", describe(.0))]
    Url(tokio_postgres::Error),
    #[error("PostgreSQL TLS (postgres.sslmode, postgres.ca_file): {0}")]
    Tls(TlsError),
    #[error("cannot build the PostgreSQL pool: {0}")]
    Build(deadpool_postgres::BuildError),
    #[error("no PostgreSQL connection: {}", describe_pool(.0))]
    Pool(deadpool_postgres::PoolError),
    #[error("{step} failed: {}", describe(.cause))]
    Db {
        step: Step,
        cause: tokio_postgres::Error,
    },
    #[error(
        "offset of {topic}/{partition} is no longer {expected:?}: another consumer committed it"
    )]
    OffsetConflict {
        topic: String,
        partition: i32,
        expected: Option<i64>,
    },
}

impl StoreError {
    /// The SQLSTATE the server answered with, if it answered.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            StoreError::Db { cause, .. } => cause.code(),
            StoreError::Pool(deadpool_postgres::PoolError::Backend(cause)) => cause.code(),
            _ => None,
        }
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        match self {
            StoreError::Db { step, .. } => *step,
            StoreError::Url(_)
            | StoreError::Tls(_)
            | StoreError::Build(_)
            | StoreError::Pool(_) => Step::Connect,
            StoreError::OffsetConflict { .. } => Step::Offset,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(cause: tokio_postgres::Error) -> Self {
        StoreError::Db {
            step: Step::Query,
            cause,
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(e)
    }
}

impl From<deadpool_postgres::BuildError> for StoreError {
    fn from(e: deadpool_postgres::BuildError) -> Self {
        StoreError::Build(e)
    }
}

/// Labels a PostgreSQL result with the step it belongs to.
pub(crate) trait At<T> {
    fn at(self, step: Step) -> Result<T, StoreError>;
}

impl<T> At<T> for Result<T, tokio_postgres::Error> {
    fn at(self, step: Step) -> Result<T, StoreError> {
        self.map_err(|cause| StoreError::Db { step, cause })
    }
}

/// What the server said (`SQLSTATE 22008: date/time field value out of
/// range ...`), or the client-side error with its causes, in one line.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("SQLSTATE {}: {}", db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(cause) => describe(cause),
        other => other.to_string(),
    }
}

/// Server-side keepalives of batch connections: a silent client is probed
/// after 2 s, every second, and dropped after 3 unanswered probes (about 5 s,
/// the default `consumer.lease_ttl_ms`), which rolls its transaction back.
const BATCH_KEEPALIVES: &str =
    "-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3";

const PING: &str = include_str!("../sql/queries/ping.sql");
const DATABASE_EXISTS: &str = include_str!("../sql/queries/database_exists.sql");
const CREATE_DATABASE: &str = include_str!("../sql/queries/create_database.sql");
const DROP_DATABASE: &str = include_str!("../sql/queries/drop_database.sql");

/// The database: owns the connection pools, and every statement goes through
/// it. Three pools, so that API reads, batch transactions and the cache
/// outbox watch never queue behind one another, and the ownership session on
/// a connection of its own.
#[derive(Debug, Clone)]
pub struct Store {
    /// Batch transactions, offsets, migrations, verify.
    batches: Pool,
    /// API reads, with a server-side statement timeout.
    reads: Pool,
    /// Makes the connection of an ownership session, which is then taken out
    /// of it for good (never shared, never recycled while it holds locks).
    sessions: Pool,
    /// Ownership sessions open now (0 or 1), for the pool gauges.
    open_sessions: Arc<AtomicUsize>,
    /// The cache outbox poll ([`crate::cache::outbox_watch`]): one
    /// connection, so that a read storm cannot delay it past the cache permit.
    outbox: Pool,
}

impl Store {
    /// Parses the URL, reads the TLS settings and builds the pools
    /// (connections are opened lazily).
    pub fn new(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let (mut pg, tls) = target(settings)?;
        // A peer that vanished is noticed by the kernel, not only at the next query.
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5));
        // Batch connections also ask the server to probe them: a batch in
        // flight on an instance cut off by the network would otherwise keep its
        // locks (offset row, movements) for the server's default keepalive
        // time, two hours, and its successor would wait on them that long.
        let mut batches = pg.clone();
        batches.options(BATCH_KEEPALIVES);
        let mut reads = pg.clone();
        let timeout = settings.read_statement_timeout_ms;
        reads.options(format!("-c statement_timeout={timeout}"));
        let wait = Duration::from_millis(timeout);
        let pool = |pg, size, wait| pool_from_config(pg, tls.clone(), size, wait);
        Ok(Self {
            batches: pool(batches, settings.pool_size, Duration::from_secs(10))?,
            reads: pool(reads, settings.api_pool_size, wait)?,
            sessions: pool(pg.clone(), 1, Duration::from_secs(5))?,
            outbox: pool(pg, 1, Duration::from_secs(1))?,
            open_sessions: Arc::default(),
        })
    }

    /// A pooled connection for batch transactions.
    pub async fn client(&self) -> Result<Client, StoreError> {
        Ok(self.batches.get().await?)
    }

    async fn read_client(&self) -> Result<Client, StoreError> {
        Ok(self.reads.get().await?)
    }

    /// Per pool: its name, connections open and connections idle; the
    /// ownership session counts as a pool of its own (`ownership`, 1 in use
    /// while it is open).
    pub fn connections(&self) -> Vec<(&'static str, usize, usize)> {
        let mut pools: Vec<_> = [
            ("batches", &self.batches),
            ("reads", &self.reads),
            ("outbox", &self.outbox),
        ]
        .into_iter()
        .map(|(name, pool)| {
            let status = pool.status();
            (name, status.size, status.available)
        })
        .collect();
        let open = self
            .open_sessions
            .load(std::sync::atomic::Ordering::Relaxed);
        pools.push(("ownership", open, 0));
        pools
    }

    /// Closes the pools: idle connections are dropped, waiters get an error.
    pub fn close(&self) {
        self.batches.close();
        self.reads.close();
        self.sessions.close();
        self.outbox.close();
    }

    /// True when the server answers (on the read pool, as the API would).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read_client().await?.simple_query(PING).await?;
        Ok(())
    }

    /// Applies the pending migrations; returns the versions it applied.
    pub async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        migrate::run(&mut self.client().await?).await
    }

    /// The next offset to consume on a partition, `None` when nothing was committed.
    pub async fn load_offset(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, StoreError> {
        offsets::load(&self.client().await?, topic, partition).await
    }

    /// Moves a partition's stored offset from `expected` to `next` over a part
    /// of the log that holds no record for the service (transaction markers).
    pub async fn advance_offset(
        &self,
        topic: &str,
        partition: i32,
        expected: Option<i64>,
        next: i64,
    ) -> Result<(), StoreError> {
        offsets::advance(&self.client().await?, topic, partition, expected, next).await
    }

    /// Opens this instance's ownership session on `topic`: a connection of its
    /// own on which the server ends the session after `silence` without an
    /// answer from this process. `None` if its member lock was refused.
    pub async fn open_session(
        &self,
        topic: &str,
        instance: Uuid,
        silence: Duration,
    ) -> Result<Option<session::Session>, StoreError> {
        let client = deadpool_postgres::Object::take(self.sessions.get().await?);
        session::Session::start(client, &self.open_sessions, topic, instance, silence).await
    }

    /// The cache outbox watch's own connection, for its looks at the outbox
    /// ([`crate::cache::outbox`]).
    pub async fn outbox_client(&self) -> Result<Client, StoreError> {
        Ok(self.outbox.get().await?)
    }

    /// One stored movement, `None` when unknown; guarded when `guard` (a
    /// reader that holds a cache lease).
    pub async fn movement(
        &self,
        id: Uuid,
        guard: bool,
    ) -> Result<read::Read<Option<read::StoredMovement>>, StoreError> {
        read::movement(&self.read_client().await?, id, guard).await
    }

    /// The stock of one (warehouse, product) and its row version (0, 0 when
    /// unknown); guarded when `guard`.
    pub async fn stock(
        &self,
        warehouse: Uuid,
        product: Uuid,
        guard: bool,
    ) -> Result<read::Read<(i64, i64)>, StoreError> {
        read::stock(&self.read_client().await?, warehouse, product, guard).await
    }

    /// Recomputes stock from the stored events.
    pub async fn verify(&self) -> Result<verify::Report, StoreError> {
        verify::stock(&self.client().await?).await
    }
}

/// Where and how to connect: the parsed URL with the TLS mode of
/// `postgres.sslmode`, and the connector that does the TLS handshakes.
fn target(settings: &PostgresSettings) -> Result<(tokio_postgres::Config, MakeRustls), StoreError> {
    target_of(settings.url.expose(), settings.sslmode, settings.ca_file())
}

fn target_of(
    url: &str,
    mode: PgSslMode,
    ca_file: Option<&std::path::Path>,
) -> Result<(tokio_postgres::Config, MakeRustls), StoreError> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(StoreError::Url)?;
    let tls = sslmode::secure(&mut pg, mode, ca_file).map_err(StoreError::Tls)?;
    Ok((pg, tls))
}

/// A pool of `size` connections; a caller waits at most `wait` for one.
fn pool_from_config(
    pg_config: tokio_postgres::Config,
    tls: MakeRustls,
    size: usize,
    wait: Duration,
) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        pg_config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

/// A pool of `settings.pool_size` plain connections to the database the
/// settings name, with their TLS: for tools and tests that run their own
/// statements beside a service (the service's own pools are [`Store`]'s).
pub fn pool(settings: &PostgresSettings) -> Result<Pool, StoreError> {
    let (pg, tls) = target(settings)?;
    pool_from_config(pg, tls, settings.pool_size, Duration::from_secs(10))
}

/// Connects to the `postgres` maintenance database of the server `target`
/// names; returns the client, its connection task and the database name in
/// `target`.
async fn maintenance(
    (target, tls): (tokio_postgres::Config, MakeRustls),
) -> Result<Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>, String)>, StoreError> {
    let Some(name) = target.get_dbname().map(str::to_owned) else {
        return Ok(None);
    };
    let mut maintenance = target.clone();
    maintenance.dbname("postgres");
    let (client, connection) = maintenance.connect(tls).await.at(Step::Connect)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "maintenance connection ended with an error");
        }
    });
    Ok(Some((client, driver, name)))
}

/// A server reached without TLS (`postgres.sslmode = disable`), for the
/// functions that take a bare URL.
fn plain(url: &str) -> Result<(tokio_postgres::Config, MakeRustls), StoreError> {
    target_of(url, PgSslMode::Disable, None)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops the database named in `url` if it exists (load tests start clean),
/// connecting without TLS.
pub async fn drop_database(url: &str) -> Result<(), StoreError> {
    let Some((client, driver, name)) = maintenance(plain(url)?).await? else {
        return Ok(());
    };
    client
        .batch_execute(&DROP_DATABASE.replace("{database}", &quote(&name)))
        .await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Creates the database named in `url` when it does not exist yet, connecting to
/// the `postgres` maintenance database of the same server without TLS.
pub async fn ensure_database(url: &str) -> Result<(), StoreError> {
    create_if_missing(plain(url)?).await
}

/// Creates the database of `settings.url` when it does not exist yet,
/// connecting to the `postgres` maintenance database of the same server over
/// the TLS of `settings` (as the pools do).
pub async fn ensure_database_with(settings: &PostgresSettings) -> Result<(), StoreError> {
    create_if_missing(target(settings)?).await
}

async fn create_if_missing(target: (tokio_postgres::Config, MakeRustls)) -> Result<(), StoreError> {
    let Some((client, driver, name)) = maintenance(target).await? else {
        return Ok(());
    };
    let exists = client.query_opt(DATABASE_EXISTS, &[&name]).await?.is_some();
    if !exists {
        match client
            .batch_execute(&CREATE_DATABASE.replace("{database}", &quote(&name)))
            .await
        {
            Ok(()) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}
