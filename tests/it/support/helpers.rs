//! Test harness: spawn the real application on its own database, topic and
//! port; build and produce events; wait for the consumer to catch up.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

pub(crate) use super::eventually::{Patience, eventually};
use deadpool_postgres::Pool;
use rdkafka::producer::FutureProducer;
use serde_json::Value;
use time::macros::datetime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use warehouse_monitor::{
    app::startup::Application,
    config::{KafkaSettings, Settings},
    domain::event::{EventKind, MovementEvent, WarehouseCode, encode},
    ingest::status::Partitions,
    kafka::{self, Codec, Outgoing, Reporter},
};

/// Settings of the local stack with a fresh database and topic.
pub(crate) fn test_settings(partitions: i32) -> Settings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut settings = Settings::load(&dir, None).expect("config/default.toml loads");
    let id = Uuid::new_v4().simple().to_string();
    settings.kafka.topic = format!("wm-test-{id}");
    settings.kafka.partitions = partitions;
    settings.kafka.fetch_max_wait_ms = 100;
    settings.batch.wait_ms = 50;
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:5432/wm_test_{id}").into();
    settings.postgres.pool_size = 4;
    settings.http.addr = "127.0.0.1:0".parse().unwrap();
    settings
}

/// A row of `rejected_events` (its raw bytes left out).
#[derive(Debug, PartialEq)]
pub(crate) struct Rejected {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) reason: String,
    pub(crate) detail: String,
}

/// A running application and what a test needs to drive it.
pub(crate) struct TestApp {
    pub(crate) settings: Settings,
    pub(crate) addr: SocketAddr,
    pub(crate) pool: Pool,
    pub(crate) metrics: Arc<warehouse_monitor::metrics::Metrics>,
    pub(crate) statuses: Partitions,
    pub(crate) producer: Producer,
    pub(crate) http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestApp {
    pub(crate) async fn spawn(partitions: i32) -> Self {
        Self::spawn_with(test_settings(partitions)).await
    }

    pub(crate) async fn spawn_with(settings: Settings) -> Self {
        init_captured_logs();
        let app = Application::build(settings.clone())
            .await
            .expect("application builds");
        let addr = app.local_addr();
        let pool = warehouse_monitor::store::pool(&settings.postgres).expect("a pool");
        let metrics = app.metrics();
        let statuses = app.partitions();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            app.run(stop).await.expect("application runs");
        });
        let producer = Producer::connect(&settings).await;
        Self {
            settings,
            addr,
            pool,
            metrics,
            statuses,
            producer,
            http: reqwest::Client::new(),
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the application gracefully, waits for it, and drops its database.
    pub(crate) async fn stop(self) {
        let url = self.settings.postgres.url.expose().to_owned();
        self.stop_keeping_data().await;
        warehouse_monitor::store::drop_database(&url)
            .await
            .expect("test database dropped");
    }

    /// Stops the application gracefully and waits for it; the database stays
    /// (another instance of the test still uses it).
    pub(crate) async fn stop_keeping_data(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("application task");
        }
        self.pool.close();
    }

    /// Produces `values` to `partition`.
    pub(crate) async fn produce(&self, partition: i32, values: Vec<Vec<u8>>) {
        self.producer.produce(partition, values).await;
    }

    /// Waits until every produced record is committed.
    /// The partitions this instance holds, by its statuses, in order.
    pub(crate) fn owned(&self) -> Vec<i32> {
        let mut owned: Vec<i32> = self
            .statuses
            .snapshot()
            .iter()
            .filter(|s| s.is_owned())
            .map(|s| s.partition)
            .collect();
        owned.sort_unstable();
        owned
    }

    pub(crate) async fn wait_consumed(&self) {
        wait_consumed(&self.pool, &self.settings.kafka.topic, &self.producer).await;
    }

