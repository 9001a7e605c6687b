//! Consumer instances of a topic, counted by their ownership sessions: each
//! session holds a member lock (-topic key, its backend pid) for as long as it
//! lives, so the count drops the moment an instance's session ends, with no
//! row to expire.

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::Oid;

use super::StoreError;

const REGISTER_TOPIC: &str = include_str!("../../sql/queries/register_topic.sql");
const JOIN: &str = include_str!("../../sql/queries/join_group.sql");
const COUNT: &str = include_str!("../../sql/queries/count_members.sql");

/// The topic's advisory-lock key, assigned on first use.
pub async fn topic_key(client: &ClientWrapper, topic: &str) -> Result<i32, StoreError> {
    let stmt = client.prepare_cached(REGISTER_TOPIC).await?;
    Ok(client.query_one(&stmt, &[&topic]).await?.get(0))
}

/// This session as a member of a topic's group.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// The backend pid, second key of the member lock.
    pub pid: i32,
    /// The database's oid, for reading `pg_locks`.
    pub database: Oid,
}

/// Takes this session's member lock; `None` if it was not granted (it cannot
/// be: a pid names one live backend).
pub async fn join(client: &ClientWrapper, topic_key: i32) -> Result<Option<Member>, StoreError> {
    let stmt = client.prepare_cached(JOIN).await?;
    let row = client.query_one(&stmt, &[&topic_key]).await?;
    let granted: bool = row.get(1);
    Ok(granted.then(|| Member {
        pid: row.get(0),
        database: row.get(2),
    }))
}

/// Live instances of the topic, this one included.
pub async fn count(
    client: &ClientWrapper,
    topic_key: i32,
    database: Oid,
) -> Result<usize, StoreError> {
    let stmt = client.prepare_cached(COUNT).await?;
    let live: i64 = client
        .query_one(&stmt, &[&topic_key, &database])
        .await?
        .get(0);
    Ok(usize::try_from(live).unwrap_or(0))
}
