//! Developer tools kept out of the service: generated demo traffic, and the
//! service binary and a redis-server run as child processes by the
//! benchmarks and the tests.

pub mod child;
pub mod produce;
pub mod redis_server;
