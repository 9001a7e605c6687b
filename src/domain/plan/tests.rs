//! Unit tests of batch planning: duplicates, conflicts, movement rules, deltas.

use time::macros::datetime;

use super::*;
use crate::domain::event::WarehouseCode;

const A: Uuid = Uuid::from_u128(0xa);
const B: Uuid = Uuid::from_u128(0xb);
const C: Uuid = Uuid::from_u128(0xc);
const M: Uuid = Uuid::from_u128(0x100);
const P1: Uuid = Uuid::from_u128(0x201);
const P2: Uuid = Uuid::from_u128(0x202);

fn ev(kind: EventKind, warehouse: Uuid, product: Uuid, quantity: i64) -> MovementEvent {
    MovementEvent {
        message_id: Uuid::from_u128(0x999),
        source: WarehouseCode::parse(&format!("WH-{}", warehouse.as_u128())).unwrap(),
        emitted_at: None,
        movement_id: M,
        warehouse_id: warehouse,
        happened_at: datetime!(2025-02-18 12:00 UTC),
        kind,
        product_id: product,
        quantity,
    }
}

fn ok(events: Vec<MovementEvent>) -> Vec<Result<MovementEvent, Rejection>> {
    events.into_iter().map(Ok).collect()
}

fn reasons(plan: &Plan) -> Vec<(usize, RejectReason)> {
    plan.rejected.iter().map(|(i, r)| (*i, r.reason)).collect()
}

#[test]
fn departure_and_arrival_move_stock_on_both_sides() {
    let plan = plan(
        ok(vec![
            ev(EventKind::Departure, A, P1, 10),
            ev(EventKind::Arrival, B, P1, 10),
        ]),
        &StoredState::default(),
    );
    assert_eq!(plan.accepted.len(), 2);
    assert_eq!(
        plan.stock,
        vec![
            StockDelta {
                warehouse_id: A,
                product_id: P1,
                delta: -10
            },
            StockDelta {
                warehouse_id: B,
                product_id: P1,
                delta: 10
            },
        ]
    );
    let update = &plan.movements[0];
    assert_eq!(update.sender.as_ref().unwrap().warehouse_id, A);
    assert_eq!(update.receiver.as_ref().unwrap().warehouse_id, B);
}

#[test]
fn exact_repeat_in_batch_is_a_duplicate_and_changed_repeat_a_conflict() {
    let plan = plan(
        ok(vec![
            ev(EventKind::Departure, A, P1, 10),
            ev(EventKind::Departure, A, P1, 10),
            ev(EventKind::Departure, A, P1, 11),
        ]),
        &StoredState::default(),
    );
    assert_eq!(plan.accepted.len(), 1);
    assert_eq!(plan.duplicates, 1);
    assert_eq!(reasons(&plan), vec![(2, RejectReason::Conflict)]);
    assert_eq!(plan.stock[0].delta, -10);
}

#[test]
fn stored_event_decides_duplicate_or_conflict() {
    let first = ev(EventKind::Arrival, B, P1, 5);
    let mut stored = StoredState::default();
    stored
        .events
        .insert(EventKey::of(&first), Content::of(&first));
    stored.movements.insert(
        M,
        Sides {
            sender: None,
            receiver: Some(B),
        },
    );
    let mut later = first.clone();
    later.happened_at = datetime!(2025-02-19 00:00 UTC);
    let plan = plan(ok(vec![first, later]), &stored);
    assert!(plan.accepted.is_empty());
    assert_eq!(plan.duplicates, 1);
    assert_eq!(reasons(&plan), vec![(1, RejectReason::Conflict)]);
    assert!(plan.stock.is_empty());
}

#[test]
fn departures_of_one_movement_must_share_a_sender() {
    let plan = plan(
        ok(vec![
            ev(EventKind::Departure, A, P1, 1),
            ev(EventKind::Departure, C, P2, 1),
        ]),
        &StoredState::default(),
    );
    assert_eq!(reasons(&plan), vec![(1, RejectReason::Conflict)]);
}

#[test]
fn arrival_at_the_sender_or_at_another_receiver_conflicts() {
    let mut stored = StoredState::default();
    stored.movements.insert(
        M,
        Sides {
            sender: Some(A),
            receiver: Some(B),
        },
    );
    let plan = plan(
        ok(vec![
            ev(EventKind::Arrival, A, P1, 1),
            ev(EventKind::Arrival, C, P1, 1),
            ev(EventKind::Departure, B, P2, 1),
            ev(EventKind::Arrival, B, P2, 1),
        ]),
        &stored,
    );
    assert_eq!(
        reasons(&plan),
        vec![
            (0, RejectReason::Conflict),
            (1, RejectReason::Conflict),
            (2, RejectReason::Conflict)
        ]
    );
    assert_eq!(plan.accepted.len(), 1);
}

#[test]
fn undecodable_records_keep_their_index_and_reason() {
    let decoded = vec![
        Err(Rejection::new(RejectReason::MalformedJson, "x")),
        Ok(ev(EventKind::Departure, A, P1, 3)),
        Err(Rejection::new(RejectReason::InvalidQuantity, "y")),
    ];
    let plan = plan(decoded, &StoredState::default());
    assert_eq!(
        reasons(&plan),
        vec![
            (0, RejectReason::MalformedJson),
            (2, RejectReason::InvalidQuantity)
        ]
    );
    assert_eq!(plan.accepted[0].0, 1);
    let counts = plan.rejected_by_reason();
    assert_eq!(counts[&RejectReason::MalformedJson], 1);
}

#[test]
fn sides_keep_earliest_departure_and_latest_arrival() {
    let mut d1 = ev(EventKind::Departure, A, P1, 1);
    d1.happened_at = datetime!(2025-02-18 12:00 UTC);
    let mut d2 = ev(EventKind::Departure, A, P2, 1);
    d2.happened_at = datetime!(2025-02-18 11:00 UTC);
    let mut a1 = ev(EventKind::Arrival, B, P1, 1);
    a1.happened_at = datetime!(2025-02-18 15:00 UTC);
    let mut a2 = ev(EventKind::Arrival, B, P2, 1);
    a2.happened_at = datetime!(2025-02-18 14:00 UTC);
    let plan = plan(ok(vec![d1, d2, a1, a2]), &StoredState::default());
    let update = &plan.movements[0];
    assert_eq!(
        update.sender.as_ref().unwrap().at,
        datetime!(2025-02-18 11:00 UTC)
    );
    assert_eq!(
        update.receiver.as_ref().unwrap().at,
        datetime!(2025-02-18 15:00 UTC)
    );
}

#[test]
fn movement_ids_are_sorted_and_unique() {
    let decoded = ok(vec![
        ev(EventKind::Departure, A, P1, 1),
        ev(EventKind::Arrival, B, P1, 1),
    ]);
    assert_eq!(movement_ids(&decoded), vec![M]);
}
