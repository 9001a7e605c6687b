//! compose.yaml is consistent with the repository and config/.

use super::*;

/// A YAML file of the repository, read into JSON values, with its merge keys
/// (`<<: *anchor`) applied as docker compose applies them.
pub(super) fn yaml(path: &str) -> Value {
    let file = std::fs::File::open(repo().join(path)).unwrap();
    let mut value: serde_yaml::Value =
        serde_yaml::from_reader(file).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"));
    value.apply_merge().unwrap();
    serde_json::to_value(value).unwrap()
}

/// The compose services that run warehouse-monitor, with their role.
const INSTANCES: [(&str, &str); 4] = [
    ("api-1", "api"),
    ("api-2", "api"),
    ("consumer-1", "consumer"),
    ("consumer-2", "consumer"),
];

pub(super) fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
pub(super) fn compose_file_matches_the_repository_and_config() {
    let compose = yaml("compose.yaml");
    let services = compose["services"].as_object().expect("services");
    for name in [
        "kafka",
        "kafka-init",
        "postgres",
        "redis",
        "prometheus",
        "grafana",
        "gateway",
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

    // The service, two API and two consumer instances: built from the
    // Dockerfile, one configuration, env names are real settings.
    let defaults = config::Config::builder()
        .add_source(config::File::from(repo().join("config/default.toml")))
        .build()
        .unwrap();
    let first = &services[INSTANCES[0].0];
    let env = first["environment"]
        .as_object()
        .expect("environment as a map");
    let mut addr: Option<SocketAddr> = None;
    for (name, role) in INSTANCES {
        let wm = &services[name];
        assert!(repo().join(str_of(&wm["build"]["dockerfile"])).is_file());
        let deps = wm["depends_on"].as_object().unwrap();
        for dep in ["postgres", "redis", "kafka-init"] {
            assert!(deps.contains_key(dep), "{name} waits for {dep}");
        }
        let own = wm["environment"].as_object().expect("environment as a map");
        for key in own.keys().filter(|k| k.starts_with("WM_")) {
            let setting = key["WM_".len()..].to_lowercase().replace("__", ".");
            assert!(
                defaults.get::<config::Value>(&setting).is_ok(),
                "{name} {key}: no setting {setting}"
            );
        }
        assert_eq!(own.get("WM_ROLE"), Some(&json!(role)), "{name}'s role");
        let mut same = own.clone();
        let mut shared = env.clone();
        same.remove("WM_ROLE");
        shared.remove("WM_ROLE");
        assert_eq!(same, shared, "{name} has the configuration of the others");
        let own_addr: SocketAddr = str_of(&own["WM_HTTP__ADDR"]).parse().unwrap();
        assert_eq!(*addr.get_or_insert(own_addr), own_addr);
    }
    let setting = |key: &str, default: String| env.get(key).map(str_of).unwrap_or(default);
    let addr = addr.unwrap();

    // The gateway publishes the API and balances over the API instances only.
    let gateway = &services["gateway"];
    let ports: Vec<String> = gateway["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    assert!(
        ports
            .iter()
            .any(|p| p.ends_with(&format!(":{}", addr.port()))),
        "{ports:?}"
    );
    let source = str_of(&gateway["configs"][0]["source"]);
    let nginx = str_of(&compose["configs"][&source]["content"]);
    for (name, role) in INSTANCES {
        let upstream = format!("server {name}:{} ", addr.port());
        assert_eq!(
            nginx.contains(&upstream),
            role == "api",
            "{upstream} in {nginx}"
        );
        let deps = gateway["depends_on"].as_object().unwrap();
        assert_eq!(
            deps.contains_key(name),
            role == "api",
            "gateway waits for {name}"
        );
    }

    // Prometheus scrapes every instance.
    let scrape = yaml("observability/prometheus.yml");
    let targets = &scrape["scrape_configs"][0]["static_configs"][0]["targets"];
    let wanted: Vec<String> = INSTANCES
        .iter()
        .map(|(name, _)| format!("{name}:{}", addr.port()))
        .collect();
    assert_eq!(targets, &json!(wanted), "Prometheus scrapes every instance");

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
