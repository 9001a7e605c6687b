//! The HTTP API as a client sees it: every status value, the null and zero
//! rules, totals, every error code and body, health, and the OpenAPI document.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::helpers::{Ev, TestApp, eventually, stock_path};

fn movement_path(id: Uuid) -> String {
    format!("/api/movements/{id}")
}

#[tokio::test]
async fn movement_statuses_sides_times_and_totals() {
    let app = TestApp::spawn(2).await;
    let (sender, receiver) = (Uuid::new_v4(), Uuid::new_v4());
    let (p1, p2) = {
        let mut ps = [Uuid::new_v4(), Uuid::new_v4()];
        ps.sort();
        (ps[0], ps[1])
    };
    let in_transit = Uuid::new_v4();
    let delivered = Uuid::new_v4();
    let arrived_only = Uuid::new_v4();
    app.produce(
        0,
        vec![
            Ev::departure(in_transit, sender, p1, 10).bytes(),
            // delivered: two products, departures at 12:00 and 11:00, arrivals at 14:00 and 15:30.
            Ev::departure(delivered, sender, p1, 100)
                .at("2025-02-18T12:00:00Z")
                .bytes(),
            Ev::departure(delivered, sender, p2, 50)
                .at("2025-02-18T11:00:00+00:00")
                .bytes(),
            Ev::arrival(delivered, receiver, p1, 90)
                .at("2025-02-18T17:00:00+03:00")
                .bytes(),
        ],
    )
    .await;
    app.produce(
        1,
        vec![
            Ev::arrival(delivered, receiver, p2, 50)
                .at("2025-02-18T15:30:00")
                .bytes(),
            Ev::arrival(arrived_only, receiver, p1, 5).bytes(),
        ],
    )
    .await;
    app.wait_consumed().await;

    let (status, body) = app.get_json(&movement_path(in_transit)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "in_transit");
    assert_eq!(body["receiver"], Value::Null);
    assert_eq!(body["sender"]["warehouse_id"], sender.to_string());
    assert_eq!(body["sender"]["code"], "WH-3322");
    assert_eq!(body["sender"]["departed_at"], "2025-02-18T12:12:56Z");
    assert_eq!(body["elapsed_seconds"], Value::Null);
    assert_eq!(
        body["products"],
        json!([{"product_id": p1.to_string(), "sent": 10, "received": null, "difference": null}])
    );
    assert_eq!(body["quantity_sent"], 10);
    assert_eq!(body["quantity_received"], Value::Null);
    assert_eq!(body["quantity_difference"], Value::Null);

    let (status, body) = app.get_json(&movement_path(delivered)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "movement_id": delivered.to_string(),
            "status": "delivered",
            "sender": {"warehouse_id": sender.to_string(), "code": "WH-3322", "departed_at": "2025-02-18T11:00:00Z"},
            "receiver": {"warehouse_id": receiver.to_string(), "code": "WH-3423", "arrived_at": "2025-02-18T15:30:00Z"},
            "elapsed_seconds": 16200,
            "products": [
                {"product_id": p1.to_string(), "sent": 100, "received": 90, "difference": 10},
                {"product_id": p2.to_string(), "sent": 50, "received": 50, "difference": 0}
            ],
            "quantity_sent": 150,
            "quantity_received": 140,
            "quantity_difference": 10
        })
    );

    // Read again, the answer comes from the cache as stored text: the same
    // JSON, with the same content type.
    let response = app
        .http
        .get(app.url(&movement_path(delivered)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let again: Value = response.json().await.unwrap();
    assert_eq!(again, body, "a cached answer is the answer");
    let (_, stock_first) = app.get_json(&stock_path(receiver, p2)).await;
    let (_, stock_again) = app.get_json(&stock_path(receiver, p2)).await;
    assert_eq!(stock_first, stock_again);
    assert_eq!(stock_again["quantity"], 50);

    let (status, body) = app.get_json(&movement_path(arrived_only)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "arrived_without_departure");
    assert_eq!(body["sender"], Value::Null);
    assert_eq!(body["receiver"]["arrived_at"], "2025-02-18T14:34:56Z");
    assert_eq!(body["quantity_sent"], Value::Null);
    assert_eq!(body["quantity_received"], 5);
    assert_eq!(body["products"][0]["difference"], Value::Null);

    // Stock: the sender is negative (shown as 0), the receiver positive, an
    // unknown pair 0.
    let (status, body) = app.get_json(&stock_path(sender, p1)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"warehouse_id": sender.to_string(), "product_id": p1.to_string(), "quantity": 0})
    );
    assert_eq!(
        app.stock(sender, p1).await,
        Some(-110),
        "stored exactly, negative"
    );
    let (_, body) = app.get_json(&stock_path(receiver, p1)).await;
    assert_eq!(body["quantity"], 95);
    let (status, body) = app
        .get_json(&stock_path(Uuid::new_v4(), Uuid::new_v4()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["quantity"], 0);
    app.stop().await;
}

