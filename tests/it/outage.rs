//! PostgreSQL crashing under load: a server of the test's own is stopped with
//! `pg_ctl -m immediate` (no checkpoint, connections cut) in the middle of a
//! stream and started again; the consumer recovers by itself and nothing is
//! lost or counted twice.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    helpers::{Ev, Patience, TestApp, committed_offsets, eventually, free_port, test_settings},
    stream,
};

/// A PostgreSQL cluster in a temporary directory, run as the `postgres` user
/// (tests/it/secure_connections.rs runs it with TLS, tests/it/failover in a network
/// namespace).
pub(crate) struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl OwnPostgres {
    pub(crate) fn init(port: u16) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("initdb found");
        let dir = std::env::temp_dir().join(format!("wm-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pg = OwnPostgres { bin, dir, port };
        assert!(
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .unwrap()
                .success()
        );
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{tool} {args:?} failed");
    }

    pub(crate) fn start(&self) {
        self.start_with("");
    }

    /// Starts with TLS on, presenting the certificate `cert_pem` (its chain,
    /// PEM) with the key `key_pem`; plain connections are still accepted.
    pub(crate) fn start_tls(&self, cert_pem: &str, key_pem: &str) {
        let cert = self.dir.join("server.crt");
        let key = self.dir.join("server.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        // The server refuses a key that others can read, or that it does not own.
        for (path, mode) in [(&cert, "0644"), (&key, "0600")] {
            for (tool, arg) in [("chown", "postgres:postgres"), ("chmod", mode)] {
                assert!(
                    Command::new(tool)
                        .arg(arg)
                        .arg(path)
                        .status()
                        .unwrap()
                        .success()
                );
            }
        }
        self.start_with(&format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        ));
    }

    /// Starts with extra server options (`-c name=value ...`).
    fn start_with(&self, extra: &str) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off {extra}",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Starts inside the network namespace `netns`, listening on `addresses`
    /// (comma-separated) and trusting every client address.
    pub(crate) fn start_in_netns(&self, netns: &str, addresses: &str) {
        let hba = self.dir.join("data/pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        rules.push_str("host all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, rules).expect("pg_hba.conf written");
        let options = format!(
            "-p {} -c listen_addresses={addresses} -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        let status = Command::new("ip")
            .args(["netns", "exec", netns, "runuser", "-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start in {netns} failed");
    }

    /// The server and every backend, as the kernel sees them.
    fn processes(&self) -> Vec<String> {
        let pid_file = self.dir.join("data/postmaster.pid");
        let text = std::fs::read_to_string(pid_file).expect("postmaster.pid");
        let postmaster = text.lines().next().unwrap().trim().to_owned();
        let children = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .unwrap();
        let mut pids = vec![postmaster];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        pids
    }

    /// Sends `signal` to the server and every backend.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(self.processes())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Stops at once, like a crash: no shutdown checkpoint, clients cut off.
    fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .status();
        let _ = std::fs::remove_dir_all(Path::new(&self.dir));
    }
}

#[tokio::test]
async fn postgres_crash_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let port = free_port();
    let pg = OwnPostgres::init(port);
    pg.start();
    let mut settings = test_settings(3);
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/wm_outage").into();
    settings.batch.size = 50;
    let app = TestApp::spawn_with(settings).await;

    let stream = stream::generate(21, 2_000, 3, true);
    let total: usize = stream.partitions.iter().map(Vec::len).sum();
    for (p, values) in (0..).zip(&stream.partitions) {
        app.produce(p, values.clone()).await;
    }
    // Crash once some, but not all, of the stream is committed (checked
    // every 5 ms, so that the crash comes soon after the first commit).
    let patience = Patience::secs(10).every(Duration::from_millis(5));
    let committed = eventually(patience, || async {
        let committed = committed_offsets(&app.pool, &app.settings.kafka.topic)
            .await
            .values()
            .sum::<i64>();
        (committed > 0).then_some(committed)
    })
    .await;
    pg.crash();
    assert!(
        usize::try_from(committed).unwrap() < total,
        "the crash came after the whole stream"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(
        (status, body["database"].as_str()),
        (503, Some("down")),
        "{body}"
    );
    pg.start();

    app.wait_consumed().await;
    stream.assert_stock(&app.pool).await;
    let client = app.pool.get().await.unwrap();
    let report = warehouse_monitor::store::verify::stock(&client)
        .await
        .unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    drop(client);
    app.stop().await;
}

/// A hung PostgreSQL (every process SIGSTOPped: connections stay open, nothing
/// answers) makes reads answer 503 `unavailable` within the request timeout
/// instead of hanging, and readiness says the database is down.
#[tokio::test]
async fn a_hung_postgres_answers_503_within_the_request_timeout() {
    let port = free_port();
    let pg = OwnPostgres::init(port);
    pg.start();
    let mut settings = test_settings(1);
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/wm_hung").into();
    let limit = settings.http.request_timeout();
    let app = TestApp::spawn_with(settings).await;
    let (m, wh, product) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    app.produce(0, vec![Ev::arrival(m, wh, product, 4).bytes()])
        .await;
    app.wait_consumed().await;

    pg.signal("STOP");
    let paths = [
        format!("/api/movements/{}", uuid::Uuid::new_v4()),
        format!(
            "/api/warehouses/{}/products/{product}",
            uuid::Uuid::new_v4()
        ),
    ];
    for path in &paths {
        let started = std::time::Instant::now();
        let (status, body) = app.get_json(path).await;
        let took = started.elapsed();
        pg.processes(); // still there, still stopped
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("unavailable")),
            "{path}: {body}"
        );
        assert!(
            took < limit + Duration::from_millis(500),
            "{path} took {took:?}"
        );
        println!("hung database: {path} answered {status} in {took:?} (limit {limit:?})");
    }
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(
        (status, body["database"].as_str()),
        (503, Some("down")),
        "{body}"
    );
    pg.signal("CONT");

    // Once it answers again, so does the API.
    let (status, body) = eventually(10, || async {
        let answer = app.get_json(&format!("/api/movements/{m}")).await;
        (answer.0 == 200).then_some(answer)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

/// A batch that needs more advisory locks than the server's lock table holds
/// (53200, out of shared memory) is split until its halves fit, instead of
/// failing forever: a server of the test's own with a tiny lock table.
#[tokio::test]
async fn a_batch_too_big_for_the_lock_table_is_split() {
    let port = free_port();
    let pg = OwnPostgres::init(port);
    // 10 slots per backend (about 40 backends with the workers): a few hundred
    // lock slots for the whole server, plus whatever spare shared memory it borrows.
    pg.start_with("-c max_locks_per_transaction=10 -c max_connections=20");
    let mut settings = test_settings(1);
    settings.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/wm_locks").into();
    settings.postgres.pool_size = 2;
    settings.postgres.api_pool_size = 1;
    settings.batch.size = 4000;
    settings.batch.wait_ms = 3000;
    let app = TestApp::spawn_with(settings).await;
    let (wh, product) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // 4 000 movements, in one batch (or a few, if the broker is slow): well
    // over the lock table even with the spare shared memory it may borrow.
    let values: Vec<Vec<u8>> = (0..4000)
        .map(|_| Ev::arrival(uuid::Uuid::new_v4(), wh, product, 1).bytes())
        .collect();
    app.produce(0, values).await;
    app.wait_consumed().await;
    assert_eq!(app.stock(wh, product).await, Some(4000));
    assert!(app.rejected().await.is_empty(), "nothing is quarantined");
    let m = crate::monitoring::scrape(&app).await;
    let split = m.value(
        "wm_batch_failures_total",
        &[("step", "lock"), ("class", "resources")],
    );
    assert!(split >= 1.0, "the whole batch did not fit: {split}");
    app.stop().await;
}
