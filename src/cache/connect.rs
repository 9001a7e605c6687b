//! How the service's clients reach Redis, decided once: the URL's server,
//! credentials and database, with the TLS of a `rediss://` URL checked
//! against `redis.ca_file` (or the system's roots). The cache's fred client,
//! the near cache's tracking connection and the start-up check of Redis'
//! eviction settings ([`super::eviction`]) all connect so.

use std::time::Duration;

use fred::types::config::Config;

use super::{CacheError, near};
use crate::{
    config::RedisSettings,
    tls::{self, Verify},
};

/// The fred configuration of a client of `settings`' Redis, and the TLS
/// connector of a `rediss://` URL (the near cache connects with it).
pub(super) fn connection(
    settings: &RedisSettings,
) -> Result<(Config, Option<tokio_rustls::TlsConnector>), CacheError> {
    // fred would build TLS of its own for rediss://: parse the rest, set ours.
    let plain_url = settings.url.expose().replacen("rediss://", "redis://", 1);
    let mut config = Config::from_url(&plain_url).map_err(CacheError::Url)?;
    let tls = if settings.tls() {
        let tls = tls::client_config(Verify::Full, settings.ca_file()).map_err(CacheError::Tls)?;
        Some(tokio_rustls::TlsConnector::from(tls))
    } else {
        None
    };
    config.tls = tls.clone().map(Into::into);
    Ok((config, tls))
}

/// Where the near cache connects: the host of a single Redis server (none
/// for a cluster or sentinels), with the URL's credentials, database and TLS.
pub(super) fn near_target(
    config: &Config,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
) -> Option<near::Target> {
    let fred::types::config::ServerConfig::Centralized { server } = &config.server else {
        return None;
    };
    Some(near::Target {
        host: server.host.to_string(),
        port: server.port,
        username: config.username.clone(),
        password: config.password.clone(),
        database: config.database,
        tls,
        timeout: timeout * 4,
    })
}
