//! Monitoring as an operator meets it: the counters on /metrics match a known
//! stream, every metric the Grafana dashboard queries is exported, compose.yaml
//! is consistent with the repository and config/, and a real Prometheus (the
//! Debian package) scrapes the service.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Ev, TestApp};

const REASONS: [&str; 6] = [
    "malformed_json",
    "unsupported_type",
    "missing_field",
    "invalid_field",
    "invalid_quantity",
    "conflict",
];

const DASHBOARD: &str = "observability/grafana/dashboards/warehouse-monitor.json";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------ exposition

/// One sample line of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed /metrics page: `# TYPE` per family, and every sample.
#[derive(Debug)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut out = Exposition {
        types: HashMap::new(),
        samples: Vec::new(),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            out.types.insert(name.into(), kind.trim().into());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).expect("sample line");
        let (name, mut rest) = line.split_at(end);
        let mut labels = BTreeMap::new();
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                r = r.trim_start_matches([',', ' ']);
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = r.split_once("=\"").expect("label");
                let (mut value, mut chars) = (String::new(), after.char_indices());
                let close = loop {
                    match chars.next().expect("closing quote") {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key.trim().to_owned(), value);
                r = &after[close + 1..];
            }
        }
        let value = rest.split_whitespace().next().expect("value");
        out.samples.push(Sample {
            name: name.into(),
            labels,
            value: value.parse().unwrap_or_else(|_| panic!("value in {line}")),
        });
    }
    out
}

impl Exposition {
    /// Samples of `name` carrying every label of `labels`.
    fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the single sample `name{labels}`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self.find(name, labels).collect();
        assert_eq!(found.len(), 1, "one sample {name}{labels:?}, got {found:?}");
        found[0].value
    }

    fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }
}

async fn scrape(app: &TestApp) -> Exposition {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET /metrics");
    parse_exposition(&response.text().await.unwrap())
}

// ------------------------------------------------------------ a known stream

/// Produces 6 good events (3 departures on partition 0, 3 arrivals on 1),
/// waits, then 2 exact duplicates, one record per decode reason and one
/// conflict; returns the number of records produced.
async fn known_stream(app: &TestApp) -> usize {
    let goods: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let ids = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
            if i < 3 {
                Ev::departure(ids.0, ids.1, ids.2, 10 + i).bytes()
            } else {
                Ev::arrival(ids.0, ids.1, ids.2, 10 + i).bytes()
            }
        })
        .collect();
    app.produce(0, goods[..3].to_vec()).await;
    app.produce(1, goods[3..].to_vec()).await;
    app.wait_consumed().await;

    let good: Value = serde_json::from_slice(&goods[1]).unwrap();
    let variant = |edit: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let bad = vec![
        b"{not json".to_vec(),
        variant(&|v| v["specversion"] = json!("0.3")),
        variant(&|v| {
            v["data"].as_object_mut().unwrap().remove("movement_id");
        }),
        variant(&|v| v["data"]["timestamp"] = json!("yesterday")),
        variant(&|v| v["data"]["quantity"] = json!(-4)),
        variant(&|v| v["data"]["quantity"] = json!(999)), // same key, other content
    ];
    app.produce(0, [vec![goods[0].clone()], bad].concat()).await;
    app.produce(1, vec![goods[4].clone()]).await;
    app.wait_consumed().await;
    6 + 2 + REASONS.len()
}

