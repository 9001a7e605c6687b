//! The HTTP API (poem + poem-openapi): the queries, health, metrics, the
//! OpenAPI description and Swagger UI. Every error leaves as the JSON body of
//! docs/SPEC.md section 5, including poem's own path and routing errors.

pub mod cached;
pub mod health;
pub mod json;
pub mod model;
pub mod queries;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use poem::{
    Endpoint, EndpointExt, IntoResponse, Response, Route, Server, get, handler, http::StatusCode,
    listener::TcpAcceptor, web::Data,
};
use poem_openapi::OpenApiService;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    app::shutdown::GRACE_PERIOD, cache::Cache, config::Role, ingest::status::Partitions,
    metrics::Metrics, store::Store,
};
use model::ErrorBody;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct State {
    pub store: Store,
    pub cache: Cache,
    pub metrics: Arc<Metrics>,
    pub partitions: Partitions,
    /// What this instance runs: a consumer-only instance serves health and
    /// metrics, not the queries.
    pub role: Role,
    /// Longest time a request may take before it is answered 503.
    pub request_timeout: Duration,
}

type Apis = (queries::QueryApi, health::HealthApi);

/// The OpenAPI service describing every documented endpoint.
pub fn openapi() -> OpenApiService<Apis, ()> {
    service((queries::QueryApi, health::HealthApi)).description(
        "Movements of goods between warehouses and the resulting stock, \
         built from the warehouses' Kafka events.",
    )
}

/// `apis` as this service, named and versioned.
fn service<T: poem_openapi::OpenApi>(apis: T) -> OpenApiService<T, ()> {
    OpenApiService::new(apis, "warehouse-monitor", env!("CARGO_PKG_VERSION"))
}

/// The OpenAPI document as served at `/openapi.json` (and committed as
/// `docs/openapi.json`).
pub fn spec_json() -> String {
    openapi().spec()
}

/// The whole HTTP application.
pub fn app(state: State) -> impl Endpoint {
    let routes = if state.role.serves_queries() {
        let api = openapi();
        Route::new()
            .at("/openapi.json", api.spec_endpoint())
            .nest("/docs", api.swagger_ui())
            .at("/metrics", get(metrics_endpoint))
            .nest("/", api)
    } else {
        Route::new()
            .at("/metrics", get(metrics_endpoint))
            .nest("/", service(health::HealthApi))
    };
    let metrics = Arc::clone(&state.metrics);
    let limit = state.request_timeout;
    routes
        .around(move |endpoint, request| {
            let metrics = Arc::clone(&metrics);
            async move {
                // The URI is shared bytes: keeping it costs no copy of the path.
                let uri = request.uri().clone();
                let route = route_label(uri.path());
                let started = Instant::now();
                // A hung dependency must not hang the client: answer 503 in time.
                let response = match tokio::time::timeout(limit, endpoint.call(request)).await {
                    Ok(Ok(response)) => response.into_response(),
                    Ok(Err(err)) => error_response(&err, uri.path()),
                    Err(_) => timed_out(limit),
                };
                metrics.http_request(route, response.status().as_u16(), started.elapsed());
                Ok(response)
            }
        })
        // One Arc in each request's extensions, not a clone of every pool and client.
        .data(Arc::new(state))
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app(state), shutdown.cancelled_owned(), Some(GRACE_PERIOD))
        .await
}

