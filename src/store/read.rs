//! The two queries the API answers, each in one statement, each returning the
//! row's version. A read that may fill the cache is *guarded*: a statement of
//! its own, pipelined just before it, tells whether a batch held the row at
//! that moment; if none did, every batch that locked the row earlier has
//! committed before the read's snapshot (docs/SPEC.md, section 8).

use std::collections::BTreeMap;

use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Client, StoreError, write::lock_key};

const READ_MOVEMENT: &str = include_str!("../../sql/queries/read_movement.sql");
const READ_STOCK: &str = include_str!("../../sql/queries/read_stock.sql");
const GUARD_MOVEMENT: &str = include_str!("../../sql/queries/guard_movement.sql");
const GUARD_STOCK: &str = include_str!("../../sql/queries/guard_stock.sql");

/// A read, and whether it may fill the cache: it was guarded, and no batch
/// held its row when it began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<T> {
    pub value: T,
    pub cacheable: bool,
}

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

/// Reads one movement (`None` when it is unknown), guarded when `guard`.
pub async fn movement(
    client: &Client,
    movement_id: Uuid,
    guard: bool,
) -> Result<Read<Option<StoredMovement>>, StoreError> {
    let stmt = client.prepare_cached(READ_MOVEMENT).await?;
    let key = lock_key(movement_id);
    let check: [&(dyn ToSql + Sync); 1] = [&key];
    let (rows, cacheable) = guarded(
        client,
        guard.then_some((GUARD_MOVEMENT, &check[..])),
        client.query(&stmt, &[&movement_id]),
    )
    .await?;
    Ok(Read {
        value: stored_movement(movement_id, &rows),
        cacheable,
    })
}

/// The movement `rows` of [`READ_MOVEMENT`] hold; `None` when there are none.
fn stored_movement(movement_id: Uuid, rows: &[tokio_postgres::Row]) -> Option<StoredMovement> {
    let first = rows.first()?;
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
    for row in rows {
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
    Some(movement)
}

/// Stock of (warehouse, product) and its version, `(0, 0)` for a pair never
/// seen; guarded when `guard`. A pair never seen is never cacheable: a batch
/// that inserts it holds no row a guard could find.
pub async fn stock(
    client: &Client,
    warehouse_id: Uuid,
    product_id: Uuid,
    guard: bool,
) -> Result<Read<(i64, i64)>, StoreError> {
    let stmt = client.prepare_cached(READ_STOCK).await?;
    let params: [&(dyn ToSql + Sync); 2] = [&warehouse_id, &product_id];
    let (row, unheld) = guarded(
        client,
        guard.then_some((GUARD_STOCK, &params[..])),
        client.query_opt(&stmt, &params),
    )
    .await?;
    Ok(Read {
        cacheable: row.is_some() && unheld,
        value: row.map_or((0, 0), |r| (r.get(0), r.get(1))),
    })
}

/// Runs `read`, and with `check` (a guard statement and its parameters) the
/// guard just before it, pipelined: polled first, so sent first, so the
/// read's snapshot follows it. Returns what `read` returned and whether the
/// guard passed: it answered no row or `true`. A guard that failed (a batch
/// holds the row: 55P03, or any other error), and no guard at all, only mean
/// that the read is not cached.
async fn guarded<T>(
    client: &Client,
    check: Option<(&str, &[&(dyn ToSql + Sync)])>,
    read: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<(T, bool), StoreError> {
    let Some((sql, params)) = check else {
        return Ok((read.await?, false));
    };
    let stmt = client.prepare_cached(sql).await?;
    let (answer, value) = tokio::join!(client.query_opt(&stmt, params), read);
    let passed = answer
        .map(|row| row.is_none_or(|r| r.get::<_, bool>(0)))
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "guard refused; the read is not cached");
            false
        });
    Ok((value?, passed))
}
