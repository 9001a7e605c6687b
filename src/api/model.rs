//! The JSON shapes of docs/SPEC.md section 5, documented for OpenAPI and serialisable
//! for the cache, built from what the store returns.

use poem_openapi::{Enum, Object, types::Example};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, macros::datetime};
use uuid::Uuid;

use crate::store::read::{StoredMovement, StoredSide};

/// Where a movement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum MovementStatus {
    /// Departure recorded, arrival not yet.
    InTransit,
    /// Departure and arrival recorded.
    Delivered,
    /// Arrival recorded, departure not (yet).
    ArrivedWithoutDeparture,
}

/// The sending warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, Deserialize)]
pub struct Sender {
    /// Warehouse the goods left from.
    pub warehouse_id: Uuid,
    /// Its code, `WH-` followed by letters or digits.
    pub code: String,
    /// Earliest departure of the movement, RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub departed_at: OffsetDateTime,
}

/// The receiving warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, Deserialize)]
pub struct Receiver {
    /// Warehouse the goods arrived at.
    pub warehouse_id: Uuid,
    /// Its code, `WH-` followed by letters or digits.
    pub code: String,
    /// Latest arrival of the movement, RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub arrived_at: OffsetDateTime,
}

/// One product of a movement.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, Deserialize)]
pub struct ProductLine {
    /// The product.
    pub product_id: Uuid,
    /// Quantity that departed; null until the departure is recorded.
    #[oai(nullable)]
    pub sent: Option<i64>,
    /// Quantity that arrived; null until the arrival is recorded.
    #[oai(nullable)]
    pub received: Option<i64>,
    /// `sent - received` (positive: lost on the way); null unless both are known.
    #[oai(nullable)]
    pub difference: Option<i64>,
}

/// One movement of goods between two warehouses.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct Movement {
    /// The movement, shared by its departure and arrival events.
    pub movement_id: Uuid,
    /// `in_transit`, `delivered` or `arrived_without_departure`.
    pub status: MovementStatus,
    /// Null until a departure is recorded.
    #[oai(nullable)]
    pub sender: Option<Sender>,
    /// Null until an arrival is recorded.
    #[oai(nullable)]
    pub receiver: Option<Receiver>,
    /// `arrived_at - departed_at` in seconds; null unless both are known.
    #[oai(nullable)]
    pub elapsed_seconds: Option<i64>,
    /// One line per product, ordered by product id.
    pub products: Vec<ProductLine>,
    /// Sum of `sent` over the lines that have it; null when none has.
    #[oai(nullable)]
    pub quantity_sent: Option<i64>,
    /// Sum of `received` over the lines that have it; null when none has.
    #[oai(nullable)]
    pub quantity_received: Option<i64>,
    /// `quantity_sent - quantity_received`; null unless every line has both sides.
    #[oai(nullable)]
    pub quantity_difference: Option<i64>,
}

impl Example for Movement {
    fn example() -> Self {
        Movement {
            movement_id: Uuid::from_u128(0xc6290746_790e_43fa_8270_014dc90e02e0),
            status: MovementStatus::Delivered,
            sender: Some(Sender {
                warehouse_id: Uuid::from_u128(0x25718666_6af6_4281_b5a6_3016e36fa557),
                code: "WH-3322".into(),
                departed_at: datetime!(2025-02-18 12:12:56 UTC),
            }),
            receiver: Some(Receiver {
                warehouse_id: Uuid::from_u128(0xc1d70455_7e14_11e9_812a_70106f431230),
                code: "WH-3423".into(),
                arrived_at: datetime!(2025-02-18 14:34:56 UTC),
            }),
            elapsed_seconds: Some(8520),
            products: vec![ProductLine {
                product_id: Uuid::from_u128(0x4705204f_498f_4f96_b4ba_df17fb56bf55),
                sent: Some(100),
                received: Some(100),
                difference: Some(0),
            }],
            quantity_sent: Some(100),
            quantity_received: Some(100),
            quantity_difference: Some(0),
        }
    }
}

/// Current stock of one product in one warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct Stock {
    /// The warehouse.
    pub warehouse_id: Uuid,
    /// The product.
    pub product_id: Uuid,
    /// Units in stock: arrivals minus departures, never below 0; 0 for a pair never seen.
    pub quantity: i64,
}

impl Example for Stock {
    fn example() -> Self {
        Stock {
            warehouse_id: Uuid::from_u128(0xc1d70455_7e14_11e9_812a_70106f431230),
            product_id: Uuid::from_u128(0x4705204f_498f_4f96_b4ba_df17fb56bf55),
            quantity: 150,
        }
    }
}

/// Every error body.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct ErrorBody {
    /// Stable code: `invalid_id`, `bad_request`, `not_found`, `unavailable`, `method_not_allowed` or `internal`.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
}

impl Example for ErrorBody {
    fn example() -> Self {
        ErrorBody {
            error: "invalid_id".into(),
            message: "movement_id is not a UUID: \"abc\"".into(),
        }
    }
}

impl ErrorBody {
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.to_owned(),
            message: message.into(),
        }
    }
}

fn sum(values: impl Iterator<Item = Option<i64>>) -> Option<i64> {
    values.flatten().reduce(|a, b| a + b)
}

impl From<&StoredMovement> for Movement {
    fn from(m: &StoredMovement) -> Self {
        let sender = m.sender.as_ref().map(|s: &StoredSide| Sender {
            warehouse_id: s.warehouse_id,
            code: s.code.clone(),
            departed_at: s.at,
        });
        let receiver = m.receiver.as_ref().map(|s| Receiver {
            warehouse_id: s.warehouse_id,
            code: s.code.clone(),
            arrived_at: s.at,
        });
        let status = match (&sender, &receiver) {
            (Some(_), Some(_)) => MovementStatus::Delivered,
            (None, Some(_)) => MovementStatus::ArrivedWithoutDeparture,
            _ => MovementStatus::InTransit,
        };
        let elapsed_seconds = match (&sender, &receiver) {
            (Some(s), Some(r)) => Some((r.arrived_at - s.departed_at).whole_seconds()),
            _ => None,
        };
        let products: Vec<ProductLine> = m
            .lines
            .iter()
            .map(|(product_id, line)| ProductLine {
                product_id: *product_id,
                sent: line.sent,
                received: line.received,
                difference: line.sent.zip(line.received).map(|(s, r)| s - r),
            })
            .collect();
        let quantity_sent = sum(products.iter().map(|p| p.sent));
        let quantity_received = sum(products.iter().map(|p| p.received));
        let complete = !products.is_empty() && products.iter().all(|p| p.difference.is_some());
        let quantity_difference = if complete {
            quantity_sent.zip(quantity_received).map(|(s, r)| s - r)
        } else {
            None
        };
        Movement {
            movement_id: m.movement_id,
            status,
            sender,
            receiver,
            elapsed_seconds,
            products,
            quantity_sent,
            quantity_received,
            quantity_difference,
        }
    }
}
