//! Developer tools kept out of the service: generated demo traffic, and the
//! service binary run as a child process by the benchmarks and the tests.

pub mod child;
pub mod produce;