    /// The cache epoch the instances of this database use now.
    pub(crate) async fn cache_epoch(&self) -> warehouse_monitor::cache::Epoch {
        cache_epoch(&self.pool).await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET `path`; returns the status and the body parsed as JSON.
    pub(crate) async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, body)
    }

    pub(crate) async fn stock(&self, warehouse: Uuid, product: Uuid) -> Option<i64> {
        stock(&self.pool, warehouse, product).await
    }

    /// Every row of `rejected_events`, in partition and offset order.
    pub(crate) async fn rejected(&self) -> Vec<Rejected> {
        let client = self.pool.get().await.unwrap();
        client
            .query(
                "SELECT kafka_partition, kafka_offset, reason, detail FROM rejected_events
                 ORDER BY kafka_partition, kafka_offset",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| Rejected {
                partition: r.get("kafka_partition"),
                offset: r.get("kafka_offset"),
                reason: r.get("reason"),
                detail: r.get("detail"),
            })
            .collect()
    }

    /// The one rejected record (fails the test if there are none or several).
    pub(crate) async fn only_rejected(&self) -> Rejected {
        let mut rejected = self.rejected().await;
        assert_eq!(rejected.len(), 1, "one rejected record: {rejected:?}");
        rejected.remove(0)
    }

    /// The raw bytes kept with the rejected record at `offset` (partition 0).
    pub(crate) async fn rejected_raw(&self, offset: i64) -> Vec<u8> {
        let client = self.pool.get().await.unwrap();
        client
            .query_one(
                "SELECT raw FROM rejected_events WHERE kafka_partition = 0 AND kafka_offset = $1",
                &[&offset],
            )
            .await
            .unwrap()
            .get("raw")
    }

    pub(crate) async fn count(&self, table: &str) -> i64 {
        let client = self.pool.get().await.unwrap();
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// The cache epoch stored in `pool`'s database.
pub(crate) async fn cache_epoch(pool: &Pool) -> warehouse_monitor::cache::Epoch {
    let client = pool.get().await.unwrap();
    let row = client
        .query_one("SELECT epoch FROM cache_epoch", &[])
        .await
        .unwrap();
    warehouse_monitor::cache::Epoch(row.get(0))
}

pub(crate) async fn stock(pool: &Pool, warehouse: Uuid, product: Uuid) -> Option<i64> {
    let client = pool.get().await.unwrap();
    client
        .query_opt(
            "SELECT quantity FROM stock WHERE warehouse_id = $1 AND product_id = $2",
            &[&warehouse, &product],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Waits until the stored offsets reach what `producer` produced (90 s at most).
pub(crate) async fn wait_consumed(pool: &Pool, topic: &str, producer: &Producer) {
    wait_committed(pool, topic, &producer.produced()).await;
}

/// Waits until the stored offset of each partition reaches `target` (90 s at most).
pub(crate) async fn wait_committed(pool: &Pool, topic: &str, target: &HashMap<i32, i64>) {
    eventually(90, || async {
        // A read that fails (e.g. 53200 while a batch fills a small lock
        // table, tests/it/outage.rs) is only tried again.
        let committed = read_committed_offsets(pool, topic).await?;
        let caught_up = target
            .iter()
            .all(|(p, end)| committed.get(p).copied().unwrap_or(0) >= *end);
        caught_up.then_some(()).ok_or_else(|| {
            format!("consumer catches up: target {target:?}, committed {committed:?}")
        })
    })
    .await;
}

pub(crate) async fn committed_offsets(pool: &Pool, topic: &str) -> HashMap<i32, i64> {
    read_committed_offsets(pool, topic).await.unwrap()
}

/// The stored offsets, or why they could not be read.
async fn read_committed_offsets(pool: &Pool, topic: &str) -> Result<HashMap<i32, i64>, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1",
            &[&topic],
        )
        .await
        .map_err(|e| format!("reading the stored offsets: {e}"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Produces to the test's topic and remembers how far each partition goes.
pub(crate) struct Producer {
    settings: KafkaSettings,
    producer: FutureProducer<Reporter>,
    topic: String,
    produced: Mutex<HashMap<i32, i64>>,
}

impl Producer {
    pub(crate) async fn connect(settings: &Settings) -> Self {
        let kafka = kafka::connect(&settings.kafka)
            .await
            .expect("broker reachable");
        let producer = kafka.producer(Codec::None).expect("producer");
        Self {
            settings: settings.kafka.clone(),
            producer,
            topic: settings.kafka.topic.clone(),
            produced: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn produce(&self, partition: i32, values: Vec<Vec<u8>>) {
        self.send(&self.producer, partition, values).await;
    }

    /// Produces `values` with a producer that compresses its record batches
    /// with `codec`.
    pub(crate) async fn produce_with(&self, partition: i32, values: Vec<Vec<u8>>, codec: Codec) {
        let producer = kafka::producer(&self.settings, codec).expect("producer");
        self.send(&producer, partition, values).await;
    }

    /// Sends `values` 500 at a time, each stamped with the time of sending,
    /// and moves the partition's end past each 500 once they are written.
    async fn send(
        &self,
        producer: &FutureProducer<Reporter>,
        partition: i32,
        values: Vec<Vec<u8>>,
    ) {
        for chunk in values.chunks(500) {
            let records: Vec<Outgoing> = chunk
                .iter()
                .map(|v| Outgoing {
                    partition,
                    value: Some(v.clone()),
                    ..Outgoing::default()
                })
                .collect();
            let offsets = kafka::send_all(producer, &self.topic, &records)
                .await
                .expect("produce");
            let end = offsets.iter().copied().max().unwrap_or(-1) + 1;
            let mut produced = self.produced.lock().unwrap();
            let entry = produced.entry(partition).or_insert(0);
            *entry = (*entry).max(end);
        }
    }

    /// Next offset after the last produced record, per partition.
    pub(crate) fn produced(&self) -> HashMap<i32, i64> {
        self.produced.lock().unwrap().clone()
    }

    pub(crate) fn total(&self) -> i64 {
        self.produced().values().sum()
    }
}

/// An event as a warehouse sends it, built by the domain's encoder with a new
/// envelope id each time it is written. A test that needs a broken record
/// edits [`Ev::json`].
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    event: MovementEvent,
    /// `data.timestamp` exactly as a test wrote it (an offset, none, an edge
    /// year), in place of the event's time in UTC.
    timestamp: Option<String>,
}

impl Ev {
    /// A departure from `WH-3322` at 2025-02-18T12:12:56Z.
    pub(crate) fn departure(movement: Uuid, warehouse: Uuid, product: Uuid, quantity: i64) -> Self {
        Self {
            event: MovementEvent {
                message_id: Uuid::nil(),
                source: WarehouseCode::parse("WH-3322").unwrap(),
                emitted_at: Some(datetime!(2025-01-21 06:03:41.623 UTC)),
                movement_id: movement,
                warehouse_id: warehouse,
                happened_at: datetime!(2025-02-18 12:12:56 UTC),
                kind: EventKind::Departure,
                product_id: product,
                quantity,
            },
            timestamp: None,
        }
    }

    /// An arrival at `WH-3423` at 2025-02-18T14:34:56Z.
    pub(crate) fn arrival(movement: Uuid, warehouse: Uuid, product: Uuid, quantity: i64) -> Self {
        let mut ev = Self::departure(movement, warehouse, product, quantity);
        ev.event.source = WarehouseCode::parse("WH-3423").unwrap();
        ev.event.kind = EventKind::Arrival;
        ev.event.happened_at = datetime!(2025-02-18 14:34:56 UTC);
        ev
    }

    /// The same event with `data.timestamp` written as `timestamp`.
    pub(crate) fn at(mut self, timestamp: &str) -> Self {
        self.timestamp = Some(timestamp.into());
        self
    }

    /// The same event with another quantity.
    pub(crate) fn quantity(mut self, quantity: i64) -> Self {
        self.event.quantity = quantity;
        self
    }

    pub(crate) fn json(&self) -> Value {
        let event = MovementEvent {
            message_id: Uuid::new_v4(),
            ..self.event.clone()
        };
        let mut json = encode::to_json(&event);
        if let Some(timestamp) = &self.timestamp {
            json["data"]["timestamp"] = timestamp.as_str().into();
        }
        json
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.json()).unwrap()
    }
}

/// A test reads the ids of what it sent (`ev.warehouse_id`) off the event itself.
impl std::ops::Deref for Ev {
    type Target = MovementEvent;

    fn deref(&self) -> &MovementEvent {
        &self.event
    }
}

/// The real binary (`serve`) as a process of its own, so that a test can
/// SIGKILL it, on an HTTP port known here. It gets the test's settings
/// whole: every one of them in a configuration file it reads (`--config`),
/// the secrets, which that file masks, as variables. What it logs goes to a
/// file, printed when the test fails; it is killed when dropped, so a failed
/// test leaves no consumer behind.
pub(crate) struct ServiceProcess {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    /// The settings file it was started with, removed with the process.
    settings: Option<std::path::PathBuf>,
}

impl ServiceProcess {
    pub(crate) fn start(settings: &Settings) -> Self {
        Self::start_with(settings, &[])
    }

    /// [`Self::start`] with more variables (`WM_...`), which override the settings.
    pub(crate) fn start_with(settings: &Settings, env: &[(&str, String)]) -> Self {
        let id = Uuid::new_v4();
        let file = std::env::temp_dir().join(format!("wm-settings-{id}.toml"));
        std::fs::write(&file, settings.to_toml().expect("settings print")).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_warehouse-monitor"));
        command
            .arg("--config-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config"))
            .arg("--config")
            .arg(&file)
            .arg("serve")
            .env("WM_POSTGRES__URL", settings.postgres.url.expose())
            .env("WM_REDIS__URL", settings.redis.url.expose())
            .env(
                "WM_KAFKA__SASL_PASSWORD",
                settings.kafka.sasl_password.expose(),
            )
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let mut process = Self::spawn(
            command,
            std::env::temp_dir().join(format!("wm-service-{id}.log")),
        );
        process.settings = Some(file);
        process
    }

    /// `serve` as an operator runs it: in `dir`, configured only by `vars`
    /// (an empty environment otherwise), its log in `dir`; returns once it
    /// answers `/health/live`.
    pub(crate) async fn start_bare(dir: &Path, vars: &[(&str, String)]) -> Self {
        let mut command = super::process::command(dir, vars);
        command.arg("serve");
        let log = dir.join(format!("service-{}.log", Uuid::new_v4()));
        let mut service = Self::spawn(command, log);
        let http = reqwest::Client::new();
        let url = format!("{}/health/live", service.base());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = service.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&service.log).unwrap_or_default();
                panic!("the service exited with {status} before it answered:\n{log}");
            }
            if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return service;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the service does not answer /health/live"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `command` on a port of its own, its output going to `log`.
    fn spawn(mut command: std::process::Command, log: std::path::PathBuf) -> Self {
        let port = free_port();
        let output = std::fs::File::create(&log).unwrap();
        let errors = output.try_clone().unwrap();
        let child = command
            .env("WM_HTTP__ADDR", format!("127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .expect("service starts");
        Self {
            child,
            port,
            log,
            settings: None,
        }
    }

    /// `base` followed by `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Stops it as an orchestrator would (SIGTERM) and waits for it, which
    /// must end well; returns everything it printed.
    pub(crate) async fn stop(mut self) -> String {
        let term = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success(), "SIGTERM sent");
        let status = self.ended().await;
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "stopped with {status}:\n{output}");
        output
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its output goes to, to read while it runs.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// `http://127.0.0.1:<its port>`.
    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until it answers `/health/live` (30 s at most).
    pub(crate) async fn live(&self, http: &reqwest::Client) {
        let url = format!("{}/health/live", self.base());
        eventually(30, || async {
            let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
            (response.status() == 200)
                .then_some(())
                .ok_or_else(|| "the service answers /health/live".to_owned())
        })
        .await;
    }

    /// SIGKILL, and wait until the process is gone.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed process is reaped");
    }

    /// Waits for the process to end by itself (60 s at most).
    pub(crate) async fn ended(&mut self) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the service is still running"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            println!(
                "--- the log of service process {} ---\n{log}",
                self.child.id()
            );
        }
        let _ = std::fs::remove_file(&self.log);
        if let Some(settings) = &self.settings {
            let _ = std::fs::remove_file(settings);
        }
    }
}