/// Scrapes until the counters include all `produced` records and no partition
/// lags (20 s at most): metrics are recorded just after the commit that
/// `wait_consumed` sees.
async fn settled(app: &TestApp, produced: usize) -> Exposition {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(app).await;
        let consumed: f64 = m
            .find("wm_events_consumed_total", &[])
            .map(|s| s.value)
            .sum();
        let lag: Vec<f64> = m.find("wm_consumer_lag", &[]).map(|s| s.value).collect();
        if consumed == produced as f64 && lag.iter().all(|l| *l == 0.0) {
            return m;
        }
        let late = tokio::time::Instant::now() >= deadline;
        assert!(!late, "consumed {consumed} of {produced}, lag {lag:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn counters_match_a_known_stream_and_histograms_and_lag_are_exported() {
    let app = TestApp::spawn(2).await;
    let before = scrape(&app).await;
    for reason in REASONS {
        let v = before.value("wm_events_rejected_total", &[("reason", reason)]);
        assert_eq!(v, 0.0, "{reason} is pre-registered at 0");
    }
    let produced = known_stream(&app).await;

    let m = settled(&app, produced).await;
    assert_eq!(m.value("wm_events_consumed_total", &[]), produced as f64);
    assert_eq!(m.value("wm_events_applied_total", &[]), 6.0);
    assert_eq!(m.value("wm_events_duplicate_total", &[]), 2.0);
    for reason in REASONS {
        let v = m.value("wm_events_rejected_total", &[("reason", reason)]);
        assert_eq!(v, 1.0, "wm_events_rejected_total{{reason={reason:?}}}");
    }
    // Three departures, none arrived: three stock rows went below zero.
    assert_eq!(m.value("wm_stock_negative_updates_total", &[]), 3.0);

    for family in [
        "wm_batch_size",
        "wm_batch_apply_duration_seconds",
        "wm_event_commit_delay_seconds",
    ] {
        assert_eq!(m.types.get(family).map(String::as_str), Some("histogram"));
        let inf = m.value(&format!("{family}_bucket"), &[("le", "+Inf")]);
        assert_eq!(inf, m.value(&format!("{family}_count"), &[]), "{family}");
        assert!(inf >= 1.0, "{family} has observations");
        m.value(&format!("{family}_sum"), &[]);
    }
    // One observation per committed batch; the sizes add up to the records.
    let batches: f64 = m
        .find("wm_batches_committed_total", &[])
        .map(|s| s.value)
        .sum();
    assert_eq!(m.value("wm_batch_size_count", &[]), batches);
    assert_eq!(m.value("wm_batch_size_sum", &[]), produced as f64);
    assert_eq!(
        m.value("wm_batch_apply_duration_seconds_count", &[]),
        batches
    );

    // Lag per partition, 0 once everything is committed.
    for p in ["0", "1"] {
        assert_eq!(m.value("wm_consumer_lag", &[("partition", p)]), 0.0);
    }
    let kind = m.types.get("wm_consumer_lag").map(String::as_str);
    assert_eq!(kind, Some("gauge"));
    // Offsets: partition 0 got 3 good, 1 duplicate and 6 rejected; 1 got 4.
    for (p, next) in [("0", 10.0), ("1", 4.0)] {
        let committed = m.value("wm_consumer_committed_offset", &[("partition", p)]);
        assert_eq!(committed, next, "partition {p}");
    }
    m.value("wm_db_pool_connections", &[("state", "in_use")]);
    app.stop().await;
}

// ------------------------------------------------------------ dashboard

/// Every PromQL expression of the dashboard (panel targets, at any depth).
fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dashboard = std::fs::read(repo().join(DASHBOARD)).unwrap();
    let dashboard: Value = serde_json::from_slice(&dashboard).unwrap();
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("wm_") {
        let boundary = rest[..i].chars().next_back().is_none_or(|c| !is_ident(c));
        let len = rest[i..].find(|c| !is_ident(c)).unwrap_or(rest.len() - i);
        if boundary {
            names.insert(rest[i..i + len].to_owned());
        }
        rest = &rest[i + len..];
    }
    names
}

#[tokio::test]
async fn every_metric_of_the_dashboard_is_exported() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "dashboard has its panels: {exprs:?}");

    let app = TestApp::spawn(2).await;
    let produced = known_stream(&app).await;
    settled(&app, produced).await;
    for path in ["/metrics", "/health/live"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
    }
    let m = scrape(&app).await;
    let exported = m.names();
    let missing: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| metric_names(e))
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not export: {missing:?}"
    );
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no wm_ metric in {expr}");
        // Quantiles are taken over the buckets of a real histogram.
        for family in names.iter().filter_map(|n| n.strip_suffix("_bucket")) {
            assert_eq!(m.types.get(family).map(String::as_str), Some("histogram"));
        }
        // Labels grouped by exist on the series they group.
        for group in expr.split("by (").skip(1) {
            let labels = group.split(')').next().unwrap();
            for label in labels.split(',').map(str::trim) {
                let carried = m
                    .samples
                    .iter()
                    .any(|s| names.contains(&s.name) && s.labels.contains_key(label));
                assert!(carried, "label {label} of `{expr}` is not on its metrics");
            }
        }
    }
    app.stop().await;
}

