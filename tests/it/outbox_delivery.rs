//! Cache invalidation that survives crashes (the cache outbox). A consumer
//! process aborts right after the COMMIT of a batch that changed cached
//! answers (the test-only `fault.abort_after_commit_at_batch`). Whether Redis
//! took the batch's deletes before the COMMIT, was down at the time, or was
//! out of the consumer's reach only, no instance answers with an older value
//! afterwards, and the outbox drains to 0 rows.

use std::{
    os::unix::process::ExitStatusExt,
    process::ExitStatus,
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warehouse_monitor::{
    app::startup,
    cache::{Epoch, Key},
    config::{Role, Settings},
    kafka,
};

use crate::support::{
    helpers::{
        Ev, Producer, ServiceProcess, TestApp, cache_epoch, committed_offsets, eventually,
        free_port, stock_path, test_settings, wait_consumed,
    },
    metrics::{parse_exposition, scrape},
    redis::RawRedis,
    redis::{OwnRedis, hits_in},
};

const SIGABRT: i32 = 6;
const ABORT_AT_SECOND_BATCH: (&str, &str) = ("WM_FAULT__ABORT_AFTER_COMMIT_AT_BATCH", "2");

/// Stock pairs and movements whose answers the second batch changes.
struct Keys {
    pairs: Vec<(Uuid, Uuid)>,
    /// Movement, sender, receiver, product.
    movements: Vec<(Uuid, Uuid, Uuid, Uuid)>,
}

impl Keys {
    fn new(n: usize) -> Self {
        let id = Uuid::new_v4;
        Self {
            pairs: (0..n).map(|_| (id(), id())).collect(),
            movements: (0..n).map(|_| (id(), id(), id(), id())).collect(),
        }
    }

    /// Arrivals of 10 on every pair; every movement departs.
    fn old_events(&self) -> Vec<Vec<u8>> {
        let stock = self
            .pairs
            .iter()
            .map(|(w, p)| Ev::arrival(Uuid::new_v4(), *w, *p, 10).bytes());
        let departures = self
            .movements
            .iter()
            .map(|(m, sender, _, p)| Ev::departure(*m, *sender, *p, 4).bytes());
        stock.chain(departures).collect()
    }

    /// Departures of 3 from every pair; every movement arrives.
    fn new_events(&self) -> Vec<Vec<u8>> {
        let stock = self
            .pairs
            .iter()
            .map(|(w, p)| Ev::departure(Uuid::new_v4(), *w, *p, 3).bytes());
        let arrivals = self
            .movements
            .iter()
            .map(|(m, _, receiver, p)| Ev::arrival(*m, *receiver, *p, 4).bytes());
        stock.chain(arrivals).collect()
    }

    fn paths(&self) -> Vec<String> {
        let stock = self.pairs.iter().map(|(w, p)| stock_path(*w, *p));
        let movements = self
            .movements
            .iter()
            .map(|(m, ..)| format!("/api/movements/{m}"));
        stock.chain(movements).collect()
    }

    fn cache_keys(&self) -> Vec<Key> {
        let stock = self.pairs.iter().map(|(w, p)| Key::Stock {
            warehouse_id: *w,
            product_id: *p,
        });
        let movements = self.movements.iter().map(|(m, ..)| Key::Movement(*m));
        stock.chain(movements).collect()
    }

    fn answers(&self, stock: &str, movement: &str) -> Vec<String> {
        let stock = self.pairs.iter().map(|_| stock.to_owned());
        let movements = self.movements.iter().map(|_| movement.to_owned());
        stock.chain(movements).collect()
    }

    fn old_answers(&self) -> Vec<String> {
        self.answers("10", "in_transit")
    }

    fn new_answers(&self) -> Vec<String> {
        self.answers("7", "delivered")
    }
}

/// What the batches change in an answer: a stock's quantity, a movement's status.
fn answer(body: &Value) -> String {
    match body.get("quantity") {
        Some(quantity) => quantity.to_string(),
        None => body["status"].as_str().unwrap_or("no status").to_owned(),
    }
}

/// Reads every path of `keys` from the service at `base`.
async fn read_all(http: &reqwest::Client, base: &str, keys: &Keys) -> Vec<String> {
    let mut answers = Vec::new();
    for path in keys.paths() {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        answers.push(answer(&body));
    }
    answers
}

/// The answers the entries of `epoch` in Redis hold (`None`: no entry, or a
/// lease), read without a permit.
async fn cached(cache: &RawRedis, keys: &Keys, epoch: Epoch) -> Vec<Option<String>> {
    let mut answers = Vec::new();
    for key in keys.cache_keys() {
        let raw = cache.entry(key, epoch).await;
        let payload = raw.as_deref().and_then(|raw| raw.split_once(':'));
        let payload = payload.filter(|(version, _)| version.parse::<i64>().is_ok());
        answers.push(payload.map(|(_, p)| answer(&serde_json::from_str(p).unwrap())));
    }
    answers
}

/// Outbox rows: every one, or only the invalidations (keys and the mark,
/// not announcements).
async fn outbox_rows(pool: &Pool, invalidations: bool) -> i64 {
    let client = pool.get().await.unwrap();
    let sql = "SELECT (SELECT count(*) FROM cache_outbox WHERE mark OR NOT $1)
                    + (SELECT count(*) FROM cache_outbox_keys)";
    client
        .query_one(sql, &[&invalidations])
        .await
        .unwrap()
        .get(0)
}

/// Cache hits counted on a service's /metrics.
async fn hits(http: &reqwest::Client, base: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    hits_in(&parse_exposition(&text))
}

/// Reads through `base` twice and checks that the entries in Redis now hold
/// the old answers.
async fn warm(http: &reqwest::Client, base: &str, keys: &Keys, redis: &RawRedis, epoch: Epoch) {
    for _ in 0..2 {
        assert_eq!(read_all(http, base, keys).await, keys.old_answers());
    }
    let old: Vec<Option<String>> = keys.old_answers().into_iter().map(Some).collect();
    assert_eq!(
        cached(redis, keys, epoch).await,
        old,
        "the old answers are cached"
    );
}

/// The service binary as a process of its own, with `env` over the settings.
fn start(settings: &Settings, env: &[(&str, &str)]) -> ServiceProcess {
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    ServiceProcess::start_with(settings, &env)
}

fn assert_aborted(status: ExitStatus) {
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the consumer aborted after its COMMIT: {status:?}"
    );
}

