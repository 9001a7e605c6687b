//! Kafka over TLS and with SASL, as far as the local broker allows.
//!
//! Tansu 0.6 cannot serve TLS itself (its `--cert` and `--key` flags refuse
//! to be given together, and `--cert` alone leaves the listener plain), so a
//! TLS terminator of the test's own, with a certificate generated here, sits
//! in front of a Tansu of the test's own that advertises the terminator's
//! port: every request of the service, bootstrap, metadata, produce and
//! fetch, goes through librdkafka's TLS. SASL: Tansu started with
//! `--authentication` runs SCRAM, but a user can only be created through an
//! authenticated connection to the same (in-memory) broker, so no login can
//! succeed; the tests show that each SCRAM mechanism reaches the broker's
//! user lookup, and that the broker without authentication refuses PLAIN.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warehouse_monitor::{
    app::startup::Application,
    config::{KafkaSettings, SaslMechanism},
    kafka::{self, Codec, Outgoing},
    redact::Secret,
};

use crate::support::{
    helpers::{Ev, Patience, eventually, free_port, stock, test_settings, wait_committed},
    pki::Pki,
};

/// A Tansu broker of the test's own, in memory.
struct OwnTansu {
    child: Child,
}

impl OwnTansu {
    /// Listens on `port`, tells clients to use `advertised`.
    async fn start(port: u16, advertised: u16, extra: &[&str]) -> Self {
        let child = Command::new(tansu_binary())
            .current_dir("/")
            .env("RUST_LOG", "error")
            .arg("broker")
            .args(["--cluster-id", "wm-security-test"])
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu runs");
        let patience = Patience::secs(10).every(Duration::from_millis(20));
        eventually(patience, || async {
            TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| format!("own tansu listens on {port}: {e}"))
        })
        .await;
        Self { child }
    }
}

impl Drop for OwnTansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tansu` on the PATH, else where `cargo install` puts it.
fn tansu_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        let home = std::env::var_os("CARGO_HOME").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"),
            PathBuf::from,
        );
        home.join("bin/tansu")
    })
}

/// Terminates TLS with the certificate of `pki` and passes the bytes on to
/// a plain port; counts the sessions it completed.
struct TlsTerminator {
    port: u16,
    sessions: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsTerminator {
    async fn start(pki: &Pki, upstream: u16) -> Self {
        let chain = vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
        let config = ServerConfig::builder_with_provider(warehouse_monitor::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sessions = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&sessions);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return; // the client refused the certificate
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut plain) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Self {
            port,
            sessions,
            task,
        }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(value: Vec<u8>) -> Outgoing {
    Outgoing {
        partition: 0,
        value: Some(value),
        timestamp: Some(1_737_439_421_623),
        ..Outgoing::default()
    }
}

#[tokio::test]
async fn the_service_consumes_over_tls_and_refuses_an_unknown_ca() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let broker_port = free_port();
    let terminator = TlsTerminator::start(&pki, broker_port).await;
    let _tansu = OwnTansu::start(broker_port, terminator.port, &[]).await;
    let mut settings = test_settings(1);
    settings.kafka.brokers = vec![format!("127.0.0.1:{}", terminator.port)];
    settings.kafka.tls = true;
    settings.kafka.ca_file = pki.ca_str();

    let app = Application::build(settings.clone())
        .await
        .expect("builds over TLS");
    let (addr, pool) = (
        app.local_addr(),
        warehouse_monitor::store::pool(&settings.postgres).unwrap(),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));

    // Produced over TLS too: the broker advertises only the terminator.
    let client = kafka::connect(&settings.kafka)
        .await
        .expect("producer connects");
    let producer = client.producer(Codec::None).unwrap();
    let topic = settings.kafka.topic.clone();
    let (warehouse, product) = (Uuid::new_v4(), Uuid::new_v4());
    let values = [6, 8].map(|q| record(Ev::arrival(Uuid::new_v4(), warehouse, product, q).bytes()));
    let offsets = kafka::send_all(&producer, &topic, &values).await.unwrap();
    let end = offsets.last().unwrap() + 1;
    wait_committed(&pool, &topic, &HashMap::from([(0, end)])).await;
    assert_eq!(stock(&pool, warehouse, product).await, Some(14));
    let url = format!("http://{addr}/api/warehouses/{warehouse}/products/{product}");
    let body: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(body["quantity"], 14, "{body}");
    let sessions = terminator.sessions.load(Ordering::SeqCst);
    println!("Kafka over TLS: {sessions} TLS sessions through the terminator");
    assert!(
        sessions >= 2,
        "service and producer went through TLS: {sessions}"
    );
    stop.cancel();
    running.await.unwrap().unwrap();
    pool.close();

    // A broker whose certificate another CA signed is refused.
    let mut stranger = settings.kafka.clone();
    let other_ca = Pki::new(&["127.0.0.1"]);
    stranger.ca_file = other_ca.ca_str();
    let err = connect_briefly(&stranger).await;
    println!("Kafka TLS, another CA: {err}");
    assert!(err.contains("certificate verify failed"), "{err}");
    warehouse_monitor::store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
}

/// The error of connecting with the service's TLS and SASL settings, given
/// up after two seconds (the service itself keeps trying for 20).
async fn connect_briefly(settings: &KafkaSettings) -> String {
    kafka::connect_within(settings, Duration::from_secs(2))
        .await
        .expect_err("refused")
        .to_string()
}

#[tokio::test]
async fn each_scram_mechanism_reaches_a_broker_that_requires_authentication() {
    let port = free_port();
    let _tansu = OwnTansu::start(port, port, &["--authentication"]).await;
    for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
        let mut settings = test_settings(1).kafka;
        settings.brokers = vec![format!("127.0.0.1:{port}")];
        settings.sasl_mechanism = mechanism;
        settings.sasl_username = "wm-user".into();
        settings.sasl_password = Secret::new("scram-Secret-6604");
        let err = connect_briefly(&settings).await;
        println!("{mechanism:?}, a user the broker does not know: {err}");
        // The broker took the mechanism and looked the user up: SCRAM ran.
        assert!(
            err.contains("SCRAM authentication failed: broker responded with unknown-user"),
            "{mechanism:?}: {err}"
        );
        assert!(!err.contains("scram-Secret-6604"), "{err}");
    }
}
