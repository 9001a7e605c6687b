//! Which failures are worth retrying as they are, decided in one place, and the
//! capped exponential backoff every retry loop of the service uses.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// True when the same statement may succeed if simply tried again: lost or
/// refused connections, serialization failures and deadlocks, a server that is
/// shutting down or starting up. Everything else (a constraint violated, an
/// offset committed by someone else) needs a decision, not a retry.
pub fn is_retriable(err: &StoreError) -> bool {
    match err {
        StoreError::Pool(_) => true,
        StoreError::Db(e) => match e.code() {
            None => true, // I/O or closed connection: no SQLSTATE at all
            Some(code) => {
                code == &SqlState::T_R_SERIALIZATION_FAILURE
                    || code == &SqlState::T_R_DEADLOCK_DETECTED
                    || code == &SqlState::ADMIN_SHUTDOWN
                    || code == &SqlState::CRASH_SHUTDOWN
                    || code == &SqlState::CANNOT_CONNECT_NOW
                    || code == &SqlState::TOO_MANY_CONNECTIONS
                    || code.code().starts_with("08") // connection exceptions
            }
        },
        StoreError::Url(_) | StoreError::Build(_) | StoreError::OffsetConflict { .. } => false,
    }
}

/// Capped exponential backoff: 100 ms, 200 ms, 400 ms … up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self {
            next: Duration::from_millis(100),
            max,
        }
    }

    /// The delay to wait now; doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn offset_conflict_is_not_retried_as_is() {
        let err = StoreError::OffsetConflict {
            topic: "t".into(),
            partition: 0,
            expected: Some(3),
        };
        assert!(!is_retriable(&err));
    }
}