#[handler]
fn metrics_endpoint(Data(state): Data<&Arc<State>>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// Turns any error poem or poem-openapi raises into the JSON error body.
fn error_response(err: &poem::Error, path: &str) -> Response {
    let status = err.status();
    let (code, message) = match status {
        // Only a path segment that is not a UUID is `invalid_id`; any other
        // refused request says what poem found wrong with it.
        StatusCode::BAD_REQUEST => match invalid_id_message(path) {
            Some(message) => ("invalid_id", message),
            None => ("bad_request", err.to_string()),
        },
        StatusCode::NOT_FOUND => ("not_found", "no such resource".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed".to_owned()),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "service unavailable".to_owned()),
        _ => {
            tracing::error!(error = %err, %status, "request failed");
            ("internal", "internal error".to_owned())
        }
    };
    let body = poem_openapi::payload::Json(ErrorBody::new(code, message));
    let mut response = body.with_status(status).into_response();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        // Every path serves GET alone; RFC 9110 asks a 405 to say so.
        response.headers_mut().insert(
            poem::http::header::ALLOW,
            "GET".parse().expect("a valid header value"),
        );
    }
    response
}

/// The answer to a request that ran out of time.
fn timed_out(limit: Duration) -> Response {
    tracing::warn!(?limit, "request timed out");
    let message = format!(
        "no answer within http.request_timeout_ms ({} ms); retry later",
        limit.as_millis()
    );
    let body = poem_openapi::payload::Json(ErrorBody::new("unavailable", message));
    body.with_status(StatusCode::SERVICE_UNAVAILABLE)
        .into_response()
}

/// Names the path segment that is not a UUID; `None` when every id of the
/// path is one (the request was refused for another reason).
fn invalid_id_message(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let named: Vec<(&str, &str)> = match segments.as_slice() {
        ["", "api", "movements", id] => vec![("movement_id", id)],
        ["", "api", "warehouses", w, "products", p] => vec![("warehouse_id", w), ("product_id", p)],
        _ => vec![],
    };
    named
        .into_iter()
        .find(|(_, value)| Uuid::parse_str(value).is_err())
        .map(|(name, value)| {
            let shown: String = value.chars().take(64).collect();
            format!("{name} is not a UUID: {shown:?}")
        })
}

/// Low-cardinality route label: the path template, never the ids in it.
pub fn route_label(path: &str) -> &'static str {
    let mut segments = path.trim_end_matches('/').split('/');
    // Up to six segments are told apart; a longer path is "other".
    let mut parts = [""; 7];
    let mut n = 0;
    for segment in segments.by_ref().take(parts.len()) {
        parts[n] = segment;
        n += 1;
    }
    if n == parts.len() {
        return if parts[..2] == ["", "docs"] {
            "/docs"
        } else {
            "other"
        };
    }
    match &parts[..n] {
        ["", "api", "movements", _] => "/api/movements/{movement_id}",
        ["", "api", "warehouses", _, "products", _] => {
            "/api/warehouses/{warehouse_id}/products/{product_id}"
        }
        ["", "health", "live"] => "/health/live",
        ["", "health", "ready"] => "/health/ready",
        ["", "metrics"] => "/metrics",
        ["", "openapi.json"] => "/openapi.json",
        ["", "docs", ..] => "/docs",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn invalid_id_names_the_bad_segment() {
        let ok = "c6290746-790e-43fa-8270-014dc90e02e0";
        assert_eq!(
            super::invalid_id_message("/api/movements/abc").as_deref(),
            Some("movement_id is not a UUID: \"abc\"")
        );
        assert_eq!(
            super::invalid_id_message(&format!("/api/warehouses/{ok}/products/x")).as_deref(),
            Some("product_id is not a UUID: \"x\"")
        );
        assert!(
            super::invalid_id_message(&format!("/api/warehouses/x/products/{ok}"))
                .is_some_and(|m| m.starts_with("warehouse_id"))
        );
        // Every id a UUID: the request was refused for something else.
        assert_eq!(
            super::invalid_id_message(&format!("/api/movements/{ok}")),
            None
        );
        assert_eq!(super::invalid_id_message("/health/ready"), None);
    }

    #[test]
    fn route_labels_hide_ids() {
        assert_eq!(
            route_label("/api/movements/abc"),
            "/api/movements/{movement_id}"
        );
        assert_eq!(
            route_label("/api/warehouses/a/products/b"),
            "/api/warehouses/{warehouse_id}/products/{product_id}"
        );
        assert_eq!(route_label("/docs/"), "/docs");
        assert_eq!(route_label("/api/movements/a/b"), "other");
        assert_eq!(route_label("/nope"), "other");
    }
}
