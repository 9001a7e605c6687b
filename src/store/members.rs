//! Consumer instances of a topic, counted by their ownership sessions: each
//! session holds a member lock (-topic key, its backend pid) for as long as it
//! lives, so the count drops the moment an instance's session ends, with no
//! row to expire.

use deadpool_postgres::ClientWrapper;

use super::StoreError;

const REGISTER_TOPIC: &str = include_str!("../../sql/queries/register_topic.sql");
const JOIN: &str = include_str!("../../sql/queries/join_group.sql");
const COUNT: &str = include_str!("../../sql/queries/count_members.sql");

/// The topic's advisory-lock key, assigned on first use.
pub async fn topic_key(client: &ClientWrapper, topic: &str) -> Result<i32, StoreError> {
    let stmt = client.prepare_cached(REGISTER_TOPIC).await?;
    Ok(client.query_one(&stmt, &[&topic]).await?.get(0))
}

/// Takes this session's member lock; returns its backend pid, or `None` if the
/// lock was not granted (it cannot be: a pid names one live backend).
pub async fn join(client: &ClientWrapper, topic_key: i32) -> Result<Option<i32>, StoreError> {
    let stmt = client.prepare_cached(JOIN).await?;
    let row = client.query_one(&stmt, &[&topic_key]).await?;
    let granted: bool = row.get(1);
    Ok(granted.then(|| row.get(0)))
}

/// Live instances of the topic, this one included.
pub async fn count(client: &ClientWrapper, topic_key: i32) -> Result<usize, StoreError> {
    let stmt = client.prepare_cached(COUNT).await?;
    let live: i64 = client.query_one(&stmt, &[&topic_key]).await?.get(0);
    Ok(usize::try_from(live).unwrap_or(0))
}
