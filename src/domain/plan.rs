//! What one batch of records means, decided without I/O: which events are new,
//! which are duplicates, which conflict with what is stored or with an earlier
//! record of the same batch, and the aggregated changes the store must write.
//!
//! The ingest stage reads the current state of the batch's movements once
//! (under locks, in the batch transaction), hands it to [`plan`], and gives the
//! resulting [`Plan`] to the store, which writes it with a few set-based
//! statements. Records are judged in offset order, so the first event
//! of a key or of a movement's side always stands, whatever the batch size.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap},
};

use time::OffsetDateTime;
use uuid::Uuid;

use super::event::{EventKind, MovementEvent, RejectReason, Rejection};

/// The key of an event (docs/SPEC.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    pub movement_id: Uuid,
    pub product_id: Uuid,
    pub kind: EventKind,
}

impl EventKey {
    pub fn of(event: &MovementEvent) -> Self {
        Self {
            movement_id: event.movement_id,
            product_id: event.product_id,
            kind: event.kind,
        }
    }
}

/// The part of an event that decides between duplicate and conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    pub warehouse_id: Uuid,
    pub quantity: i64,
    pub happened_at: OffsetDateTime,
}

impl Content {
    pub fn of(event: &MovementEvent) -> Self {
        Self {
            warehouse_id: event.warehouse_id,
            quantity: event.quantity,
            happened_at: event.happened_at,
        }
    }
}

/// The warehouses a movement is known to leave from and arrive at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sides {
    pub sender: Option<Uuid>,
    pub receiver: Option<Uuid>,
}

/// What is already stored for the movements a batch touches.
#[derive(Debug, Default)]
pub struct StoredState {
    pub events: HashMap<EventKey, Content>,
    pub movements: HashMap<Uuid, Sides>,
}

/// A change of stock for one (warehouse, product).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta {
    pub warehouse_id: Uuid,
    pub product_id: Uuid,
    pub delta: i64,
}

/// One side of a movement as learned from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub warehouse_id: Uuid,
    pub code: String,
    /// Earliest departure (sender) or latest arrival (receiver) within the batch.
    pub at: OffsetDateTime,
}

/// What a batch adds to one movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementUpdate {
    pub movement_id: Uuid,
    pub sender: Option<Side>,
    pub receiver: Option<Side>,
}

/// Everything the store has to write for a batch.
#[derive(Debug, Default)]
pub struct Plan {
    /// New events, with the index of their record in the batch.
    pub accepted: Vec<(usize, MovementEvent)>,
    /// Records that repeat a stored or earlier event exactly.
    pub duplicates: usize,
    /// Records that are not applied, with the index of their record and why.
    pub rejected: Vec<(usize, Rejection)>,
    /// Net stock change per (warehouse, product), sorted by key.
    pub stock: Vec<StockDelta>,
    /// Movement sides learned, sorted by movement id.
    pub movements: Vec<MovementUpdate>,
}

impl Plan {
    /// Number of rejected records per reason.
    pub fn rejected_by_reason(&self) -> BTreeMap<RejectReason, u64> {
        let mut counts = BTreeMap::new();
        for (_, rejection) in &self.rejected {
            *counts.entry(rejection.reason).or_default() += 1;
        }
        counts
    }
}