/// Every read during `for_how_long` answers `expected`.
async fn always(http: &reqwest::Client, base: &str, keys: &Keys, for_how_long: Duration) {
    let until = Instant::now() + for_how_long;
    while Instant::now() < until {
        assert_eq!(read_all(http, base, keys).await, keys.new_answers());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis up: the deletes were acknowledged before the COMMIT, so neither
/// an API instance that stayed up nor a new instance answers from the stale
/// entries, and the outbox never holds a row.
#[tokio::test]
async fn an_abort_right_after_commit_leaves_no_stale_answer_on_any_instance() {
    let settings = test_settings(1);
    let mut api = settings.clone();
    api.role = Role::Api;
    let api = TestApp::spawn_with(api).await;
    let http = reqwest::Client::new();
    let keys = Keys::new(3);
    let redis = RawRedis::connect(settings.redis.url.expose()).await;

    api.produce(0, keys.old_events()).await;
    let mut consumer = start(&settings, &[("WM_ROLE", "consumer"), ABORT_AT_SECOND_BATCH]);
    api.wait_consumed().await;
    warm(&http, &api.url(""), &keys, &redis, api.cache_epoch().await).await;

    api.produce(0, keys.new_events()).await;
    assert_aborted(consumer.ended().await);
    api.wait_consumed().await; // committed before the abort
    always(&http, &api.url(""), &keys, Duration::from_secs(1)).await;
    assert_eq!(outbox_rows(&api.pool, false).await, 0);
    let (_, ready) = api.get_json("/health/ready").await;
    assert_eq!(ready["cache_outbox"], 0, "{ready}");

    let fresh = start(&settings, &[]);
    fresh.live(&http).await;
    always(&http, &fresh.base(), &keys, Duration::from_millis(500)).await;
    drop(fresh);
    api.stop().await;
}

/// Redis down at the COMMIT and restarted from its append-only file, with
/// the old answers: the invalidations waited in the outbox, and the instance
/// started after the crash delivers them before it serves. Every answer it
/// gives is new, and the outbox drains.
#[tokio::test]
async fn invalidations_that_redis_missed_are_delivered_after_a_crash() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("wm-redis-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.display().to_string();
    let persistent = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir_arg.as_str(),
    ];
    let mut own = OwnRedis::start_with(port, &persistent).await;
    let mut settings = test_settings(1);
    settings.redis.url = own.url().into();
    let redis_url = ("WM_REDIS__URL", settings.redis.url.expose());
    let http = reqwest::Client::new();
    let keys = Keys::new(3);
    let redis = RawRedis::connect(settings.redis.url.expose()).await;
    let _migrated = startup::migrate(&settings).await.unwrap();
    let pool = warehouse_monitor::store::pool(&settings.postgres).unwrap();
    let client = kafka::connect(&settings.kafka).await.unwrap();
    kafka::ensure_topic(&client, &settings.kafka).await.unwrap();
    let producer = Producer::connect(&settings).await;

    producer.produce(0, keys.old_events()).await;
    let mut first = start(&settings, &[redis_url, ABORT_AT_SECOND_BATCH]);
    first.live(&http).await;
    wait_consumed(&pool, &settings.kafka.topic, &producer).await;
    let epoch = cache_epoch(&pool).await;
    warm(&http, &first.base(), &keys, &redis, epoch).await;

    own.kill();
    producer.produce(0, keys.new_events()).await;
    assert_aborted(first.ended().await);
    wait_consumed(&pool, &settings.kafka.topic, &producer).await;
    let client = pool.get().await.unwrap();
    let rows = client
        .query("SELECT key FROM cache_outbox_keys", &[])
        .await
        .unwrap();
    let waiting: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    drop(client);
    for key in keys.cache_keys() {
        assert!(
            waiting.contains(&key.in_epoch(epoch)),
            "the batch's invalidation of {key:?} waits in the outbox: {waiting:?}"
        );
    }

    // Redis comes back from its file with the old answers in it.
    let _own = OwnRedis::start_with(port, &persistent).await;
    let old: Vec<Option<String>> = keys.old_answers().into_iter().map(Some).collect();
    eventually(10, || async {
        let found = cached(&redis, &keys, epoch).await;
        (found == old)
            .then_some(())
            .ok_or(format!("the stale entries are back: {found:?}"))
    })
    .await;

    let second = start(&settings, &[redis_url]);
    second.live(&http).await;
    let hits_before = hits(&http, &second.base()).await;
    always(&http, &second.base(), &keys, Duration::from_secs(1)).await;
    eventually(20, || async {
        assert_eq!(
            read_all(&http, &second.base(), &keys).await,
            keys.new_answers()
        );
        let rows = outbox_rows(&pool, false).await;
        let resumed = hits(&http, &second.base()).await > hits_before;
        (rows == 0 && resumed).then_some(()).ok_or(format!(
            "the outbox drains ({rows} rows) and caching resumes ({resumed})"
        ))
    })
    .await;
    // The restarted server's run id is not the one in the marker: a new
    // epoch began, and the entries it brought back are unreachable.
    let now = cache_epoch(&pool).await;
    assert_ne!(now, epoch, "a new cache epoch began");
    let no_old = cached(&redis, &keys, now).await;
    assert!(
        no_old
            .iter()
            .flatten()
            .all(|a| keys.new_answers().contains(a)),
        "{no_old:?}"
    );

    drop(second);
    pool.close();
    warehouse_monitor::store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Redis out of the consumer's reach only (it is configured with a port
/// nothing listens on), while an API instance reads the cache: the consumer
/// announces its undelivered invalidations and waits before it commits them,
/// so no read that starts after the COMMIT gets an old answer, not even in
/// the moments before the API instance's next look at the outbox. The API
/// instance delivers the outbox after the consumer's abort, and caching resumes.
#[tokio::test]
async fn no_read_after_the_commit_is_stale_when_only_the_consumer_lost_redis() {
    let own = OwnRedis::start(free_port()).await;
    let mut settings = test_settings(1);
    settings.redis.url = own.url().into();
    let mut api = settings.clone();
    api.role = Role::Api;
    let api = TestApp::spawn_with(api).await;
    let http = reqwest::Client::new();
    let keys = Arc::new(Keys::new(3));
    let redis = RawRedis::connect(settings.redis.url.expose()).await;
    let unreachable = format!("redis://127.0.0.1:{}", free_port());

    api.produce(0, keys.old_events()).await;
    let mut consumer = start(
        &settings,
        &[
            ("WM_ROLE", "consumer"),
            ("WM_REDIS__URL", unreachable.as_str()),
            ABORT_AT_SECOND_BATCH,
        ],
    );
    api.wait_consumed().await;
    // Its invalidations (of nothing cached yet) are delivered by the API
    // instance, whose next look finds the outbox empty.
    eventually(20, || async {
        let rows = outbox_rows(&api.pool, false).await;
        let (_, ready) = api.get_json("/health/ready").await;
        (rows == 0 && ready["cache_outbox"] == 0)
            .then_some(())
            .ok_or(format!(
                "{rows} outbox rows; the API instance saw {}",
                ready["cache_outbox"]
            ))
    })
    .await;
    warm(&http, &api.url(""), &keys, &redis, api.cache_epoch().await).await;

    // Readers that note whether the COMMIT was visible before each read.
    let target = api.producer.total() + i64::try_from(keys.new_events().len()).unwrap();
    let stop = CancellationToken::new();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, topic) = (api.pool.clone(), api.settings.kafka.topic.clone());
            let (http, base, keys, stop) =
                (http.clone(), api.url(""), Arc::clone(&keys), stop.clone());
            tokio::spawn(async move {
                let (mut after_commit, mut stale) = (0, Vec::new());
                while !stop.is_cancelled() {
                    let committed = committed_offsets(&pool, &topic).await;
                    let visible = committed.get(&0).copied().unwrap_or(0) >= target;
                    let seen = read_all(&http, &base, &keys).await;
                    if visible {
                        after_commit += 1;
                        if seen != keys.new_answers() {
                            stale.push(seen);
                        }
                    }
                }
                (after_commit, stale)
            })
        })
        .collect();

    let hits_before = hits(&http, &api.url("")).await;
    api.produce(0, keys.new_events()).await;
    let started = Instant::now();
    assert_aborted(consumer.ended().await);
    println!(
        "consumer without Redis: batch produced to abort after its COMMIT in {:?}",
        started.elapsed()
    );
    eventually(30, || async {
        let rows = outbox_rows(&api.pool, false).await;
        let resumed = hits(&http, &api.url("")).await > hits_before;
        (rows == 0 && resumed).then_some(()).ok_or(format!(
            "the outbox drains ({rows} rows) and caching resumes ({resumed})"
        ))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let (mut after_commit, mut stale) = (0, Vec::new());
    for reader in readers {
        let (after, found) = reader.await.unwrap();
        after_commit += after;
        stale.extend(found);
    }
    println!(
        "reads after the COMMIT: {after_commit}, stale: {}",
        stale.len()
    );
    assert!(
        stale.is_empty(),
        "stale answers after the COMMIT: {stale:?}"
    );
    assert!(
        after_commit >= 20,
        "only {after_commit} reads after the COMMIT"
    );
    let no_old = cached(&redis, &keys, api.cache_epoch().await).await;
    assert!(
        no_old
            .iter()
            .flatten()
            .all(|a| keys.new_answers().contains(a)),
        "{no_old:?}"
    );
    let m = scrape(&api).await;
    assert!(m.value("wm_cache_outbox_delivered_total", &[]) >= 1.0);
    assert_eq!(m.value("wm_cache_outbox_rows", &[]), 0.0);
    api.stop().await;
}
