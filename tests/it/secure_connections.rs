//! Secure connections and secrets: PostgreSQL over TLS at each `sslmode`,
//! Redis over TLS with a password, against servers of the tests' own with
//! certificates generated here; and passwords never shown, in the logs, in
//! `/health/ready`, in errors or in `warehouse-monitor config`.

use std::process::Command;

use uuid::Uuid;
use warehouse_monitor::{
    app::startup::{self, Application},
    cache::Cache,
    config::{PgSslMode, Settings},
    metrics::Metrics,
};

use crate::support::{
    helpers::{Ev, ServiceProcess, TestApp, free_port, stock_path, test_settings},
    metrics::scrape,
    pki::Pki,
    postgres::OwnPostgres,
    process::{empty_dir, run},
    redis::{OwnRedis, tls_only},
};

/// Whether the batch pool's connection to the server is encrypted, as the
/// server sees it.
async fn server_sees_tls(pool: &deadpool_postgres::Pool) -> bool {
    let client = pool.get().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn on_own_postgres(port: u16, database: &str, mode: PgSslMode, ca: Option<&Pki>) -> Settings {
    let mut settings = test_settings(1);
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/{database}").into();
    settings.postgres.sslmode = mode;
    settings.postgres.ca_file = ca.map(Pki::ca_str).unwrap_or_default();
    settings
}

/// What the service says when it cannot start with `settings`.
async fn refused(settings: Settings) -> String {
    let err = Application::build(settings)
        .await
        .expect_err("the service refuses to start");
    format!("{:#}", anyhow::Error::from(err))
}

#[tokio::test]
async fn verify_full_with_the_ca_ingests_and_serves_over_tls() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let port = free_port();
    let pg = OwnPostgres::init(port);
    pg.start_tls(&pki.cert_pem, &pki.key_pem);
    let settings = on_own_postgres(port, "wm_tls", PgSslMode::VerifyFull, Some(&pki));
    let app = TestApp::spawn_with(settings).await;
    assert!(server_sees_tls(&app.pool).await, "the server sees TLS");

    let (warehouse, product) = (Uuid::new_v4(), Uuid::new_v4());
    app.produce(
        0,
        vec![
            Ev::arrival(Uuid::new_v4(), warehouse, product, 9).bytes(),
            Ev::departure(Uuid::new_v4(), warehouse, product, 4).bytes(),
        ],
    )
    .await;
    app.wait_consumed().await;
    let (status, body) = app.get_json(&stock_path(warehouse, product)).await;
    assert_eq!(
        (status, body["quantity"].as_i64()),
        (200, Some(5)),
        "{body}"
    );
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(
        (status, body["database"].as_str()),
        (200, Some("up")),
        "{body}"
    );
    app.stop_keeping_data().await;
}

/// libpq's meanings: `require` encrypts without checking the certificate,
/// `verify-ca` checks the CA but not the host name, `verify-full` checks
/// both; `require` refuses a server without TLS, and `prefer` accepts it.
#[tokio::test]
async fn each_sslmode_accepts_and_refuses_as_libpq_does() {
    // A certificate for another name than the 127.0.0.1 connected to.
    let pki = Pki::new(&["db.wm.test"]);
    let port = free_port();
    let tls = OwnPostgres::init(port);
    tls.start_tls(&pki.cert_pem, &pki.key_pem);

    for (mode, ca) in [
        (PgSslMode::Require, None),
        (PgSslMode::VerifyCa, Some(&pki)),
    ] {
        let settings = on_own_postgres(port, "wm_modes", mode, ca);
        let (store, _) = startup::migrate(&settings).await.expect("connects");
        assert!(
            server_sees_tls(&warehouse_monitor::store::pool(&settings.postgres).unwrap()).await,
            "{mode:?} uses TLS"
        );
        store.close();
    }

    let wrong_name = refused(on_own_postgres(
        port,
        "wm_modes",
        PgSslMode::VerifyFull,
        Some(&pki),
    ))
    .await;
    println!("verify-full, certificate for another host: {wrong_name}");
    assert!(wrong_name.contains("TLS handshake"), "{wrong_name}");
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");

    let stranger = Pki::new(&["db.wm.test", "127.0.0.1"]);
    let wrong_ca = refused(on_own_postgres(
        port,
        "wm_modes",
        PgSslMode::VerifyFull,
        Some(&stranger),
    ))
    .await;
    println!("verify-full, another CA: {wrong_ca}");
    assert!(wrong_ca.contains("UnknownIssuer"), "{wrong_ca}");

    let plain_port = free_port();
    let plain = OwnPostgres::init(plain_port);
    plain.start();
    let no_tls = refused(on_own_postgres(
        plain_port,
        "wm_modes",
        PgSslMode::Require,
        None,
    ))
    .await;
    println!("require, server without TLS: {no_tls}");
    assert!(no_tls.contains("server does not support TLS"), "{no_tls}");
    let settings = on_own_postgres(plain_port, "wm_modes", PgSslMode::Prefer, None);
    let (store, _) = startup::migrate(&settings)
        .await
        .expect("prefer falls back");
    assert!(!server_sees_tls(&warehouse_monitor::store::pool(&settings.postgres).unwrap()).await);
    store.close();
}

