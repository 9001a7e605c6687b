//! The ownership session: one PostgreSQL connection per consuming instance,
//! taken out of its pool for good, on which the instance holds its member
//! lock and the locks of the partitions it consumes ([`super::partition_locks`],
//! [`super::member_locks`]). Its whole point is its lifetime: when the process
//! dies the kernel closes the socket, the backend exits and the server
//! releases every lock at once; when the network goes silent the server ends
//! the session after `silence` (TCP keepalives and `tcp_user_timeout`, set on
//! the session itself).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use deadpool_postgres::ClientWrapper;
use uuid::Uuid;

use super::{StoreError, member_locks, partition_locks};

const SETTINGS: &str = include_str!("../../sql/queries/session_settings.sql");
const USER_TIMEOUT: &str = include_str!("../../sql/queries/session_user_timeout.sql");

/// An open ownership session of one topic.
#[derive(Debug)]
pub struct Session {
    client: ClientWrapper,
    topic_key: i32,
    member: member_locks::Member,
    _open: OpenGuard,
}

impl Session {
    /// Turns a connection taken out of its pool into the instance's session:
    /// its settings, the topic's lock key, and the member lock. `None` if the
    /// member lock was refused (it cannot be: a pid names one live backend).
    pub(super) async fn start(
        client: ClientWrapper,
        open: &Arc<AtomicUsize>,
        topic: &str,
        instance: Uuid,
        silence: Duration,
    ) -> Result<Option<Self>, StoreError> {
        let guard = OpenGuard::new(open);
        let probes = keepalive_probes(silence).to_string();
        let name = format!("warehouse-monitor {instance}");
        client
            .query_one(SETTINGS, &[&name, &"1", &"1", &probes])
            .await?;
        let timeout_ms = silence.as_millis().to_string();
        if let Err(e) = client.query_one(USER_TIMEOUT, &[&timeout_ms]).await {
            // Not every platform has TCP_USER_TIMEOUT; keepalives still bound the silence.
            tracing::warn!(error = %super::describe(&e), "tcp_user_timeout not set on the ownership session");
        }
        let topic_key = member_locks::topic_key(&client, topic).await?;
        let Some(member) = member_locks::join(&client, topic_key).await? else {
            return Ok(None);
        };
        Ok(Some(Self {
            client,
            topic_key,
            member,
            _open: guard,
        }))
    }

    /// The server process serving this session.
    pub fn pid(&self) -> i32 {
        self.member.pid
    }

    /// Live instances of the topic, this one included; also proves that the
    /// session still answers.
    pub async fn members(&self) -> Result<usize, StoreError> {
        member_locks::count(&self.client, self.topic_key, self.member.database).await
    }

    /// Takes `partition` without waiting; true when this session holds it now.
    pub async fn try_own(&self, partition: i32) -> Result<bool, StoreError> {
        partition_locks::try_own(&self.client, self.topic_key, partition).await
    }

    /// Gives `partition` up; false when this session did not hold it.
    pub async fn release(&self, partition: i32) -> Result<bool, StoreError> {
        partition_locks::release(&self.client, self.topic_key, partition).await
    }
}

/// Unanswered keepalive probes, one a second after one second of silence,
/// before the server ends a session: the silence rounded up to whole seconds.
fn keepalive_probes(silence: Duration) -> u64 {
    let secs = u64::try_from(silence.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
    secs.saturating_sub(1).max(1)
}

/// Counts a session as open from its start until it is dropped (the
/// connection closes with it), for the pool gauges.
#[derive(Debug)]
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(open))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_gives_up_no_sooner_than_the_silence() {
        // One second of idleness, then one probe a second.
        for ms in [2000_u64, 2001, 2500, 5000, 10_000] {
            let silence = Duration::from_millis(ms);
            let server = Duration::from_secs(1 + keepalive_probes(silence));
            assert!(
                server >= silence,
                "{ms} ms: the server gives up at {server:?}"
            );
            assert!(
                server < silence + Duration::from_secs(1),
                "{ms} ms: {server:?}"
            );
        }
    }
}
