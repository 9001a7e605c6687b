//! Developer tools kept out of the service: generated demo traffic.

pub mod produce;
