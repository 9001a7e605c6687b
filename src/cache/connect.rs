//! How the service's clients reach Redis, decided once: the URL's server,
//! credentials and database, with the TLS of a `rediss://` URL checked
//! against `redis.ca_file` (or the system's roots). The cache's fred client,
//! the near cache's tracking connections and the start-up check of Redis'
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
    let mut config = Config::from_url(&settings.plain_url()).map_err(CacheError::Url)?;
    let tls = if settings.tls() {
        let tls = tls::client_config(Verify::Full, settings.ca_file()).map_err(CacheError::Tls)?;
        Some(tokio_rustls::TlsConnector::from(tls))
    } else {
        None
    };
    config.tls = tls.clone().map(Into::into);
    Ok((config, tls))
}

/// Where the near cache connects: a single Redis server, the master the
/// sentinels name, or (a template each master's connection takes) a
/// cluster's first node, with the URL's credentials, database and TLS.
pub(super) fn near_target(
    config: &Config,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
) -> Option<near::Target> {
    use fred::types::config::ServerConfig;
    let place = match &config.server {
        ServerConfig::Centralized { server } => near::Place::Server {
            host: server.host.to_string(),
            port: server.port,
        },
        ServerConfig::Sentinel {
            hosts,
            service_name,
            ..
        } => near::Place::Sentinel {
            sentinels: hosts.iter().map(|s| (s.host.to_string(), s.port)).collect(),
            service: service_name.clone(),
        },
        ServerConfig::Clustered { hosts, .. } => {
            let first = hosts.first()?;
            near::Place::ClusterMaster {
                host: first.host.to_string(),
                port: first.port,
            }
        }
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    Some(near::Target {
        place,
        username: config.username.clone(),
        password: config.password.clone(),
        database: config.database,
        tls,
        timeout: timeout * 4,
        marker_tag: None,
    })
}
