//! The batch transaction: everything one batch changes, and the offset that
//! says it was consumed, commit together or not at all.
//!
//! [`begin`] takes its share of the cache epoch lock and reads the epoch,
//! locks the batch's movements (advisory locks, ascending) and reads what is
//! stored for them. The caller plans with that state ([`crate::domain::plan::plan`]) and writes
//! the plan in this order:
//! [`write_movements`] (binary COPY of the new events, one upsert of the
//! movements, the rejected records), [`write_offset`] (the partition's
//! offset, by compare-and-set on the value this consumer read), then the
//! stock deltas in [`stock_parts`], each with [`write_stock_part`], last
//! because batches of every partition share stock rows and the row locks
//! are held until the COMMIT. [`outcome`] says what the batch did, and
//! [`commit`] ends the transaction. The caller deletes the cache keys of
//! the rows each step changed, in the epoch [`begin`] read, once that step
//! has locked them and before the COMMIT ([`crate::ingest::apply`],
//! [`crate::ingest::invalidate`]; the rule is in docs/SPEC.md section 8).

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use tokio_postgres::{binary_copy::BinaryCopyInWriter, types::Type};
use uuid::Uuid;

use super::{At, Client, Step, StoreError};
use crate::{
    cache::outbox,
    domain::{
        event::{EventKind, RejectReason},
        plan::{Content, EventKey, Plan, Sides, StockDelta, StoredState},
    },
    kafka::Record,
};

const LOCK_MOVEMENTS: &str = include_str!("../../sql/queries/lock_movements.sql");
const STORED_EVENTS: &str = include_str!("../../sql/queries/stored_events.sql");
const STORED_MOVEMENTS: &str = include_str!("../../sql/queries/stored_movements.sql");
const COPY_EVENTS: &str = include_str!("../../sql/queries/copy_events.sql");
const UPSERT_MOVEMENTS: &str = include_str!("../../sql/queries/upsert_movements.sql");
const UPSERT_STOCK: &str = include_str!("../../sql/queries/upsert_stock.sql");
const INSERT_REJECTED: &str = include_str!("../../sql/queries/insert_rejected.sql");
const COMMIT_OFFSET: &str = include_str!("../../sql/queries/commit_offset.sql");

const COPY_TYPES: [Type; 12] = [
    Type::UUID,
    Type::UUID,
    Type::TEXT,
    Type::UUID,
    Type::TEXT,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
];

/// A batch of consecutive records of one partition.
#[derive(Debug)]
pub struct PartitionBatch<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// The offset this consumer read from the store (`None`: no row yet).
    pub expected_offset: Option<i64>,
    /// Records in offset order; must not be empty.
    pub records: &'a [Record],
}

impl PartitionBatch<'_> {
    /// The offset stored once this batch commits.
    pub fn next_offset(&self) -> i64 {
        self.records.last().map_or(0, |r| r.offset + 1)
    }
}

/// Rows whose cached answers a committed batch made stale.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    pub movements: Vec<Uuid>,
    pub stock: Vec<(Uuid, Uuid)>,
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub consumed: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub rejected: BTreeMap<RejectReason, u64>,
    pub next_offset: i64,
    /// `(offset, reason, detail)` of each rejected record, for logs.
    pub rejections: Vec<(i64, RejectReason, String)>,
    /// Stock rows this batch left below zero (more departed than arrived so far).
    pub negative_stock: usize,
    /// Earliest envelope `time` among applied events, for the delay metric.
    pub oldest_emitted_at: Option<OffsetDateTime>,
    /// Earliest Kafka record timestamp among the batch's records.
    pub oldest_record_at: Option<OffsetDateTime>,
    /// Redis acknowledged every key before the COMMIT (set by the caller that
    /// invalidates; false without a cache).
    pub invalidated_before_commit: bool,
    pub touched: Touched,
}

