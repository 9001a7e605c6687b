//! The two queries of docs/SPEC.md section 5, read through the cache: a hit answers
//! from Redis, with the cached JSON text as it is; a miss takes a lease on the
//! key, reads PostgreSQL (guarded, when leased), serializes the answer once,
//! and fills the cache with that text if the lease is still there
//! (docs/SPEC.md section 8).

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, Tags, param::Path, payload::Json};
use uuid::Uuid;

use super::{
    State,
    json::JsonText,
    model::{ErrorBody, Movement, Stock},
};
use crate::{
    cache::{self, Lease},
    store::StoreError,
    throttle::Throttle,
};

#[derive(Debug, Tags)]
enum Tag {
    /// Movements and stock.
    Queries,
}

/// The query endpoints.
#[derive(Debug)]
pub struct QueryApi;

/// Answer of `GET /api/movements/{movement_id}`.
#[derive(Debug, ApiResponse)]
pub enum MovementResponse {
    /// The movement as recorded so far.
    #[oai(status = 200)]
    Ok(JsonText<Movement>),
    /// `invalid_id`: the path segment is not a UUID.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `not_found`: no event of this movement was recorded.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// `unavailable`: the database cannot answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// Answer of `GET /api/warehouses/{warehouse_id}/products/{product_id}`.
#[derive(Debug, ApiResponse)]
pub enum StockResponse {
    /// The stock (0 for a pair never seen).
    #[oai(status = 200)]
    Ok(JsonText<Stock>),
    /// `invalid_id`: a path segment is not a UUID.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `unavailable`: the database cannot answer.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn unavailable(e: &StoreError) -> Json<ErrorBody> {
    static LOGGED: Throttle = Throttle::per_second();
    if let Some(suppressed) = LOGGED.allow() {
        tracing::warn!(error = %e, suppressed, "database unavailable for a query");
    }
    Json(ErrorBody::new(
        "unavailable",
        "the database cannot answer right now; retry later",
    ))
}

#[OpenApi(tag = "Tag::Queries")]
impl QueryApi {
    /// One movement: its two sides, times and product quantities.
    #[oai(
        path = "/api/movements/:movement_id",
        method = "get",
        operation_id = "get_movement"
    )]
    async fn movement(
        &self,
        Data(state): Data<&Arc<State>>,
        /// The movement id (UUID).
        movement_id: Path<Uuid>,
    ) -> poem::Result<MovementResponse> {
        let id = movement_id.0;
        let key = cache::movement_key(id);
        // A cached `null` is a movement known to be absent (docs/SPEC.md
        // section 8): a 404 answered without PostgreSQL.
        match state.cache.get_json(&key).await {
            Some(hit) if hit == "null" => return Ok(not_found(id)),
            Some(hit) => return Ok(MovementResponse::Ok(JsonText::trusted(hit))),
            None => {}
        }
        // The miss path is boxed: its PostgreSQL future is large, and every
        // layer of poem above this handler moves the handler's future.
        Box::pin(movement_from_store(state, id, &key)).await
    }

    /// Current stock of one product in one warehouse.
    #[oai(
        path = "/api/warehouses/:warehouse_id/products/:product_id",
        method = "get",
        operation_id = "get_stock"
    )]
    async fn stock(
        &self,
        Data(state): Data<&Arc<State>>,
        /// The warehouse id (UUID).
        warehouse_id: Path<Uuid>,
        /// The product id (UUID).
        product_id: Path<Uuid>,
    ) -> poem::Result<StockResponse> {
        let (warehouse_id, product_id) = (warehouse_id.0, product_id.0);
        let key = cache::stock_key(warehouse_id, product_id);
        if let Some(hit) = state.cache.get_json(&key).await {
            return Ok(StockResponse::Ok(JsonText::trusted(hit)));
        }
        Box::pin(stock_from_store(state, warehouse_id, product_id, &key)).await
    }
}

/// A movement the cache could not answer: take a lease, read it (guarded
/// when leased), fill the cache with it.
async fn movement_from_store(state: &State, id: Uuid, key: &str) -> poem::Result<MovementResponse> {
    let lease = state.cache.claim(key).await;
    let read = match state.store.movement(id, lease.is_some()).await {
        Ok(read) => read,
        Err(e) => {
            release(state, lease).await;
            return Ok(MovementResponse::Unavailable(unavailable(&e)));
        }
    };
    Ok(match read.value {
        Some(stored) => {
            let json = JsonText::encode(&Movement::from(&stored))
                .map_err(poem::error::InternalServerError)?;
            offer(state, lease, read.cacheable, stored.version, json.as_str()).await;
            MovementResponse::Ok(json)
        }
        None => {
            // Version 0: a movement known to be absent. The batch that
            // records it deletes the key before its COMMIT.
            offer(state, lease, read.cacheable, 0, "null").await;
            not_found(id)
        }
    })
}

/// A stock pair the cache could not answer: take a lease, read it (guarded
/// when leased), fill the cache with it.
async fn stock_from_store(
    state: &State,
    warehouse_id: Uuid,
    product_id: Uuid,
    key: &str,
) -> poem::Result<StockResponse> {
    let lease = state.cache.claim(key).await;
    let read = match state
        .store
        .stock(warehouse_id, product_id, lease.is_some())
        .await
    {
        Ok(read) => read,
        Err(e) => {
            release(state, lease).await;
            return Ok(StockResponse::Unavailable(unavailable(&e)));
        }
    };
    let (quantity, version) = read.value;
    let stock = Stock {
        warehouse_id,
        product_id,
        quantity: quantity.max(0),
    };
    let json = JsonText::encode(&stock).map_err(poem::error::InternalServerError)?;
    offer(state, lease, read.cacheable, version, json.as_str()).await;
    Ok(StockResponse::Ok(json))
}

/// Fills the cache under `lease` when the read may fill it (`cacheable`),
/// otherwise gives the lease back.
async fn offer(state: &State, lease: Option<Lease>, cacheable: bool, version: i64, json: &str) {
    match lease {
        Some(lease) if cacheable => state.cache.fill(lease, version, json).await,
        lease => release(state, lease).await,
    }
}

/// Gives a lease back without a value.
async fn release(state: &State, lease: Option<Lease>) {
    if let Some(lease) = lease {
        state.cache.release(lease).await;
    }
}

fn not_found(id: Uuid) -> MovementResponse {
    MovementResponse::NotFound(Json(ErrorBody::new(
        "not_found",
        format!("no movement {id} has been recorded"),
    )))
}
