//! Test harness: spawn the real application on its own database, topic and
//! port; build and produce events; wait for the consumer to catch up.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use deadpool_postgres::Pool;
use rskafka::{
    chrono::Utc,
    client::{
        Client, ClientBuilder,
        partition::{Compression, UnknownTopicHandling},
    },
    record::Record,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warehouse_monitor::{config::Settings, consumer::status::Partitions, startup::Application};

/// Settings of the local stack with a fresh database and topic.
pub fn test_settings(partitions: i32) -> Settings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut settings = Settings::load(&dir, None).expect("config/default.toml loads");
    let id = Uuid::new_v4().simple().to_string();
    settings.kafka.topic = format!("wm-test-{id}");
    settings.kafka.partitions = partitions;
    settings.kafka.fetch_max_wait_ms = 100;
    settings.batch.wait_ms = 50;
    // A killed instance's partitions are free again after a second.
    settings.consumer.lease_ttl_ms = 1000;
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:5432/wm_test_{id}");
    settings.postgres.pool_size = 4;
    settings.http.addr = "127.0.0.1:0".parse().unwrap();
    settings
}

/// A running application and what a test needs to drive it.
pub struct TestApp {
    pub settings: Settings,
    pub addr: SocketAddr,
    pub pool: Pool,
    pub metrics: Arc<warehouse_monitor::metrics::Metrics>,
    pub statuses: Partitions,
    pub producer: Producer,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn(partitions: i32) -> Self {
        Self::spawn_with(test_settings(partitions)).await
    }

    pub async fn spawn_with(settings: Settings) -> Self {
        warehouse_monitor::telemetry::init(settings.log.format);
        let app = Application::build(settings.clone())
            .await
            .expect("application builds");
        let addr = app.local_addr();
        let pool = app.pool();
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
    pub async fn stop(self) {
        let url = self.settings.postgres.url.clone();
        self.stop_keeping_data().await;
        warehouse_monitor::store::drop_database(&url)
            .await
            .expect("test database dropped");
    }

    /// Stops the application gracefully and waits for it; the database stays
    /// (another instance of the test still uses it).
    pub async fn stop_keeping_data(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("application task");
        }
        self.pool.close();
    }

    /// Produces `values` to `partition`.
    pub async fn produce(&self, partition: i32, values: Vec<Vec<u8>>) {
        self.producer.produce(partition, values).await;
    }

    /// Waits until every produced record is committed.
    pub async fn wait_consumed(&self) {
        wait_consumed(&self.pool, &self.settings.kafka.topic, &self.producer).await;
    }