// ------------------------------------------------------------ compose.yaml

/// A YAML file of the repository as JSON, converted by Python's PyYAML
/// (python3-yaml, which scripts/stack.sh installs when no python3 has it).
fn yaml(path: &str) -> Value {
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)";
    for python in ["python3", "/usr/bin/python3"] {
        let has_yaml = Command::new(python)
            .args(["-c", "import yaml"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_yaml {
            continue;
        }
        let out = Command::new(python)
            .args(["-c", script])
            .stdin(std::fs::File::open(repo().join(path)).unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{path} is not valid YAML: {err}");
        return serde_json::from_slice(&out.stdout).unwrap();
    }
    panic!("no python3 with PyYAML; run scripts/stack.sh up (installs python3-yaml)");
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn compose_file_matches_the_repository_and_config() {
    let compose = yaml("compose.yaml");
    let services = compose["services"].as_object().expect("services");
    for name in [
        "kafka",
        "kafka-init",
        "postgres",
        "redis",
        "prometheus",
        "grafana",
        "warehouse-monitor",
    ] {
        assert!(services.contains_key(name), "service {name}");
    }
    for (name, service) in services {
        let one_shot = service["restart"] == json!("no");
        assert!(
            one_shot || service["healthcheck"]["test"].is_array(),
            "{name} health check"
        );
        for (dep, cond) in service["depends_on"].as_object().into_iter().flatten() {
            assert!(
                services.contains_key(dep),
                "{name} depends on unknown {dep}"
            );
            let wanted = if services[dep]["restart"] == json!("no") {
                "service_completed_successfully"
            } else {
                "service_healthy"
            };
            assert_eq!(cond["condition"], json!(wanted), "{name} -> {dep}");
        }
        // Bind mounts: the host side exists in the repository.
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let host = str_of(volume).split(':').next().unwrap().to_owned();
            if host.starts_with('.') {
                assert!(repo().join(&host).exists(), "{name} mounts missing {host}");
            }
        }
    }

    // The service: built from the Dockerfile; env names are real settings.
    let wm = &services["warehouse-monitor"];
    assert!(repo().join(str_of(&wm["build"]["dockerfile"])).is_file());
    let deps = wm["depends_on"].as_object().unwrap();
    for dep in ["postgres", "redis", "kafka-init"] {
        assert!(deps.contains_key(dep), "warehouse-monitor waits for {dep}");
    }
    let defaults = config::Config::builder()
        .add_source(config::File::from(repo().join("config/default.toml")))
        .build()
        .unwrap();
    let env = wm["environment"].as_object().expect("environment as a map");
    for key in env.keys().filter(|k| k.starts_with("WM_")) {
        let setting = key["WM_".len()..].to_lowercase().replace("__", ".");
        assert!(
            defaults.get::<config::Value>(&setting).is_ok(),
            "{key}: no setting {setting}"
        );
    }
    let setting = |key: &str, default: String| env.get(key).map(str_of).unwrap_or(default);
    let addr: SocketAddr = setting("WM_HTTP__ADDR", String::new()).parse().unwrap();
    let ports: Vec<String> = wm["ports"].as_array().unwrap().iter().map(str_of).collect();
    assert!(
        ports
            .iter()
            .any(|p| p.ends_with(&format!(":{}", addr.port()))),
        "{ports:?}"
    );
    let scrape = std::fs::read_to_string(repo().join("observability/prometheus.yml")).unwrap();
    assert!(scrape.contains(&format!("\"warehouse-monitor:{}\"", addr.port())));

    // The topic created on start is the one the service reads, with its partitions.
    let topic = setting(
        "WM_KAFKA__TOPIC",
        defaults.get_string("kafka.topic").unwrap(),
    );
    let partitions = setting(
        "WM_KAFKA__PARTITIONS",
        defaults.get_int("kafka.partitions").unwrap().to_string(),
    );
    let init: Vec<String> = services["kafka-init"]["command"]
        .as_array()
        .expect("kafka-init command as a list")
        .iter()
        .map(str_of)
        .collect();
    let arg = |flag: &str| init.iter().skip_while(|a| *a != flag).nth(1).cloned();
    assert_eq!(arg("--topic"), Some(topic));
    assert_eq!(arg("--partitions"), Some(partitions));
    assert!(init.contains(&"--if-not-exists".to_owned()));
    let brokers = setting("WM_KAFKA__BROKERS", String::new());
    let advertised = str_of(&services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]);
    assert!(
        advertised.contains(&format!("//{brokers}")),
        "{brokers} in {advertised}"
    );
    assert_eq!(arg("--bootstrap-server"), Some(brokers));

    // Grafana: the provisioned datasource is the compose Prometheus, the
    // dashboard uses its uid, and the provider reads where the JSON is mounted.
    let sources = yaml("observability/grafana/provisioning/datasources/prometheus.yml");
    let source = &sources["datasources"][0];
    assert_eq!(source["url"], json!("http://prometheus:9090"));
    let dashboard = std::fs::read(repo().join(DASHBOARD)).unwrap();
    let dashboard: Value = serde_json::from_slice(&dashboard).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"], source["uid"],
            "{}",
            panel["title"]
        );
    }
    let providers = yaml("observability/grafana/provisioning/dashboards/dashboards.yml");
    let path = str_of(&providers["providers"][0]["options"]["path"]);
    let mounts: Vec<String> = services["grafana"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    let mount = format!("./observability/grafana/dashboards:{path}:ro");
    assert!(mounts.contains(&mount), "{mount} in {mounts:?}");
}

