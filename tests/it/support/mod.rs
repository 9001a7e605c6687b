//! The tests' harness, written once: the application in the test's process
//! and the real binary as a child process (`helpers`, `process`), the
//! private servers (`redis`, `postgres`), the metrics parser (`metrics`), a
//! generated stream and its expected stock (`stream`), certificates
//! (`pki`), and waiting (`eventually`). Capability modules import from here
//! only.

pub(crate) mod eventually;
pub(crate) mod helpers;
pub(crate) mod metrics;
pub(crate) mod pki;
pub(crate) mod postgres;
pub(crate) mod process;
pub(crate) mod redis;
pub(crate) mod stream;
