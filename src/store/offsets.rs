//! Consumer offsets stored in PostgreSQL, never in Kafka: the next offset to
//! read per (topic, partition), written inside batch transactions by
//! [`super::write`], and moved past records that carry no events (the
//! transaction markers at the end of a log) by [`advance`].

use super::{At, Client, Step, StoreError};

const LOAD: &str = include_str!("../../sql/queries/load_offset.sql");
const COMMIT_OFFSET: &str = include_str!("../../sql/queries/commit_offset.sql");
const TOPIC_OFFSETS: &str = include_str!("../../sql/queries/topic_offsets.sql");

/// A partition's stored offset, as the start-up check compares it with the
/// broker's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub partition: i32,
    /// The next offset to consume.
    pub next_offset: i64,
    /// Seconds since it last moved.
    pub age_secs: i64,
}

/// Every stored offset of `topic`, by partition.
pub async fn of_topic(client: &Client, topic: &str) -> Result<Vec<Stored>, StoreError> {
    let stmt = client.prepare_cached(TOPIC_OFFSETS).await?;
    let rows = client.query(&stmt, &[&topic]).await?;
    Ok(rows
        .iter()
        .map(|r| Stored {
            partition: r.get(0),
            next_offset: r.get(1),
            age_secs: r.get(2),
        })
        .collect())
}

/// The next offset to consume on this partition, `None` when nothing was committed.
pub async fn load(client: &Client, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
    let stmt = client.prepare_cached(LOAD).await?;
    let row = client.query_opt(&stmt, &[&topic, &partition]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// Moves the stored offset from `expected` to `next` with the same
/// compare-and-set as a batch: the log between them holds no record for the
/// service (only transaction markers, or records of aborted transactions).
pub async fn advance(
    client: &Client,
    topic: &str,
    partition: i32,
    expected: Option<i64>,
    next: i64,
) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(COMMIT_OFFSET)
        .await
        .at(Step::Offset)?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&topic, &partition, &expected, &next];
    let moved: i64 = client
        .query_one(&stmt, &params)
        .await
        .at(Step::Offset)?
        .get(0);
    if moved == 1 {
        Ok(())
    } else {
        Err(StoreError::OffsetConflict {
            topic: topic.to_owned(),
            partition,
            expected,
        })
    }
}
