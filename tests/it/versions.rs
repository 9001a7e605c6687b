//! Stock versions come from a sequence (docs/SPEC.md section 8): a batch
//! draws its number when it begins, and each stock row it changes takes it
//! unless a batch with a larger one changed the row first. These tests hold
//! the real PostgreSQL to that: versions only grow.

use uuid::Uuid;
use warehouse_monitor::{
    app::startup,
    domain::plan::StockDelta,
    store::{self, apply},
};

use crate::helpers::{self, test_settings};

#[tokio::test]
async fn a_stock_row_takes_the_batch_number_unless_a_larger_one_changed_it_first() {
    let settings = test_settings(1);
    let (db, _) = startup::migrate(&settings).await.unwrap();
    let pool = db.pool();
    let (wh, product) = (Uuid::new_v4(), Uuid::new_v4());
    let delta = |delta| StockDelta {
        warehouse_id: wh,
        product_id: product,
        delta,
    };
    let (mut one, mut two) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    let (early, _, n1) = apply::begin(&mut one, &[]).await.unwrap();
    let (late, _, n2) = apply::begin(&mut two, &[]).await.unwrap();
    assert!(n2.0 > n1.0, "numbers grow: {n1:?} then {n2:?}");

    // The batch that began later changes the row first: it takes that
    // batch's number.
    let written = apply::write_stock_part(&late, &[delta(5)], n2)
        .await
        .unwrap();
    assert_eq!(written.touched, vec![(wh, product, n2.0)]);
    apply::commit(late).await.unwrap();

    // The other one then finds a version above its number: the row takes the
    // next version.
    let written = apply::write_stock_part(&early, &[delta(3)], n1)
        .await
        .unwrap();
    assert_eq!(written.touched, vec![(wh, product, n2.0 + 1)]);
    apply::commit(early).await.unwrap();

    // A batch that begins afterwards gives the row a version above every one
    // before, whichever it takes.
    let (next, _, n3) = apply::begin(&mut one, &[]).await.unwrap();
    let written = apply::write_stock_part(&next, &[delta(-1)], n3)
        .await
        .unwrap();
    let version = written.touched[0].2;
    assert!(version > n2.0 + 1, "{version} after {}", n2.0 + 1);
    assert_eq!(version, n3.0.max(n2.0 + 2));
    apply::commit(next).await.unwrap();
    assert_eq!(helpers::stock(&pool, wh, product).await, Some(7));
    drop((one, two));
    pool.close();
    store::drop_database(&settings.postgres.url).await.unwrap();
}