    /// Waits until every produced record's batch has had its cache keys invalidated.
    pub async fn wait_invalidated(&self) {
        let target = self.producer.produced();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let done = target.iter().all(|(p, end)| {
                self.statuses
                    .get(*p)
                    .and_then(|s| s.invalidated())
                    .is_some_and(|i| i >= *end)
            });
            if done {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "invalidation never reached {target:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET `path`; returns the status and the body parsed as JSON.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, body)
    }

    pub async fn stock(&self, warehouse: Uuid, product: Uuid) -> Option<i64> {
        stock(&self.pool, warehouse, product).await
    }

    pub async fn rejected(&self) -> Vec<(i32, i64, String, String)> {
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
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    pub async fn count(&self, table: &str) -> i64 {
        let client = self.pool.get().await.unwrap();
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

pub async fn stock(pool: &Pool, warehouse: Uuid, product: Uuid) -> Option<i64> {
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
pub async fn wait_consumed(pool: &Pool, topic: &str, producer: &Producer) {
    wait_committed(pool, topic, &producer.produced()).await;
}

/// Waits until the stored offset of each partition reaches `target` (90 s at most).
pub async fn wait_committed(pool: &Pool, topic: &str, target: &HashMap<i32, i64>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let committed = committed_offsets(pool, topic).await;
        if target
            .iter()
            .all(|(p, end)| committed.get(p).copied().unwrap_or(0) >= *end)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer did not catch up: target {target:?}, committed {committed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn committed_offsets(pool: &Pool, topic: &str) -> HashMap<i32, i64> {
    let client = pool.get().await.unwrap();
    client
        .query(
            "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1",
            &[&topic],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Produces to the test's topic and remembers how far each partition goes.
pub struct Producer {
    client: Client,
    topic: String,
    produced: Mutex<HashMap<i32, i64>>,
}

impl Producer {
    pub async fn connect(settings: &Settings) -> Self {
        let client = ClientBuilder::new(settings.kafka.brokers.clone())
            .build()
            .await
            .expect("broker reachable");
        Self {
            client,
            topic: settings.kafka.topic.clone(),
            produced: Mutex::new(HashMap::new()),
        }
    }

    pub async fn produce(&self, partition: i32, values: Vec<Vec<u8>>) {
        self.produce_with(partition, values, Compression::NoCompression)
            .await;
    }

    /// Produces `values` in record batches of 500, compressed with `compression`.
    pub async fn produce_with(
        &self,
        partition: i32,
        values: Vec<Vec<u8>>,
        compression: Compression,
    ) {
        let pc = self
            .client
            .partition_client(self.topic.clone(), partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        for chunk in values.chunks(500) {
            let records = chunk
                .iter()
                .map(|v| Record {
                    key: None,
                    value: Some(v.clone()),
                    headers: Default::default(),
                    timestamp: Utc::now(),
                })
                .collect();
            let offsets = pc.produce(records, compression).await.expect("produce");
            let end = offsets.last().copied().unwrap_or(-1) + 1;
            let mut produced = self.produced.lock().unwrap();
            let entry = produced.entry(partition).or_insert(0);
            *entry = (*entry).max(end);
        }
    }

    /// Next offset after the last produced record, per partition.
    pub fn produced(&self) -> HashMap<i32, i64> {
        self.produced.lock().unwrap().clone()
    }

    pub fn total(&self) -> i64 {
        self.produced().values().sum()
    }
}

/// Builds event JSON the way a warehouse would send it.
#[derive(Debug, Clone)]
pub struct Ev {
    pub movement_id: Uuid,
    pub warehouse_id: Uuid,
    pub code: String,
    pub product_id: Uuid,
    pub quantity: i64,
    pub event: &'static str,
    pub timestamp: String,
}

impl Ev {
    pub fn departure(movement: Uuid, warehouse: Uuid, product: Uuid, quantity: i64) -> Self {
        Self {
            movement_id: movement,
            warehouse_id: warehouse,
            code: "WH-3322".into(),
            product_id: product,
            quantity,
            event: "departure",
            timestamp: "2025-02-18T12:12:56Z".into(),
        }
    }

    pub fn arrival(movement: Uuid, warehouse: Uuid, product: Uuid, quantity: i64) -> Self {
        Self {
            code: "WH-3423".into(),
            event: "arrival",
            timestamp: "2025-02-18T14:34:56Z".into(),
            ..Self::departure(movement, warehouse, product, quantity)
        }
    }

    pub fn at(mut self, timestamp: &str) -> Self {
        self.timestamp = timestamp.into();
        self
    }

    pub fn code(mut self, code: &str) -> Self {
        self.code = code.into();
        self
    }

    pub fn json(&self) -> Value {
        json!({
            "id": Uuid::new_v4().to_string(),
            "source": self.code,
            "specversion": "1.0",
            "type": "ru.retail.warehouses.movement",
            "datacontenttype": "application/json",
            "dataschema": "ru.retail.warehouses.movement.v1.0",
            "time": 1_737_439_421_623_i64,
            "subject": format!("{}:{}", self.code, self.event.to_uppercase()),
            "destination": "ru.retail.warehouses",
            "data": {
                "movement_id": self.movement_id.to_string(),
                "warehouse_id": self.warehouse_id.to_string(),
                "timestamp": self.timestamp,
                "event": self.event,
                "product_id": self.product_id.to_string(),
                "quantity": self.quantity,
            }
        })
    }

    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.json()).unwrap()
    }
}

/// Starts the real binary (`serve`) as a separate process on `settings`'
/// database and topic, so that a test can SIGKILL it.
pub fn start_service(settings: &Settings) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_warehouse-monitor"))
        .args([
            "--config-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
            "serve",
        ])
        .env("WM_POSTGRES__URL", &settings.postgres.url)
        .env("WM_KAFKA__TOPIC", &settings.kafka.topic)
        .env("WM_BATCH__SIZE", settings.batch.size.to_string())
        .env("WM_BATCH__WAIT_MS", settings.batch.wait_ms.to_string())
        .env(
            "WM_CONSUMER__LEASE_TTL_MS",
            settings.consumer.lease_ttl_ms.to_string(),
        )
        .env("WM_HTTP__ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("service starts")
}

/// Deterministic content of every table (wall-clock columns and cache
/// versions left out: they depend on when and in which batches rows changed).
pub async fn dump(pool: &Pool) -> Vec<String> {
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

/// Polls `check` every 50 ms until it returns `Some`, for `secs` seconds at
/// most; returns what it returned, or fails the test.
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
