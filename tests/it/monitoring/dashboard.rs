//! Every metric the Grafana dashboard queries is one the service exports.

use super::*;

/// Every PromQL expression of the dashboard (panel targets, at any depth).
pub(super) fn dashboard_exprs() -> Vec<String> {
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

pub(super) fn metric_names(expr: &str) -> BTreeSet<String> {
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
pub(super) async fn every_metric_of_the_dashboard_is_exported() {
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
