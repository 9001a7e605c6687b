//! One read through the cache, for every query endpoint: a hit answers with
//! the cached JSON text as it is; a miss takes a lease on the key, reads
//! PostgreSQL (guarded when leased: [`crate::store::read`]), serializes the
//! answer once, and fills the cache with that text if the lease is still
//! there, or records that the answer does not exist (a short-lived entry,
//! [`Cache::fill_absent`]), or gives the lease back (docs/SPEC.md section
//! 8). An endpoint says what to read; this says how the cache is used.
//!
//! It lives with the API, not in [`crate::cache`]: it is the API's use of
//! the cache's public calls, joined with the store's guarded reads and the
//! API's JSON, and the cache's invariant is kept by those calls, not here.

use std::future::Future;

use super::{State, json::JsonText};
use crate::{
    cache::{Cache, Key, Lease},
    store::StoreError,
};

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The database did not answer (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The answer could not be serialized (500).
    #[error("cannot serialize the answer: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A query's answer.
#[derive(Debug)]
pub enum Answer<T> {
    Found(JsonText<T>),
    /// The thing asked for does not exist (cached as the JSON `null`).
    Absent,
}

/// What an endpoint read from PostgreSQL.
#[derive(Debug)]
pub struct Fresh<T> {
    /// The answer with the row version it was read at; `None`: absent.
    pub value: Option<(i64, JsonText<T>)>,
    /// The read was guarded and no batch held its row: it may fill the cache.
    pub cacheable: bool,
}

/// Answers `key` from the cache, or else from `read`, called with whether
/// the read must be guarded (this reader holds the key's lease).
pub async fn read_through<T, F, Fut>(
    state: &State,
    key: Key,
    read: F,
) -> Result<Answer<T>, QueryError>
where
    F: FnOnce(bool) -> Fut,
    Fut: Future<Output = Result<Fresh<T>, QueryError>>,
{
    match state.cache.get_json(key).await {
        Some(hit) if hit == "null" => return Ok(Answer::Absent),
        Some(hit) => return Ok(Answer::Found(JsonText::trusted(hit))),
        None => {}
    }
    // The miss path is boxed: its PostgreSQL future is large, and every
    // layer of poem above the handler moves the handler's future.
    Box::pin(miss(&state.cache, key, read)).await
}

async fn miss<T, F, Fut>(cache: &Cache, key: Key, read: F) -> Result<Answer<T>, QueryError>
where
    F: FnOnce(bool) -> Fut,
    Fut: Future<Output = Result<Fresh<T>, QueryError>>,
{
    let lease = cache.claim(key).await;
    let fresh = match read(lease.is_some()).await {
        Ok(fresh) => fresh,
        Err(e) => {
            release(cache, lease).await;
            return Err(e);
        }
    };
    match (lease, fresh.cacheable, &fresh.value) {
        (Some(lease), true, Some((version, json))) => {
            cache.fill(lease, *version, json.as_str()).await;
        }
        (Some(lease), true, None) => cache.fill_absent(lease).await,
        (lease, ..) => release(cache, lease).await,
    }
    Ok(match fresh.value {
        Some((_, json)) => Answer::Found(json),
        None => Answer::Absent,
    })
}

/// Gives a lease back without a value.
async fn release(cache: &Cache, lease: Option<Lease>) {
    if let Some(lease) = lease {
        cache.release(lease).await;
    }
}
