//! Developer tools kept out of the service: generated demo traffic, and the
//! service binary and a redis-server run as child processes by the
//! benchmarks and the tests.

pub mod child;
pub mod produce;
pub mod redis_server;

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
}