/// Deterministic content of every table (wall-clock columns and row
/// versions left out: they depend on when and in which batches rows changed).
pub(crate) async fn dump(pool: &Pool) -> Vec<String> {
    let client = pool.get().await.unwrap();
    let queries = [
        "SELECT movement_id, product_id, event, warehouse_id, warehouse_code, quantity, happened_at,
                message_id, emitted_at, kafka_topic, kafka_partition, kafka_offset FROM movement_events",
        "SELECT movement_id, sender_id, sender_code, departed_at, receiver_id, receiver_code, arrived_at FROM movements",
        "SELECT warehouse_id, product_id, quantity FROM stock",
        "SELECT topic, partition, next_offset FROM consumer_offsets",
        "SELECT kafka_topic, kafka_partition, kafka_offset, raw, reason, detail, record_time FROM rejected_events",
    ];
    let mut tables = Vec::new();
    for q in queries {
        let sql = format!(
            "SELECT count(*), coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM ({q}) t"
        );
        let row = client.query_one(&sql, &[]).await.unwrap();
        let count: i64 = row.get(0);
        let text: String = row.get(1);
        tables.push(format!("{count} rows\n{text}"));
    }
    tables
}

/// The API path of the stock of `product` in `warehouse`.
pub(crate) fn stock_path(warehouse: Uuid, product: Uuid) -> String {
    format!("/api/warehouses/{warehouse}/products/{product}")
}

/// A TCP port free on 127.0.0.1 at the time of the call.
pub(crate) fn free_port() -> u16 {
    wm_devtools::free_port().expect("a free port on 127.0.0.1")
}

/// The service's log lines, when it runs in the test's own process, go
/// through the test harness's capture: each test shows the logs of the
/// services it started only when it fails (librdkafka's own threads are not
/// captured). A second call is a no-op.
fn init_captured_logs() {
    use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _already_installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_target(false).with_test_writer())
        .try_init();
}