/// Opens the batch transaction: takes its share of the cache epoch lock and
/// reads the epoch (first, so that a new epoch waits for this batch and
/// this batch never waits on a lock while it holds a movement's), then takes
/// the advisory locks of `movement_ids` (sorted, so that concurrent batches
/// wait instead of deadlocking) and reads their stored events and sides,
/// pipelined. Returns the cache epoch whose keys the batch deletes.
pub async fn begin<'c>(
    client: &'c mut Client,
    movement_ids: &[Uuid],
) -> Result<(Transaction<'c>, StoredState, i64), StoreError> {
    let tx = client.transaction().await.at(Step::Transaction)?;
    let (epoch, stored) = tokio::join!(outbox::share_epoch(&tx), read_state(&tx, movement_ids));
    // The reads' error first: an epoch read that followed a failed lock only
    // says that the transaction is aborted, and the lock's error decides
    // whether the batch is split (`crate::retry`).
    let stored = stored?;
    Ok((tx, stored, epoch?))
}

/// The movement rows a batch changed.
pub type MovementsWritten = Vec<Uuid>;

/// The stock rows a batch changed (locked by the transaction until it
/// ends), and how many of them are below zero.
#[derive(Debug, Default)]
pub struct StockWritten {
    pub touched: Vec<(Uuid, Uuid)>,
    negative: usize,
}

/// The events, the movements and the rejected records. Only batches
/// holding a movement's advisory lock write it.
pub async fn write_movements(
    tx: &Transaction<'_>,
    batch: &PartitionBatch<'_>,
    plan: &Plan,
) -> Result<MovementsWritten, StoreError> {
    copy_events(tx, batch, plan).await.at(Step::Copy)?;
    let movements = upsert_movements(tx, plan).await.at(Step::Movements)?;
    insert_rejected(tx, batch, plan).await.at(Step::Rejects)?;
    Ok(movements)
}

/// Stock deltas per statement, at least: a smaller plan is one statement.
const STOCK_PART_MIN: usize = 128;
/// Statements a larger plan's stock deltas are split into (the ingest
/// benchmark's median ratio over five runs of 3 partitions x 1 000
/// was 57% with one statement, 64% with 4 and 63% with 8).
const STOCK_PARTS: usize = 4;

/// The plan's stock deltas in the parts that are upserted, in key order.
/// Parts let the service delete the cache keys of one part's rows, which
/// it locked, while the next is upserted ([`crate::ingest::apply`]).
pub fn stock_parts(plan: &Plan) -> std::slice::Chunks<'_, StockDelta> {
    let size = plan.stock.len().div_ceil(STOCK_PARTS).max(STOCK_PART_MIN);
    plan.stock.chunks(size)
}

/// The upsert of one of [`stock_parts`]; parts must be written in their
/// order, so that batches lock shared rows in one order.
pub async fn write_stock_part(
    tx: &Transaction<'_>,
    part: &[StockDelta],
) -> Result<StockWritten, StoreError> {
    let (touched, negative) = upsert_stock(tx, part).await.at(Step::Stock)?;
    Ok(StockWritten { touched, negative })
}

impl StockWritten {
    /// Adds the rows of a later part.
    pub fn extend(&mut self, part: StockWritten) {
        self.touched.extend(part.touched);
        self.negative += part.negative;
    }
}

/// What a written batch did, for its metrics, logs and cache keys.
pub fn outcome(
    batch: &PartitionBatch<'_>,
    plan: &Plan,
    movements: MovementsWritten,
    stock: StockWritten,
) -> BatchOutcome {
    BatchOutcome {
        consumed: batch.records.len(),
        applied: plan.accepted.len(),
        duplicates: plan.duplicates,
        rejected: plan.rejected_by_reason(),
        next_offset: batch.next_offset(),
        rejections: plan
            .rejected
            .iter()
            .map(|(i, r)| (batch.records[*i].offset, r.reason, r.detail.clone()))
            .collect(),
        oldest_emitted_at: plan.accepted.iter().filter_map(|(_, e)| e.emitted_at).min(),
        oldest_record_at: batch.records.iter().filter_map(|r| r.timestamp).min(),
        invalidated_before_commit: false,
        negative_stock: stock.negative,
        touched: Touched {
            movements,
            stock: stock.touched,
        },
    }
}