/// A Redis server of the test's own that accepts only TLS, with a password.
struct TlsRedis {
    port: u16,
    _server: OwnRedis,
}

impl TlsRedis {
    async fn start(pki: &Pki, password: &str) -> Self {
        let port = free_port();
        let tls = tls_only(pki, port);
        let options: Vec<&str> = tls
            .iter()
            .map(String::as_str)
            .chain(["--requirepass", password])
            .collect();
        // Waits until the TLS port accepts connections.
        let server = OwnRedis::start_with(port, &options).await;
        Self {
            port,
            _server: server,
        }
    }

    /// `GET key`, asked with redis-cli over TLS.
    fn get(&self, pki: &Pki, password: &str, key: &str) -> String {
        let output = Command::new("redis-cli")
            .args(["--tls", "--cacert", &pki.ca_str(), "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "--no-auth-warning",
                "-a",
                password,
            ])
            .args(["GET", key])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    }
}

#[tokio::test]
async fn redis_over_tls_with_a_password_caches_answers() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let password = "redis-tls-Pw-4471";
    let redis = TlsRedis::start(&pki, password).await;
    let url = format!("rediss://:{password}@127.0.0.1:{}", redis.port);

    // The server's certificate is checked: another CA is not trusted.
    let metrics = std::sync::Arc::new(Metrics::new().unwrap());
    let mut settings = test_settings(1);
    settings.redis.url = url.clone().into();
    let other_ca = Pki::new(&["127.0.0.1"]);
    settings.redis.ca_file = other_ca.ca_str();
    let untrusted = Cache::start(&settings.redis, std::sync::Arc::clone(&metrics))
        .await
        .unwrap();
    assert!(
        !untrusted.ping().await,
        "a server signed by another CA is refused"
    );
    untrusted.quit().await;

    settings.redis.ca_file = pki.ca_str();
    let app = TestApp::spawn_with(settings).await;
    let (warehouse, product) = (Uuid::new_v4(), Uuid::new_v4());
    app.produce(
        0,
        vec![Ev::arrival(Uuid::new_v4(), warehouse, product, 3).bytes()],
    )
    .await;
    app.wait_consumed().await;
    let path = stock_path(warehouse, product);
    // A miss, a hit from Redis, then one from the near cache, whose own
    // connection uses the same TLS and password.
    for _ in 0..3 {
        let (status, body) = app.get_json(&path).await;
        assert_eq!(
            (status, body["quantity"].as_i64()),
            (200, Some(3)),
            "{body}"
        );
    }
    let hits: f64 = scrape(&app)
        .await
        .find("wm_cache_requests_total", &[("result", "hit")])
        .map(|s| s.value)
        .sum();
    assert!(hits >= 2.0, "the second and third reads are hits: {hits}");
    let near: f64 = scrape(&app)
        .await
        .find("wm_cache_near_hits_total", &[])
        .map(|s| s.value)
        .sum();
    assert!(
        near >= 1.0,
        "the third read is answered from memory: {near}"
    );
    let key = app.cache_epoch().await.stock_key(warehouse, product);
    let stored = redis.get(&pki, password, &key);
    assert!(
        stored.contains("\"quantity\":3"),
        "in Redis itself: {stored}"
    );
    let (_, body) = app.get_json("/health/ready").await;
    assert_eq!(body["cache"], "up", "{body}");
    app.stop().await;
}

/// Three passwords that must never be shown.
const PG_PASSWORD: &str = "pg-Secret-8812";
const REDIS_PASSWORD: &str = "redis-Secret-3390";
const SASL_PASSWORD: &str = "sasl-Secret-5127";

fn assert_hidden(what: &str, text: &str) {
    for secret in [PG_PASSWORD, REDIS_PASSWORD, SASL_PASSWORD] {
        assert!(!text.contains(secret), "{what} shows a password:\n{text}");
    }
}

