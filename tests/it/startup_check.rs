//! The start-up check against real servers: a PostgreSQL of the test's own
//! at its defaults and then with the settings `compose.yaml` and
//! `scripts/stack.sh` ship, Redis servers of the test's own with and without
//! a memory limit that evicts, stored offsets against the local broker's
//! log, and what `serve` logs and `warehouse-monitor check` prints and
//! exits with.
//!
//! A stored offset below the log start is judged in the unit tests only
//! (`src/app/check/tests.rs`): the local broker (Tansu 0.6, memory storage)
//! cannot delete records, so its logs always start at 0.

use std::path::Path;

use uuid::Uuid;
use warehouse_monitor::{
    app::check::{self, CheckError, Finding, POSTGRES_SETTINGS},
    cache::CacheError,
    config::Settings,
    kafka,
    store::Store,
};

use crate::support::{
    helpers::{Ev, Producer, ServiceProcess, eventually, free_port, test_settings},
    postgres::OwnPostgres,
    process,
    redis::OwnRedis,
};

/// The findings of PostgreSQL at Debian's (and initdb's) defaults.
fn default_findings() -> Vec<Finding> {
    vec![
        Finding::WalBudget {
            max_wal_size_mb: 1024,
        },
        Finding::WalUncompressed,
        Finding::CheckpointsFrequent {
            checkpoint_timeout_secs: 300,
        },
    ]
}

/// The `-c name=value` options of the PostgreSQL service of `compose.yaml`
/// that the check reads (the others size memory, which a test server does
/// not need).
fn shipped_settings() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("compose.yaml");
    let text = std::fs::read_to_string(path).expect("compose.yaml");
    let compose: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose.yaml parses");
    let command = compose["services"]["postgres"]["command"]
        .as_sequence()
        .expect("the postgres service has a command list");
    let words: Vec<&str> = command.iter().filter_map(|w| w.as_str()).collect();
    let settings: Vec<(String, String)> = words
        .windows(2)
        .filter(|pair| pair[0] == "-c")
        .filter_map(|pair| pair[1].split_once('='))
        .filter(|(name, _)| POSTGRES_SETTINGS.contains(name))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    assert_eq!(
        settings.len(),
        POSTGRES_SETTINGS.len(),
        "compose.yaml sets every setting the check reads: {words:?}"
    );
    settings
}

/// A private PostgreSQL at its defaults, and settings pointing at it (a
/// database of the test's own on it) for everything else of the stack.
fn own_postgres() -> (OwnPostgres, Settings) {
    let port = free_port();
    let pg = OwnPostgres::init(port);
    pg.start();
    let mut settings = test_settings(1);
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/wm_check").into();
    (pg, settings)
}

/// Sets `settings` as `scripts/stack.sh` does: ALTER SYSTEM, then a reload
/// (none of the three needs a restart).
async fn alter_system(store: &Store, settings: &[(String, String)]) {
    let client = store.client().await.unwrap();
    for (name, value) in settings {
        client
            .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
            .await
            .unwrap();
    }
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_at_its_defaults_is_warned_about_and_with_the_shipped_settings_is_not() {
    let (_pg, settings) = own_postgres();
    warehouse_monitor::store::ensure_database_with(&settings.postgres)
        .await
        .unwrap();
    let store = Store::new(&settings.postgres).unwrap();
    assert_eq!(check::postgres(&store).await.unwrap(), default_findings());

    alter_system(&store, &shipped_settings()).await;
    // A reload is a signal; new connections see it once the server read it.
    eventually(10, || async {
        let fresh = Store::new(&settings.postgres).unwrap();
        let findings = check::postgres(&fresh).await.unwrap();
        fresh.close();
        findings
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("no finding with the shipped settings: {findings:?}"))
    })
    .await;
    store.close();
}

#[tokio::test]
async fn redis_without_a_limit_or_under_noeviction_is_warned_about_and_with_lru_is_not() {
    let mut settings = test_settings(1);
    let cases: [(&[&str], Vec<Finding>); 3] = [
        (&[], vec![Finding::RedisUnbounded]),
        (
            &["--maxmemory", "64mb", "--maxmemory-policy", "noeviction"],
            vec![Finding::RedisNoEviction {
                maxmemory: 64 << 20,
            }],
        ),
        (
            &["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
            vec![],
        ),
    ];
    for (options, expected) in cases {
        let redis = OwnRedis::start_with(free_port(), options).await;
        settings.redis.url = redis.url().into();
        let findings = check::redis(&settings.redis).await.unwrap();
        assert_eq!(findings, expected, "redis-server {options:?}");
    }
}

#[tokio::test]
async fn redis_that_refuses_config_is_a_check_that_could_not_run_not_a_warning() {
    let mut settings = test_settings(1);
    // As managed services do: the command is renamed away.
    let redis = OwnRedis::start_with(free_port(), &["--rename-command", "CONFIG", ""]).await;
    settings.redis.url = redis.url().into();
    let refused = check::redis(&settings.redis).await.unwrap_err();
    assert!(
        matches!(refused, CheckError::Redis(CacheError::ConfigRefused(_))),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("not checked"), "{refused}");

    let store = Store::new(&settings.postgres).unwrap();
    let report = check::run(&settings, &store, None).await;
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.code().starts_with("redis")),
        "{report}"
    );
    assert!(
        report
            .unchecked
            .iter()
            .any(|e| matches!(e, CheckError::Redis(CacheError::ConfigRefused(_)))),
        "{report}"
    );
}

