//! `verify`: recomputes every stock total from the stored events and lists the
//! rows of the stock table that disagree, the check an operator runs after an
//! incident.

use uuid::Uuid;

use super::{Client, StoreError};

const VERIFY_COUNTS: &str = include_str!("../../sql/queries/verify_counts.sql");
const VERIFY_STOCK: &str = include_str!("../../sql/queries/verify_stock.sql");

/// A (warehouse, product) whose stored stock is not the sum of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub warehouse_id: Uuid,
    pub product_id: Uuid,
    /// Arrivals minus departures over the stored events.
    pub expected: i64,
    /// The stock table's value, `None` when the row is missing.
    pub stored: Option<i64>,
}

/// The result of one verification.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub stock_rows: i64,
    pub events: i64,
    pub mismatches: Vec<Mismatch>,
}

/// Compares the stock table with the totals recomputed from `movement_events`.
pub async fn stock(client: &Client) -> Result<Report, StoreError> {
    let counts = client.query_one(VERIFY_COUNTS, &[]).await?;
    let stmt = client.prepare_cached(VERIFY_STOCK).await?;
    let mismatches = client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| Mismatch {
            warehouse_id: r.get(0),
            product_id: r.get(1),
            expected: r.get(2),
            stored: r.get(3),
        })
        .collect();
    Ok(Report {
        stock_rows: counts.get(0),
        events: counts.get(1),
        mismatches,
    })
}
