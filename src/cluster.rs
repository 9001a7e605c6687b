//! Several instances sharing one topic: each instance keeps one ownership
//! session ([`session_watch`]) on which it holds the partitions it consumes
//! ([`hold`]) and counts the live instances, which sets its fair share
//! ([`membership`]).

pub mod hold;
pub mod membership;
pub mod session_watch;

use std::time::Duration;

use crate::store::StoreError;

/// Why this instance could not take, keep or give up a partition.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("the ownership session failed: {0}")]
    Store(#[from] StoreError),
    #[error("the ownership session did not answer within {0:?}")]
    NoAnswer(Duration),
    #[error("no ownership session is open")]
    NoSession,
    #[error("the ownership session was refused its member lock")]
    MemberLockRefused,
}
