//! Waiting for an outcome in an integration test: a check run again and
//! again until it holds or its patience runs out, and then a failure that
//! names the line that waited and the last thing the check saw, instead of a
//! fixed sleep that is too short on a busy machine and too long elsewhere.

use std::time::Duration;

/// How long [`eventually`] keeps checking, and how often.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Patience {
    timeout: Duration,
    every: Duration,
}

impl Patience {
    /// `secs` seconds, checking every 50 ms.
    pub(crate) fn secs(secs: u64) -> Self {
        Self {
            timeout: Duration::from_secs(secs),
            every: Duration::from_millis(50),
        }
    }

    /// Checks every `every` instead (a test that acts as soon as something
    /// happens, not long after).
    pub(crate) fn every(self, every: Duration) -> Self {
        Self { every, ..self }
    }
}

impl From<u64> for Patience {
    fn from(secs: u64) -> Self {
        Self::secs(secs)
    }
}

/// What a check of [`eventually`] returns: `Some(value)` or `Ok(value)` once
/// the condition holds; `None`, or `Err(what is awaited and what was seen)`
/// for the failure message, while it does not.
pub(crate) trait Outcome {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "condition".to_owned())
    }
}

impl<T, E: std::fmt::Display> Outcome for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Runs `check` until it succeeds, for `patience` (seconds, or a
/// [`Patience`]) at most; returns what it found, or fails the test with the
/// line that waited and the last thing `check` reported.
#[track_caller]
pub(crate) fn eventually<O, F, Fut>(
    patience: impl Into<Patience>,
    mut check: F,
) -> impl std::future::Future<Output = O::Value>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = O>,
{
    // Taken here: `#[track_caller]` does not reach into an async body.
    let caller = std::panic::Location::caller();
    let Patience { timeout, every } = patience.into();
    async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let why = match check().await.into_result() {
                Ok(found) => return found,
                Err(why) => why,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "not met within {timeout:?} (waiting at {caller}): {why}"
            );
            tokio::time::sleep(every).await;
        }
    }
}
