//! The guarded reads that let a reader fill the cache (docs/SPEC.md section
//! 8), held to the real PostgreSQL: while a batch holds a row, a read of it
//! says it may not be cached; once the batch committed, the read sees the
//! batch's writes and may be cached. A movement the batch is still creating
//! counts as held too (its advisory lock), and a stock pair never seen is
//! never cacheable (no row a guard could find while a batch inserts it).

use uuid::Uuid;
use warehouse_monitor::{
    app::startup,
    domain::plan::StockDelta,
    store::{self, write},
};

use crate::support::helpers::test_settings;

#[tokio::test]
async fn a_row_a_batch_holds_is_read_but_not_cacheable_until_the_commit() {
    let settings = test_settings(1);
    let (db, _) = startup::migrate(&settings).await.unwrap();
    let pool = warehouse_monitor::store::pool(&settings.postgres).unwrap();
    let (wh, product, movement) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let delta = |delta| StockDelta {
        warehouse_id: wh,
        product_id: product,
        delta,
    };
    let mut batch = pool.get().await.unwrap();

    // A pair never seen, while a batch inserts it: readable, never cacheable.
    let (tx, _, _) = write::begin(&mut batch, &[movement]).await.unwrap();
    write::write_stock_part(&tx, &[delta(5)]).await.unwrap();
    let read = db.stock(wh, product, true).await.unwrap();
    assert_eq!((read.value, read.cacheable), ((0, 0), false));
    // The movement the batch holds (its advisory lock), not yet written.
    let read = db.movement(movement, true).await.unwrap();
    assert_eq!((read.value, read.cacheable), (None, false));
    write::commit(tx).await.unwrap();

    // Committed: the pair reads as written and may be cached; so may the
    // movement's absence, now that no batch holds it.
    let read = db.stock(wh, product, true).await.unwrap();
    assert_eq!((read.value, read.cacheable), ((5, 1), true));
    let read = db.movement(movement, true).await.unwrap();
    assert_eq!((read.value, read.cacheable), (None, true));

    // A batch that updates the row holds it until its COMMIT.
    let (tx, _, _) = write::begin(&mut batch, &[]).await.unwrap();
    write::write_stock_part(&tx, &[delta(2)]).await.unwrap();
    let read = db.stock(wh, product, true).await.unwrap();
    assert_eq!(read.value, (5, 1), "the committed row, not the batch's");
    assert!(!read.cacheable, "the batch holds the row");
    // An unguarded read (no lease) is never cacheable.
    assert!(!db.stock(wh, product, false).await.unwrap().cacheable);
    write::commit(tx).await.unwrap();
    let read = db.stock(wh, product, true).await.unwrap();
    assert_eq!(
        (read.value, read.cacheable),
        ((7, 2), true),
        "one version per batch"
    );

    drop(batch);
    pool.close();
    store::drop_database(settings.postgres.url.expose())
        .await
        .unwrap();
}
