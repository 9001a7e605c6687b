//! Which failures are worth retrying as they are, decided in one place, and the
//! capped exponential backoff every retry loop of the service uses.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// What to do about a failed batch, decided here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The same transaction may succeed if simply tried again: lost or refused
    /// connections (08, no SQLSTATE at all), transaction rollbacks such as
    /// serialization failures and deadlocks (40), insufficient resources (53),
    /// operator intervention such as a shutdown or a statement timeout (57),
    /// a lock not available (55P03).
    Transient,
    /// The server refused what some record carries: data exceptions (22),
    /// integrity constraints (23), cardinality violations (21), program limits
    /// (54), and exceptions raised by triggers (P0001). Splitting the batch
    /// isolates the records that cause it.
    Data,
    /// The server ran out of memory, typically of its lock table (53200):
    /// a batch that touches many movements takes one advisory lock per
    /// movement. Retried like a transient error; a batch that still fails is
    /// split in halves, which need fewer locks. Never a reason to quarantine.
    Resources,
    /// Neither: a broken schema, a lost offset race. The pipeline restarts
    /// from its committed offset and reports the error.
    Other,
}

impl Class {
    /// True when the same transaction may succeed if simply tried again.
    pub fn is_retriable(self) -> bool {
        matches!(self, Class::Transient | Class::Resources)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Transient => "transient",
            Class::Data => "data",
            Class::Resources => "resources",
            Class::Other => "other",
        }
    }
}

/// Classifies a storage error.
pub fn classify(err: &StoreError) -> Class {
    match err {
        // Another announcement is made at the next attempt.
        StoreError::Pool(_) | StoreError::Unannounced => Class::Transient,
        StoreError::Db { cause, .. } => match cause.code() {
            None => Class::Transient, // I/O or closed connection: no SQLSTATE at all
            Some(code) => classify_code(code),
        },
        StoreError::Url(_)
        | StoreError::Tls(_)
        | StoreError::Build(_)
        | StoreError::OffsetConflict { .. } => Class::Other,
    }
}

fn classify_code(code: &SqlState) -> Class {
    if code == &SqlState::LOCK_NOT_AVAILABLE {
        return Class::Transient;
    }
    if code == &SqlState::RAISE_EXCEPTION {
        return Class::Data;
    }
    if code == &SqlState::OUT_OF_MEMORY {
        return Class::Resources;
    }
    match &code.code()[..2] {
        "08" | "40" | "53" | "57" => Class::Transient,
        "21" | "22" | "23" | "54" => Class::Data,
        _ => Class::Other,
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
    fn sqlstates_are_classified_by_class() {
        let cases = [
            ("08006", Class::Transient),
            ("40001", Class::Transient),
            ("40P01", Class::Transient),
            ("53300", Class::Transient),
            ("53200", Class::Resources),
            ("57014", Class::Transient),
            ("57P01", Class::Transient),
            ("55P03", Class::Transient),
            ("22008", Class::Data),
            ("22P02", Class::Data),
            ("23514", Class::Data),
            ("23505", Class::Data),
            ("21000", Class::Data),
            ("54000", Class::Data),
            ("P0001", Class::Data),
            ("42P01", Class::Other),
            ("XX000", Class::Other),
        ];
        for (code, class) in cases {
            assert_eq!(classify_code(&SqlState::from_code(code)), class, "{code}");
        }
    }

    #[test]
    fn offset_conflict_is_not_retried_as_is() {
        let err = StoreError::OffsetConflict {
            topic: "t".into(),
            partition: 0,
            expected: Some(3),
        };
        assert!(!classify(&err).is_retriable());
        assert_eq!(classify(&err), Class::Other);
    }
}
