//! The two queries the API answers, each in one statement, each returning the
//! row version the cache needs to refuse stale writes.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Client, StoreError};

const READ_MOVEMENT: &str = include_str!("../../sql/queries/read_movement.sql");
const READ_STOCK: &str = include_str!("../../sql/queries/read_stock.sql");

/// One side of a stored movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSide {
    pub warehouse_id: Uuid,
    pub code: String,
    pub at: OffsetDateTime,
}

/// Quantities of one product line; `None` where that event has not been seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredLine {
    pub sent: Option<i64>,
    pub received: Option<i64>,
}

/// A movement as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMovement {
    pub movement_id: Uuid,
    pub version: i64,
    pub sender: Option<StoredSide>,
    pub receiver: Option<StoredSide>,
    /// Product lines ordered by product id.
    pub lines: BTreeMap<Uuid, StoredLine>,
}

/// Reads one movement; `None` when it is unknown.
pub async fn movement(
    client: &Client,
    movement_id: Uuid,
) -> Result<Option<StoredMovement>, StoreError> {
    let stmt = client.prepare_cached(READ_MOVEMENT).await?;
    let rows = client.query(&stmt, &[&movement_id]).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let side = |id: usize, code: usize, at: usize| -> Option<StoredSide> {
        Some(StoredSide {
            warehouse_id: first.get::<_, Option<Uuid>>(id)?,
            code: first.get::<_, Option<String>>(code)?,
            at: first.get::<_, Option<OffsetDateTime>>(at)?,
        })
    };
    let mut movement = StoredMovement {
        movement_id,
        version: first.get(0),
        sender: side(1, 2, 3),
        receiver: side(4, 5, 6),
        lines: BTreeMap::new(),
    };
    for row in &rows {
        let Some(product) = row.get::<_, Option<Uuid>>(7) else {
            continue;
        };
        let line = movement.lines.entry(product).or_default();
        let quantity: i64 = row.get(9);
        match row.get::<_, &str>(8) {
            "departure" => line.sent = Some(quantity),
            _ => line.received = Some(quantity),
        }
    }
    Ok(Some(movement))
}

/// Stock of (warehouse, product) and its version; `(0, 0)` for a pair never seen.
pub async fn stock(
    client: &Client,
    warehouse_id: Uuid,
    product_id: Uuid,
) -> Result<(i64, i64), StoreError> {
    let stmt = client.prepare_cached(READ_STOCK).await?;
    let row = client
        .query_opt(&stmt, &[&warehouse_id, &product_id])
        .await?;
    Ok(row.map_or((0, 0), |r| (r.get(0), r.get(1))))
}
