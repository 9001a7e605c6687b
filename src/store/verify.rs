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

impl std::fmt::Display for Report {
    /// What `verify` prints: the counts, each mismatch, and a verdict.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "checked {} stock rows against {} events",
            self.stock_rows, self.events
        )?;
        for m in &self.mismatches {
            let stored = m.stored.map_or("missing".to_owned(), |s| s.to_string());
            writeln!(
                f,
                "MISMATCH warehouse {} product {}: events say {}, stock table says {stored}",
                m.warehouse_id, m.product_id, m.expected
            )?;
        }
        match self.mismatches.len() {
            0 => writeln!(f, "no mismatch"),
            n => writeln!(f, "{n} mismatch(es)"),
        }
    }
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
