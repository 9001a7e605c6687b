//! A movement's two events, in either order, on any partition; duplicates and
//! conflicting repeats.

use uuid::Uuid;

use crate::support::helpers::{Ev, Rejected, TestApp};

struct Movement {
    id: Uuid,
    sender: Uuid,
    receiver: Uuid,
    product: Uuid,
}

fn movement() -> Movement {
    Movement {
        id: Uuid::new_v4(),
        sender: Uuid::new_v4(),
        receiver: Uuid::new_v4(),
        product: Uuid::new_v4(),
    }
}

/// The sides of a row of `movements`.
#[derive(Debug)]
struct MovementRow {
    sender_id: Option<Uuid>,
    receiver_id: Option<Uuid>,
    sender_code: Option<String>,
    receiver_code: Option<String>,
}

async fn movement_row(app: &TestApp, id: Uuid) -> MovementRow {
    let client = app.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT sender_id, receiver_id, sender_code, receiver_code FROM movements WHERE movement_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    MovementRow {
        sender_id: row.get("sender_id"),
        receiver_id: row.get("receiver_id"),
        sender_code: row.get("sender_code"),
        receiver_code: row.get("receiver_code"),
    }
}

#[tokio::test]
async fn departure_and_arrival_land_as_one_movement_and_move_stock_on_both_sides() {
    let app = TestApp::spawn(2).await;
    let m = movement();
    // Departure and arrival on different partitions, as the SPEC allows.
    app.produce(
        0,
        vec![Ev::departure(m.id, m.sender, m.product, 100).bytes()],
    )
    .await;
    app.produce(
        1,
        vec![Ev::arrival(m.id, m.receiver, m.product, 100).bytes()],
    )
    .await;
    app.wait_consumed().await;

    assert_eq!(app.stock(m.sender, m.product).await, Some(-100));
    assert_eq!(app.stock(m.receiver, m.product).await, Some(100));
    assert_eq!(app.count("movement_events").await, 2);
    assert_eq!(app.count("movements").await, 1);
    let row = movement_row(&app, m.id).await;
    assert_eq!(
        (row.sender_id, row.receiver_id),
        (Some(m.sender), Some(m.receiver))
    );
    assert_eq!(row.sender_code.as_deref(), Some("WH-3322"));
    assert_eq!(row.receiver_code.as_deref(), Some("WH-3423"));
    assert!(app.rejected().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn arrival_before_departure_gives_the_same_final_state() {
    let app = TestApp::spawn(1).await;
    let m = movement();
    app.produce(
        0,
        vec![Ev::arrival(m.id, m.receiver, m.product, 40).bytes()],
    )
    .await;
    app.wait_consumed().await;
    // Only the arrival so far: the receiver has the goods, the sender is unknown.
    assert_eq!(app.stock(m.receiver, m.product).await, Some(40));
    assert_eq!(movement_row(&app, m.id).await.sender_id, None);

    app.produce(
        0,
        vec![Ev::departure(m.id, m.sender, m.product, 40).bytes()],
    )
    .await;
    app.wait_consumed().await;
    assert_eq!(app.stock(m.sender, m.product).await, Some(-40));
    assert_eq!(app.stock(m.receiver, m.product).await, Some(40));
    let row = movement_row(&app, m.id).await;
    assert_eq!(
        (row.sender_id, row.receiver_id),
        (Some(m.sender), Some(m.receiver))
    );
    assert_eq!(app.count("movement_events").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn exact_duplicate_changes_nothing_and_a_conflicting_repeat_is_rejected() {
    let app = TestApp::spawn(2).await;
    let m = movement();
    let departure = Ev::departure(m.id, m.sender, m.product, 7);
    app.produce(0, vec![departure.bytes()]).await;
    app.wait_consumed().await;
    let events_before = app.count("movement_events").await;

    // The same event again (new envelope id, same content), in a later batch and
    // on another partition, and once more in the same batch as a conflicting one.
    app.produce(1, vec![departure.bytes()]).await;
    let changed = departure.clone().quantity(8);
    app.produce(0, vec![departure.bytes(), changed.bytes()])
        .await;
    app.wait_consumed().await;

    assert_eq!(app.count("movement_events").await, events_before);
    assert_eq!(app.stock(m.sender, m.product).await, Some(-7));
    let Rejected {
        partition,
        offset,
        reason,
        detail,
    } = &app.only_rejected().await;
    assert_eq!((*partition, *offset, reason.as_str()), (0, 2, "conflict"));
    assert!(detail.contains(&m.id.to_string()), "{detail}");

    // A departure of the same movement from another warehouse contradicts it.
    let other = Ev::departure(m.id, Uuid::new_v4(), Uuid::new_v4(), 1);
    app.produce(0, vec![other.bytes()]).await;
    app.wait_consumed().await;
    let rejected = app.rejected().await;
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[1].reason, "conflict");
    assert_eq!(app.stock(other.warehouse_id, other.product_id).await, None);
    app.stop().await;
}