/// Commits the batch transaction. An error leaves its outcome unknown: the
/// pipeline restarts from the offset stored in PostgreSQL either way.
pub async fn commit(tx: Transaction<'_>) -> Result<(), StoreError> {
    tx.commit().await.at(Step::Transaction)
}

/// The advisory-lock key of a movement: 32 bits of its id. Two movements sharing
/// a key only wait for each other; correctness never depends on the key being unique.
pub fn lock_key(movement_id: Uuid) -> i32 {
    let b = movement_id.as_bytes();
    i32::from_be_bytes([b[12], b[13], b[14], b[15]])
}

async fn read_state(
    tx: &Transaction<'_>,
    movement_ids: &[Uuid],
) -> Result<StoredState, StoreError> {
    let mut state = StoredState::default();
    if movement_ids.is_empty() {
        return Ok(state);
    }
    let keys: Vec<i32> = movement_ids.iter().map(|id| lock_key(*id)).collect();
    let lock = tx.prepare_cached(LOCK_MOVEMENTS).await.at(Step::Lock)?;
    tx.execute(&lock, &[&keys]).await.at(Step::Lock)?;

    let events = tx.prepare_cached(STORED_EVENTS).await.at(Step::ReadState)?;
    let rows = tx
        .query(&events, &[&movement_ids])
        .await
        .at(Step::ReadState)?;
    for row in rows {
        let kind: &str = row.get(2);
        let Some(kind) = EventKind::parse(kind) else {
            continue;
        };
        let key = EventKey {
            movement_id: row.get(0),
            product_id: row.get(1),
            kind,
        };
        let content = Content {
            warehouse_id: row.get(3),
            quantity: row.get(4),
            happened_at: row.get(5),
        };
        state.events.insert(key, content);
    }
    let movements = tx
        .prepare_cached(STORED_MOVEMENTS)
        .await
        .at(Step::ReadState)?;
    let rows = tx
        .query(&movements, &[&movement_ids])
        .await
        .at(Step::ReadState)?;
    for row in rows {
        let sides = Sides {
            sender: row.get(1),
            receiver: row.get(2),
        };
        state.movements.insert(row.get(0), sides);
    }
    Ok(state)
}