/// The distinct movements of the decodable records, sorted.
pub fn movement_ids(decoded: &[Result<MovementEvent, Rejection>]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = decoded
        .iter()
        .filter_map(|d| d.as_ref().ok().map(|e| e.movement_id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Judges every decoded record, in order, against the stored state and the
/// records before it.
pub fn plan(decoded: Vec<Result<MovementEvent, Rejection>>, stored: &StoredState) -> Plan {
    let mut plan = Plan::default();
    let mut seen: HashMap<EventKey, Content> = HashMap::new();
    let mut sides: HashMap<Uuid, Sides> = HashMap::new();
    let mut stock: BTreeMap<(Uuid, Uuid), i64> = BTreeMap::new();
    let mut updates: BTreeMap<Uuid, MovementUpdate> = BTreeMap::new();

    for (index, decoded) in decoded.into_iter().enumerate() {
        let event = match decoded {
            Ok(event) => event,
            Err(rejection) => {
                plan.rejected.push((index, rejection));
                continue;
            }
        };
        let key = EventKey::of(&event);
        let content = Content::of(&event);
        if let Some(first) = stored.events.get(&key).or_else(|| seen.get(&key)) {
            if *first == content {
                plan.duplicates += 1;
            } else {
                plan.rejected.push((
                    index,
                    conflict(format!(
                        "{} differs from the recorded event",
                        describe(&key)
                    )),
                ));
            }
            continue;
        }
        let movement = sides.entry(event.movement_id).or_insert_with(|| {
            stored
                .movements
                .get(&event.movement_id)
                .copied()
                .unwrap_or_default()
        });
        if let Some(reason) = contradiction(movement, &event) {
            plan.rejected.push((index, conflict(reason)));
            continue;
        }
        match event.kind {
            EventKind::Departure => movement.sender = Some(event.warehouse_id),
            EventKind::Arrival => movement.receiver = Some(event.warehouse_id),
        }
        let signed = match event.kind {
            EventKind::Departure => -event.quantity,
            EventKind::Arrival => event.quantity,
        };
        *stock
            .entry((event.warehouse_id, event.product_id))
            .or_default() += signed;
        learn_side(&mut updates, &event);
        seen.insert(key, content);
        plan.accepted.push((index, event));
    }

    plan.stock = stock
        .into_iter()
        .map(|((warehouse_id, product_id), delta)| StockDelta {
            warehouse_id,
            product_id,
            delta,
        })
        .collect();
    plan.movements = updates.into_values().collect();
    plan
}

fn conflict(detail: String) -> Rejection {
    Rejection::new(RejectReason::Conflict, detail)
}

fn describe(key: &EventKey) -> String {
    format!(
        "{} of product {} in movement {}",
        key.kind.as_str(),
        key.product_id,
        key.movement_id
    )
}

/// Why `event` contradicts what its movement already has, if it does.
fn contradiction(movement: &Sides, event: &MovementEvent) -> Option<String> {
    let id = event.movement_id;
    let wh = event.warehouse_id;
    match event.kind {
        EventKind::Departure => match (movement.sender, movement.receiver) {
            (Some(sender), _) if sender != wh => Some(format!(
                "movement {id} departs from warehouse {sender}, not {wh}"
            )),
            (_, Some(receiver)) if receiver == wh => Some(format!(
                "movement {id} arrives at warehouse {wh}; it cannot also depart from it"
            )),
            _ => None,
        },
        EventKind::Arrival => match (movement.sender, movement.receiver) {
            (_, Some(receiver)) if receiver != wh => Some(format!(
                "movement {id} arrives at warehouse {receiver}, not {wh}"
            )),
            (Some(sender), _) if sender == wh => Some(format!(
                "movement {id} departs from warehouse {wh}; it cannot also arrive there"
            )),
            _ => None,
        },
    }
}

fn learn_side(updates: &mut BTreeMap<Uuid, MovementUpdate>, event: &MovementEvent) {
    let update = updates
        .entry(event.movement_id)
        .or_insert_with(|| MovementUpdate {
            movement_id: event.movement_id,
            sender: None,
            receiver: None,
        });
    // The sender keeps its earliest departure, the receiver its latest arrival.
    let (slot, replaces) = match event.kind {
        EventKind::Departure => (&mut update.sender, Ordering::Less),
        EventKind::Arrival => (&mut update.receiver, Ordering::Greater),
    };
    match slot {
        Some(side) if event.happened_at.cmp(&side.at) == replaces => side.at = event.happened_at,
        Some(_) => {}
        None => {
            *slot = Some(Side {
                warehouse_id: event.warehouse_id,
                code: event.source.as_str().to_owned(),
                at: event.happened_at,
            })
        }
    }
}

#[cfg(test)]
mod tests;
