//! The binary runs from any directory with no configuration file: its
//! defaults are compiled in, and environment variables are all it needs.

use uuid::Uuid;
use warehouse_monitor::store;

use crate::support::{
    helpers::{Ev, Producer, ServiceProcess, stock, stock_path, test_settings, wait_consumed},
    process::{empty_dir, run},
};

#[tokio::test]
async fn serves_and_ingests_from_an_empty_directory_with_only_environment_variables() {
    let settings = test_settings(1);
    let dir = empty_dir();
    let service = ServiceProcess::start_bare(
        &dir,
        &[
            (
                "WM_POSTGRES__URL",
                settings.postgres.url.expose().to_owned(),
            ),
            ("WM_KAFKA__TOPIC", settings.kafka.topic.clone()),
            ("RUST_LOG", "info".into()),
        ],
    )
    .await;
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "only its log in the working directory");

    let producer = Producer::connect(&settings).await;
    let (warehouse, product) = (Uuid::new_v4(), Uuid::new_v4());
    producer
        .produce(
            0,
            vec![
                Ev::arrival(Uuid::new_v4(), warehouse, product, 5).bytes(),
                Ev::arrival(Uuid::new_v4(), warehouse, product, 7).bytes(),
            ],
        )
        .await;
    let pool = warehouse_monitor::store::pool(&settings.postgres).unwrap();
    wait_consumed(&pool, &settings.kafka.topic, &producer).await;
    assert_eq!(stock(&pool, warehouse, product).await, Some(12));
    let url = service.url(&stock_path(warehouse, product));
    let body: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(body["quantity"], 12, "{body}");

    let log = service.stop().await;
    assert!(log.contains("warehouse-monitor running"), "{log}");
    pool.close();
    store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
}

#[test]
fn config_prints_the_built_in_defaults_and_what_overrides_them() {
    let dir = empty_dir();
    let repo_file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    let defaults: toml::Table = std::fs::read_to_string(repo_file).unwrap().parse().unwrap();

    let output = run(&dir, &[], &["config"]);
    assert!(output.status.success(), "{output:?}");
    let printed: toml::Table = String::from_utf8(output.stdout).unwrap().parse().unwrap();
    assert_eq!(printed, defaults, "no file, no variable: the defaults");

    // A file given with --config, then the environment, override them.
    let file = dir.join("site.toml");
    std::fs::write(&file, "[batch]\nsize = 50\nwait_ms = 20\n").unwrap();
    let output = run(
        &dir,
        &[("WM_BATCH__SIZE", "77".into())],
        &["--config", file.to_str().unwrap(), "config"],
    );
    assert!(output.status.success(), "{output:?}");
    let printed: toml::Table = String::from_utf8(output.stdout).unwrap().parse().unwrap();
    assert_eq!(printed["batch"]["size"].as_integer(), Some(77));
    assert_eq!(printed["batch"]["wait_ms"].as_integer(), Some(20));
    assert_eq!(printed["kafka"], defaults["kafka"]);

    // A config directory given explicitly must hold default.toml.
    let output = run(
        &dir,
        &[],
        &["--config-dir", dir.to_str().unwrap(), "config"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("default.toml"), "{stderr}");
}