async fn copy_events(
    tx: &Transaction<'_>,
    batch: &PartitionBatch<'_>,
    plan: &Plan,
) -> Result<(), tokio_postgres::Error> {
    if plan.accepted.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(COPY_EVENTS).await?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
    tokio::pin!(writer);
    for (index, e) in &plan.accepted {
        let offset = batch.records[*index].offset;
        writer
            .as_mut()
            .write(&[
                &e.movement_id,
                &e.product_id,
                &e.kind.as_str(),
                &e.warehouse_id,
                &e.source.as_str(),
                &e.quantity,
                &e.happened_at,
                &e.message_id,
                &e.emitted_at,
                &batch.topic,
                &batch.partition,
                &offset,
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn upsert_movements(
    tx: &Transaction<'_>,
    plan: &Plan,
) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    if plan.movements.is_empty() {
        return Ok(Vec::new());
    }
    let n = plan.movements.len();
    let (mut ids, mut s_id, mut s_code, mut s_at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut r_id, mut r_code, mut r_at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for m in &plan.movements {
        ids.push(m.movement_id);
        s_id.push(m.sender.as_ref().map(|s| s.warehouse_id));
        s_code.push(m.sender.as_ref().map(|s| s.code.as_str()));
        s_at.push(m.sender.as_ref().map(|s| s.at));
        r_id.push(m.receiver.as_ref().map(|s| s.warehouse_id));
        r_code.push(m.receiver.as_ref().map(|s| s.code.as_str()));
        r_at.push(m.receiver.as_ref().map(|s| s.at));
    }
    let stmt = tx.prepare_cached(UPSERT_MOVEMENTS).await?;
    let rows = tx
        .query(&stmt, &[&ids, &s_id, &s_code, &s_at, &r_id, &r_code, &r_at])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Returns the touched rows, and how many are negative.
async fn upsert_stock(
    tx: &Transaction<'_>,
    part: &[StockDelta],
) -> Result<(Vec<(Uuid, Uuid)>, usize), tokio_postgres::Error> {
    if part.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let warehouses: Vec<Uuid> = part.iter().map(|d| d.warehouse_id).collect();
    let products: Vec<Uuid> = part.iter().map(|d| d.product_id).collect();
    let deltas: Vec<i64> = part.iter().map(|d| d.delta).collect();
    let stmt = tx.prepare_cached(UPSERT_STOCK).await?;
    let rows = tx.query(&stmt, &[&warehouses, &products, &deltas]).await?;
    let negative = rows.iter().filter(|r| r.get::<_, i64>(2) < 0).count();
    let touched = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok((touched, negative))
}

async fn insert_rejected(
    tx: &Transaction<'_>,
    batch: &PartitionBatch<'_>,
    plan: &Plan,
) -> Result<(), tokio_postgres::Error> {
    if plan.rejected.is_empty() {
        return Ok(());
    }
    let records = plan.rejected.iter().map(|(i, _)| &batch.records[*i]);
    let offsets: Vec<i64> = records.clone().map(|r| r.offset).collect();
    let raws: Vec<Option<&[u8]>> = records.clone().map(|r| r.value.as_deref()).collect();
    let times: Vec<Option<OffsetDateTime>> = records.map(|r| r.timestamp).collect();
    let reasons: Vec<&str> = plan
        .rejected
        .iter()
        .map(|(_, r)| r.reason.as_str())
        .collect();
    // PostgreSQL text cannot hold NUL, and a database message may quote one.
    let details: Vec<String> = plan
        .rejected
        .iter()
        .map(|(_, r)| r.detail.replace('\0', "\\0"))
        .collect();
    let stmt = tx.prepare_cached(INSERT_REJECTED).await?;
    tx.execute(
        &stmt,
        &[
            &batch.topic,
            &batch.partition,
            &offsets,
            &raws,
            &reasons,
            &details,
            &times,
        ],
    )
    .await?;
    Ok(())
}

/// The offset's compare-and-set: fails the batch unless this consumer still
/// owns the offset it started from.
pub async fn write_offset(
    tx: &Transaction<'_>,
    batch: &PartitionBatch<'_>,
) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached(COMMIT_OFFSET).await.at(Step::Offset)?;
    let next = batch.next_offset();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
        &batch.topic,
        &batch.partition,
        &batch.expected_offset,
        &next,
    ];
    let moved: i64 = tx.query_one(&stmt, &params).await.at(Step::Offset)?.get(0);
    if moved == 1 {
        Ok(())
    } else {
        Err(StoreError::OffsetConflict {
            topic: batch.topic.to_owned(),
            partition: batch.partition,
            expected: batch.expected_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(stock: usize) -> Plan {
        Plan {
            stock: (0..stock)
                .map(|i| StockDelta {
                    warehouse_id: Uuid::from_u128(1),
                    product_id: Uuid::from_u128(i as u128),
                    delta: 1,
                })
                .collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn stock_parts_keep_key_order_and_split_only_large_plans() {
        let sizes = |n| {
            stock_parts(&plan_with(n))
                .map(<[_]>::len)
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(100), vec![100], "a small plan is one statement");
        assert_eq!(sizes(300), vec![128, 128, 44], "parts of at least 128");
        assert_eq!(sizes(1000), vec![250; 4]);
        assert_eq!(sizes(1001), vec![251, 251, 251, 248]);
        let plan = plan_with(1000);
        let joined: Vec<&StockDelta> = stock_parts(&plan).flatten().collect();
        assert!(
            joined
                .iter()
                .zip(&plan.stock)
                .all(|(a, b)| std::ptr::eq(*a, b))
        );
    }
}
