//! The two queries of docs/SPEC.md section 5: each says which key and
//! which read, and [`super::cached::read_through`] answers it through the
//! cache.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, Tags, param::Path, payload::Json};
use uuid::Uuid;

use super::{
    State,
    cached::{Answer, Fresh, QueryError, read_through},
    json::JsonText,
    model::{ErrorBody, Movement, Stock},
};
use crate::{cache::Key, throttle::Throttle};

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

/// 503 for a database that did not answer; an answer that could not be
/// serialized is a 500 (logged by the API's error handler).
fn unavailable(e: QueryError) -> poem::Result<Json<ErrorBody>> {
    let e = match e {
        QueryError::Store(e) => e,
        QueryError::Encode(e) => return Err(poem::error::InternalServerError(e)),
    };
    static LOGGED: Throttle = Throttle::per_second();
    if let Some(suppressed) = LOGGED.allow() {
        tracing::warn!(error = %e, suppressed, "database unavailable for a query");
    }
    Ok(Json(ErrorBody::new(
        "unavailable",
        "the database cannot answer right now; retry later",
    )))
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
        let read = |guard| async move {
            let read = state.store.movement(id, guard).await?;
            let value = match read.value {
                Some(stored) => Some((stored.version, JsonText::encode(&Movement::from(&stored))?)),
                None => None,
            };
            Ok(Fresh {
                value,
                cacheable: read.cacheable,
            })
        };
        Ok(match read_through(state, Key::Movement(id), read).await {
            Ok(Answer::Found(json)) => MovementResponse::Ok(json),
            Ok(Answer::Absent) => not_found(id),
            Err(e) => MovementResponse::Unavailable(unavailable(e)?),
        })
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
        let key = Key::Stock {
            warehouse_id,
            product_id,
        };
        let read = |guard| async move {
            let read = state.store.stock(warehouse_id, product_id, guard).await?;
            let (quantity, version) = read.value;
            let stock = Stock {
                warehouse_id,
                product_id,
                quantity: quantity.max(0),
            };
            Ok(Fresh {
                value: Some((version, JsonText::encode(&stock)?)),
                cacheable: read.cacheable,
            })
        };
        Ok(match read_through(state, key, read).await {
            Ok(Answer::Found(json)) => StockResponse::Ok(json),
            // Stock is never absent: a pair never seen is 0.
            Ok(Answer::Absent) => StockResponse::Ok(
                JsonText::encode(&Stock {
                    warehouse_id,
                    product_id,
                    quantity: 0,
                })
                .map_err(poem::error::InternalServerError)?,
            ),
            Err(e) => StockResponse::Unavailable(unavailable(e)?),
        })
    }
}

fn not_found(id: Uuid) -> MovementResponse {
    MovementResponse::NotFound(Json(ErrorBody::new(
        "not_found",
        format!("no movement {id} has been recorded"),
    )))
}