/// The running service, with passwords in both URLs and debug logging: its
/// log, `/health/ready` and `/metrics` never show them. Redis is unreachable,
/// so that its (masked) URL is logged.
#[tokio::test]
async fn passwords_never_appear_in_the_logs_or_health() {
    let settings = test_settings(1);
    let url = settings
        .postgres
        .url
        .expose()
        .replace("postgres@", &format!("postgres:{PG_PASSWORD}@"));
    let closed = free_port();
    let dir = empty_dir();
    let service = ServiceProcess::start_bare(
        &dir,
        &[
            ("WM_POSTGRES__URL", url),
            (
                "WM_REDIS__URL",
                format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{closed}"),
            ),
            ("WM_KAFKA__TOPIC", settings.kafka.topic.clone()),
            ("RUST_LOG", "debug".into()),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    for path in ["/health/ready", "/metrics"] {
        let body = http
            .get(service.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_hidden(path, &body);
    }
    let log = service.stop().await;
    assert!(log.contains("warehouse-monitor running"), "{log}");
    let masked = format!("redis://:***@127.0.0.1:{closed}");
    assert!(
        log.contains(&masked),
        "the Redis URL is logged masked:\n{log}"
    );
    assert_hidden("the log", &log);
    println!("log: {} lines, none with a password", log.lines().count());
    warehouse_monitor::store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
}

/// The built application, printed with `{:?}` (as a careless log line
/// would), shows neither password: settings, pools and clients mask them.
#[tokio::test]
async fn a_built_application_does_not_show_passwords_when_printed() {
    let mut settings = test_settings(1);
    let plain_url = settings.postgres.url.expose().to_owned();
    settings.postgres.url = plain_url
        .replace("postgres@", &format!("postgres:{PG_PASSWORD}@"))
        .into();
    settings.redis.url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", free_port()).into();
    let app = Application::build(settings.clone()).await.expect("builds");
    let printed = format!("{app:?} {settings:?}");
    assert!(printed.contains(":***@"), "the URLs are there, masked");
    assert_hidden("Debug", &printed);
    drop(app);
    warehouse_monitor::store::drop_database(&plain_url)
        .await
        .unwrap();
}

/// Start-up errors, and `warehouse-monitor config`, never show a password.
#[test]
fn passwords_never_appear_in_errors_or_the_printed_config() {
    let dir = empty_dir();
    let closed = free_port();
    let secrets = |postgres: String| {
        vec![
            ("WM_POSTGRES__URL", postgres),
            (
                "WM_REDIS__URL",
                format!("rediss://:{REDIS_PASSWORD}@cache.internal:6380"),
            ),
            ("WM_KAFKA__SASL_MECHANISM", "scram-sha-512".to_owned()),
            ("WM_KAFKA__SASL_USERNAME", "wm".to_owned()),
            ("WM_KAFKA__SASL_PASSWORD", SASL_PASSWORD.to_owned()),
        ]
    };
    let reachable = format!("postgres://app:{PG_PASSWORD}@127.0.0.1:{closed}/wm");
    let output = run(&dir, &secrets(reachable.clone()), &["config"]);
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_hidden("config", &printed);
    for shown in [
        format!("url = \"postgres://app:***@127.0.0.1:{closed}/wm\""),
        "url = \"rediss://:***@cache.internal:6380\"".to_owned(),
        "sasl_password = \"***\"".to_owned(),
    ] {
        assert!(printed.contains(&shown), "{shown} in:\n{printed}");
    }

    // Nothing listens on the database's port: the error says so, without the password.
    let output = run(&dir, &secrets(reachable), &["migrate"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    println!("unreachable database: {}", stderr.trim());
    assert!(stderr.contains("error:"), "{stderr}");
    assert_hidden("a connection error", &stderr);

    // A URL that does not parse is named, not shown.
    let broken = format!("postgres://app:{PG_PASSWORD}@127.0.0.1:port/wm");
    let output = run(&dir, &secrets(broken), &["migrate"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    println!("invalid URL: {}", stderr.trim());
    assert!(stderr.contains("postgres.url"), "{stderr}");
    assert_hidden("a settings error", &stderr);
}

/// The broker here has no SASL: the service stops with an error that does
/// not show the password.
#[tokio::test]
async fn a_refused_sasl_login_does_not_show_the_password() {
    let settings = test_settings(1);
    let dir = empty_dir();
    let output = run(
        &dir,
        &[
            (
                "WM_POSTGRES__URL",
                settings.postgres.url.expose().to_owned(),
            ),
            ("WM_KAFKA__TOPIC", settings.kafka.topic.clone()),
            ("WM_KAFKA__SASL_MECHANISM", "plain".to_owned()),
            ("WM_KAFKA__SASL_USERNAME", "wm".to_owned()),
            ("WM_KAFKA__SASL_PASSWORD", SASL_PASSWORD.to_owned()),
            ("WM_HTTP__ADDR", "127.0.0.1:0".to_owned()),
            ("RUST_LOG", "debug".to_owned()),
        ],
        &["serve"],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{all}");
    println!("SASL refused: {}", all.lines().last().unwrap_or_default());
    assert!(all.contains("password is sent unencrypted"), "{all}");
    assert_hidden("a SASL error", &all);
    warehouse_monitor::store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
}