// ------------------------------------------------------------ real Prometheus

/// A process killed (and its scratch directory removed) when dropped.
struct Killed(Child, PathBuf);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn prometheus_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/prometheus")).filter(|p| p.is_file()))
        .expect("prometheus not installed; run scripts/stack.sh up (apt package prometheus)")
}

#[tokio::test]
async fn debian_prometheus_scrapes_the_service() {
    let binary = prometheus_binary();
    let app = TestApp::spawn(1).await;
    let dir = std::env::temp_dir().join(format!("wm-prometheus-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    // The committed scrape configuration, pointed at this instance.
    let template = std::fs::read_to_string(repo().join("observability/prometheus.yml")).unwrap();
    for needle in ["warehouse-monitor:8080", "scrape_interval: 5s"] {
        assert!(template.contains(needle), "prometheus.yml has {needle}");
    }
    let config = template
        .replace("warehouse-monitor:8080", &app.addr.to_string())
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let prometheus = Killed(child, dir.clone());

    let api = |path: &str| format!("http://127.0.0.1:{port}/api/v1/{path}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let target = loop {
        let answer = app.http.get(api("targets")).send().await;
        if let Ok(body) = answer.and_then(|r| r.error_for_status()) {
            let body: Value = body.json().await.unwrap();
            let targets = body["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            last = format!("{targets:?}");
            if let Some(t) = targets.iter().find(|t| t["health"] == json!("up")) {
                break t.clone();
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            panic!("target never up; targets: {last}\nprometheus log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(target["labels"]["job"], json!("warehouse-monitor"));
    let url = format!("http://{}/metrics", app.addr);
    assert_eq!(target["scrapeUrl"], json!(url));

    // The scraped series are queryable, with the service's value.
    let query = api("query?query=wm_events_rejected_total");
    let body: Value = app
        .http
        .get(query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reasons: BTreeSet<&str> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["metric"]["reason"].as_str())
        .collect();
    assert_eq!(reasons, REASONS.into_iter().collect(), "{body}");

    // Every dashboard expression is valid PromQL for this Prometheus.
    for expr in dashboard_exprs() {
        let expr = expr.replace("$__rate_interval", "1m");
        let answer = app
            .http
            .get(api("query"))
            .query(&[("query", &expr)])
            .send()
            .await
            .unwrap();
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], json!("success"), "{expr}: {body}");
    }
    drop(prometheus);
    app.stop().await;
}