/// An unknown movement's 404 is cached (as absent, version 0) for a short
/// while only, and its first event still makes it appear at once: the batch
/// deletes it before its COMMIT.
#[tokio::test]
async fn a_cached_404_gives_way_to_the_first_event_of_the_movement() {
    let app = TestApp::spawn(1).await;
    // The entry as Redis holds it, read with redis-cli.
    let redis_url = app.settings.redis.url.expose().to_owned();
    let redis = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", redis_url.as_str()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    };
    let (movement, warehouse, product) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // Reads use the cache once this instance believes Redis for the current
    // epoch, which start-up waits for only a moment: a 404 answered before
    // that is not cached, so the reads repeat until one is.
    let key = eventually(10, || async {
        let (status, body) = app.get_json(&movement_path(movement)).await;
        assert_eq!(
            (status, &body["error"]),
            (404, &json!("not_found")),
            "{body}"
        );
        let key = app.cache_epoch().await.movement_key(movement);
        // The 404 is cached as absent at version 0.
        (redis(&["GET", &key]) == "0:null").then_some(key)
    })
    .await;
    let ttl: u64 = redis(&["TTL", &key]).parse().unwrap();
    assert!(
        (1..=app.settings.redis.absent_ttl_secs).contains(&ttl),
        "a cached 404 lives redis.absent_ttl_secs at most, not {ttl} s"
    );

    app.produce(
        0,
        vec![Ev::departure(movement, warehouse, product, 7).bytes()],
    )
    .await;
    app.wait_consumed().await;
    let (status, body) = app.get_json(&movement_path(movement)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quantity_sent"], 7);
    let cached = redis(&["GET", &key]);
    let (version, payload) = cached.split_once(':').expect("cached again");
    assert!(version.parse::<i64>().unwrap() >= 1, "{cached}");
    assert_ne!(payload, "null");
    app.stop().await;
}

#[tokio::test]
async fn errors_are_json_with_stable_codes() {
    let app = TestApp::spawn(1).await;
    let cases = [
        ("/api/movements/not-a-uuid", 400, "invalid_id"),
        ("/api/movements/12345", 400, "invalid_id"),
        (
            &format!("/api/warehouses/nope/products/{}", Uuid::new_v4()),
            400,
            "invalid_id",
        ),
        (
            &format!("/api/warehouses/{}/products/nope", Uuid::new_v4()),
            400,
            "invalid_id",
        ),
        (&movement_path(Uuid::new_v4()), 404, "not_found"),
        ("/api/nothing-here", 404, "not_found"),
    ];
    for (path, expected_status, code) in cases {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected_status, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{path}: {content_type}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
    let response = app
        .http
        .post(app.url(&movement_path(Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    app.stop().await;
}

#[tokio::test]
async fn database_gone_gives_503_unavailable_and_not_ready() {
    let app = TestApp::spawn(1).await;
    let (status, body) = app.get_json("/health/live").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("live")));
    // Ready once the consumer runs.
    let ready = eventually(5, || async {
        match app.get_json("/health/ready").await {
            (200, body) => Ok(body),
            (status, body) => Err(format!("ready: {status} {body}")),
        }
    })
    .await;
    assert_eq!(ready["database"], "up");
    assert_eq!(ready["cache"], "up");
    assert_eq!(ready["partitions"][0]["running"], true);

    // Take the database away: queries answer 503, readiness says why.
    let name = app
        .settings
        .postgres
        .url
        .expose()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let (admin, connection) = tokio_postgres::connect(
        "postgres://postgres@127.0.0.1:5432/postgres",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
    let (status, body) = app.get_json(&movement_path(Uuid::new_v4())).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    let (status, body) = app
        .get_json(&stock_path(Uuid::new_v4(), Uuid::new_v4()))
        .await;
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")));
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["database"], "down");
    app.stop().await;
}

#[tokio::test]
async fn served_openapi_matches_the_committed_file_and_docs_are_served() {
    let app = TestApp::spawn(1).await;
    let (status, served) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let committed: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert!(
        served == committed,
        "docs/openapi.json is out of date: run `make openapi` and commit the result"
    );
    assert!(served["paths"]["/api/movements/{movement_id}"]["get"]["responses"]["404"].is_object());
    let example = &served["components"]["schemas"]["Movement"]["example"];
    assert_eq!(example["status"], "delivered", "examples are published");

    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    app.stop().await;
}
