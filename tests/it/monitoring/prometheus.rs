//! A real Prometheus (the Debian package) scrapes the service.

use super::{dashboard::dashboard_exprs, *};

/// A process killed (and its scratch directory removed) when dropped.
pub(super) struct Killed(Child, PathBuf);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

pub(super) fn prometheus_binary() -> PathBuf {
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
pub(super) async fn debian_prometheus_scrapes_the_service() {
    let binary = prometheus_binary();
    let app = TestApp::spawn(1).await;
    let dir = std::env::temp_dir().join(format!("wm-prometheus-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    // The committed scrape configuration, pointed at this instance (the
    // one-line target list of compose's instances replaced, as
    // scripts/monitor.sh does).
    let template = std::fs::read_to_string(repo().join("observability/prometheus.yml")).unwrap();
    assert!(template.contains("scrape_interval: 5s"));
    let targets_line = template
        .lines()
        .find(|l| l.trim_start().starts_with("- targets: ["))
        .expect("prometheus.yml has a one-line `- targets: [...]`");
    let indent = &targets_line[..targets_line.len() - targets_line.trim_start().len()];
    let config = template
        .replace(
            targets_line,
            &format!("{indent}- targets: [\"{}\"]", app.addr),
        )
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    let parsed: Value = serde_yaml::from_str(&config).expect("prometheus.yml is YAML");
    assert_eq!(parsed["global"]["scrape_interval"], json!("1s"));
    let targets = &parsed["scrape_configs"][0]["static_configs"][0]["targets"];
    assert_eq!(targets, &json!([app.addr.to_string()]));
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        repo().join("observability/alerts.yml"),
        dir.join("alerts.yml"),
    )
    .unwrap();
    let port = free_port();
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
    let patience = Patience::secs(60).every(Duration::from_millis(500));
    let target = eventually(patience, || async {
        let answer = app.http.get(api("targets")).send().await;
        let targets = match answer.and_then(|r| r.error_for_status()) {
            Ok(body) => {
                let body: Value = body.json().await.unwrap();
                body["data"]["activeTargets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
        match targets.iter().find(|t| t["health"] == json!("up")) {
            Some(up) => Ok(up.clone()),
            None => {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                Err(format!(
                    "a target up; targets: {targets:?}\nprometheus log:\n{log}"
                ))
            }
        }
    })
    .await;
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
    // The alert rules load, evaluate without error, and query exported metrics.
    let rules = eventually(patience, || async {
        let body: Value = app
            .http
            .get(api("rules"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rules: Vec<Value> = body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = !rules.is_empty() && rules.iter().all(|r| r["health"] == json!("ok"));
        evaluated
            .then_some(rules)
            .ok_or_else(|| format!("rules loaded and healthy: {body}"))
    })
    .await;
    let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    let expected = [
        "WarehouseFreshnessSlow",
        "WarehouseLagGrowing",
        "WarehouseNoInstanceConsumes",
        "WarehousePartitionStalled",
    ];
    assert_eq!(names, expected.into_iter().collect());
    // One committed event, so that the histograms the rules read exist.
    let event = Ev::arrival(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), 1);
    app.produce(0, vec![event.bytes()]).await;
    app.wait_consumed().await;
    let exported = scrape(&app).await;
    for rule in &rules {
        let query = rule["query"].as_str().unwrap();
        let uses_exported = exported.names().iter().any(|name| query.contains(name));
        assert!(uses_exported, "{query} queries no exported metric");
    }
    drop(prometheus);
    app.stop().await;
}