#[tokio::test]
async fn stored_offsets_the_log_still_holds_are_not_warned_about() {
    let settings = test_settings(2);
    let client = kafka::connect(&settings.kafka).await.unwrap();
    kafka::ensure_topic(&client, &settings.kafka).await.unwrap();
    let producer = Producer::connect(&settings).await;
    let events: Vec<Vec<u8>> = (0..10)
        .map(|_| Ev::arrival(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), 1).bytes())
        .collect();
    producer.produce(0, events).await;
    let (store, _) = warehouse_monitor::app::startup::migrate(&settings)
        .await
        .unwrap();
    // Partition 0 in the middle of its log, partition 1 at the start of an empty one.
    store
        .client()
        .await
        .unwrap()
        .execute(
            "INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES ($1, 0, 4), ($1, 1, 0)",
            &[&settings.kafka.topic],
        )
        .await
        .unwrap();
    let findings = check::retention(&store, &client, &settings.kafka.topic)
        .await
        .unwrap();
    assert_eq!(findings, vec![]);
    store.close();
    warehouse_monitor::store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
}

#[tokio::test]
async fn serve_logs_each_finding_once_as_a_warning_and_serves_all_the_same() {
    let (_pg, mut settings) = own_postgres();
    let redis = OwnRedis::start(free_port()).await;
    settings.redis.url = redis.url().into();
    let service = ServiceProcess::start(&settings);
    service.live(&reqwest::Client::new()).await;
    let log = service.log_path();
    eventually(20, || async {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.contains("redis_unbounded")
            .then_some(())
            .ok_or("the check's findings are logged")
    })
    .await;
    let output = service.stop().await;
    for code in [
        "wal_budget",
        "wal_uncompressed",
        "checkpoints_frequent",
        "redis_unbounded",
    ] {
        let lines: Vec<&str> = output.lines().filter(|l| l.contains(code)).collect();
        assert_eq!(lines.len(), 1, "one line for {code}:\n{output}");
        assert!(lines[0].contains("WARN"), "{}", lines[0]);
    }
    assert!(!output.contains("retention_passed"), "{output}");
}

#[tokio::test]
async fn the_check_command_exits_3_with_warnings_and_0_once_they_are_fixed() {
    let (_pg, mut settings) = own_postgres();
    let (store, _) = warehouse_monitor::app::startup::migrate(&settings)
        .await
        .unwrap();
    let unbounded = OwnRedis::start(free_port()).await;
    let dir = process::empty_dir();
    let vars = |settings: &Settings, redis: &OwnRedis| {
        vec![
            (
                "WM_POSTGRES__URL",
                settings.postgres.url.expose().to_owned(),
            ),
            ("WM_REDIS__URL", redis.url()),
            ("WM_KAFKA__TOPIC", settings.kafka.topic.clone()),
            ("RUST_LOG", "error".to_owned()),
        ]
    };
    let run = process::run(&dir, &vars(&settings, &unbounded), &["check"]);
    let printed = String::from_utf8_lossy(&run.stdout).into_owned();
    assert_eq!(run.status.code(), Some(3), "{printed}");
    for code in [
        "wal_budget",
        "wal_uncompressed",
        "checkpoints_frequent",
        "redis_unbounded",
    ] {
        assert!(
            printed.contains(&format!("warning [{code}]")),
            "{code}:\n{printed}"
        );
    }
    assert!(printed.ends_with("4 warning(s)\n"), "{printed}");

    alter_system(&store, &shipped_settings()).await;
    store.close();
    let evicting = OwnRedis::start_with(
        free_port(),
        &["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
    )
    .await;
    settings.redis.url = evicting.url().into();
    eventually(10, || async {
        let run = process::run(&dir, &vars(&settings, &evicting), &["check"]);
        let printed = String::from_utf8_lossy(&run.stdout).into_owned();
        (run.status.code() == Some(0) && printed == "no warning\n")
            .then_some(())
            .ok_or_else(|| format!("exit 0 and no warning: {:?}\n{printed}", run.status))
    })
    .await;
}
