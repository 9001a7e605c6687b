//! What Redis does once the cache fills it, read for the start-up check
//! (`app/check.rs`): without `maxmemory` it grows until the machine runs out
//! of memory, and under `noeviction` a full Redis refuses the cache's fills,
//! so reads go to PostgreSQL for good. Asked with `CONFIG GET` over a
//! connection of its own, made as the cache's (URL, password, TLS), which is
//! closed again: the check must not hold or disturb the cache's connections.

use std::{collections::HashMap, time::Duration};

use fred::{
    error::{Error, ErrorKind},
    interfaces::{ClientLike, ConfigInterface},
    types::{Builder, config::Config},
};

use super::{CacheError, connect::connection};
use crate::config::RedisSettings;

/// How long connecting and asking may take together.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Redis' memory limit and what it does on reaching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// `maxmemory`, bytes; 0 is no limit.
    pub maxmemory: u64,
    /// `maxmemory-policy`: `noeviction`, `allkeys-lru`, ...
    pub policy: String,
}

/// Reads `maxmemory` and `maxmemory-policy` of the configured Redis.
/// [`CacheError::ConfigRefused`] when the server answers `CONFIG GET` with
/// an error (renamed or forbidden, as managed services do), other errors
/// when it cannot be reached.
pub async fn limits(settings: &RedisSettings) -> Result<Eviction, CacheError> {
    let (config, _) = connection(settings)?;
    let client = Builder::from_config(Config {
        fail_fast: true,
        ..config
    })
    .with_connection_config(|c| {
        c.connection_timeout = Duration::from_secs(1);
        c.internal_command_timeout = Duration::from_secs(1);
        c.max_command_attempts = 1;
    })
    .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(1))
    .build()
    .map_err(CacheError::Start)?;
    let asked = tokio::time::timeout(ANSWER_WITHIN, async {
        let _connection = client.init().await?;
        client
            .config_get::<HashMap<String, String>, _>("maxmemory*")
            .await
            .map_err(refused)
    })
    .await;
    let _ = client.quit().await;
    let values = asked.map_err(|_| CacheError::Timeout)??;
    read(&values)
}

/// An error reply is the server refusing the command; the rest (I/O,
/// timeouts) is not being able to ask.
fn refused(e: Error) -> CacheError {
    match e.kind() {
        ErrorKind::Unknown | ErrorKind::Auth | ErrorKind::InvalidCommand => {
            CacheError::ConfigRefused(e)
        }
        _ => CacheError::Redis(e),
    }
}

/// The two values out of what `CONFIG GET maxmemory*` listed.
fn read(values: &HashMap<String, String>) -> Result<Eviction, CacheError> {
    let hidden = |name| CacheError::ConfigHidden(name);
    let maxmemory = values
        .get("maxmemory")
        .ok_or(hidden("maxmemory"))?
        .parse()
        .map_err(|_| hidden("maxmemory"))?;
    let policy = values
        .get("maxmemory-policy")
        .ok_or(hidden("maxmemory-policy"))?
        .clone();
    Ok(Eviction { maxmemory, policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_values_and_names_a_missing_one() {
        let listed = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let both = listed(&[
            ("maxmemory", "67108864"),
            ("maxmemory-policy", "allkeys-lru"),
            ("maxmemory-samples", "5"),
        ]);
        assert_eq!(
            read(&both).unwrap(),
            Eviction {
                maxmemory: 64 << 20,
                policy: "allkeys-lru".into()
            }
        );
        let no_policy = listed(&[("maxmemory", "0")]);
        let e = read(&no_policy).unwrap_err().to_string();
        assert!(e.contains("maxmemory-policy"), "{e}");
        let garbled = listed(&[("maxmemory", "lots"), ("maxmemory-policy", "noeviction")]);
        assert!(matches!(
            read(&garbled),
            Err(CacheError::ConfigHidden("maxmemory"))
        ));
    }
}
