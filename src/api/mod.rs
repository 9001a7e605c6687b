//! The HTTP API (poem): queries, health, metrics and the OpenAPI description,
//! served until the stop signal.

use std::sync::Arc;

use deadpool_postgres::Pool;
use poem::{EndpointExt, Route, Server, get, handler, listener::TcpAcceptor, web::Data};
use tokio_util::sync::CancellationToken;

use crate::{cache::Cache, consumer::status::PartitionStatus, metrics::Metrics};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct State {
    pub pool: Pool,
    pub cache: Cache,
    pub metrics: Arc<Metrics>,
    pub statuses: Vec<Arc<PartitionStatus>>,
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    let app = Route::new()
        .at("/metrics", get(metrics))
        .at("/health/live", get(live))
        .data(state);
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            app,
            shutdown.cancelled_owned(),
            Some(crate::startup::GRACE_PERIOD),
        )
        .await
}

#[handler]
fn metrics(Data(state): Data<&State>) -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

#[handler]
fn live() -> &'static str {
    "{\"status\":\"live\"}"
}
