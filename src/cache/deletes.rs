//! The writes that take entries away: a batch's deletes before its COMMIT,
//! the outbox's deliveries, the probe that tells whether Redis takes deletes
//! at all, and the marker of a new epoch. Each delete is acknowledged only
//! together with the epoch's marker, read in the same pipeline: a server
//! without it lost writes (or is not the one readers believe), and its
//! acknowledgement proves nothing.

use fred::{
    interfaces::{ClientLike, ClusterInterface, KeysInterface},
    types::{InfoKind, Key, Value},
};
use uuid::Uuid;

use super::{
    Cache, CacheError, Epoch, pause,
    shards::{self, Shard},
    trust,
};
use crate::{metrics::CacheResult, throttle::Throttle};

/// Keys per `DEL`: bounds how long Redis runs one command.
const KEYS_PER_DEL: usize = 500;

impl Cache {
    /// Deletes `keys` (of `epoch`); true when Redis acknowledged every one of
    /// them on a server that holds `epoch`'s marker. A server without it has
    /// lost writes (or is not the one readers believe): the epoch is
    /// distrusted, and the keys are not acknowledged. Answers false at once
    /// while the client is disconnected. A `DEL` that Redis did not
    /// acknowledge in time and that lands later is harmless: it can only
    /// remove an entry, never bring an old one back.
    pub async fn invalidate(&self, epoch: Epoch, keys: Vec<String>) -> bool {
        let count = keys.len();
        if count == 0 {
            return true;
        }
        if !self.client.is_connected() || self.pause.active() {
            return false;
        }
        // Each command has its own timeout; this bounds the pipeline as a whole.
        let sent = tokio::time::timeout(self.timeout * 2, self.send_deletes(epoch, keys)).await;
        let failure = match sent {
            Ok(Ok(Some(_))) => {
                self.pause.clear();
                self.metrics.cache_invalidated(count);
                return true;
            }
            Ok(Ok(None)) => {
                if self.trust.distrust(epoch) {
                    self.metrics
                        .cache_distrusted(trust::Distrust::Invalidation.as_str());
                    tracing::warn!(%epoch, "Redis lost this cache epoch's marker: a new epoch begins");
                }
                return false;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.pause.start(pause::AFTER_FAILURE);
        self.metrics.cache(CacheResult::Error);
        static INVALIDATE: Throttle = Throttle::per_second();
        if let Some(suppressed) = INVALIDATE.allow() {
            tracing::warn!(error = %failure, keys = count, suppressed, "cache invalidation failed");
        }
        false
    }

    /// Whether Redis acknowledges a delete in `epoch` now, with the epoch's
    /// marker in place: a `DEL` of keys no entry uses, and the marker. The
    /// keys are of two hash slots, as a batch's are: one node of a cluster
    /// behind a plain URL acknowledges a key of its own slots, and refuses
    /// (`CROSSSLOT`) every batch all the same.
    pub async fn deletes_acknowledged(&self, epoch: Epoch) -> bool {
        if !self.client.is_connected() {
            return false;
        }
        let probe = probe_keys(epoch);
        matches!(
            tokio::time::timeout(self.timeout * 2, self.send_deletes(epoch, probe)).await,
            Ok(Ok(Some(_)))
        )
    }

    /// Deletes the keys with one `DEL` per [`KEYS_PER_DEL`] keys (in a
    /// cluster, per hash slot as well: fred sends each command of a pipeline
    /// to the master of its slot), then reads `epoch`'s marker (a cluster's,
    /// on every master), in one pipeline: a round trip per batch, not one
    /// per key. The keys move into the commands, uncopied. Returns the
    /// marker, `None` if any master lacks its own.
    async fn send_deletes(
        &self,
        epoch: Epoch,
        keys: Vec<String>,
    ) -> Result<Option<String>, fred::error::Error> {
        let pipeline = self.client.pipeline();
        // One group of keys for one server; a cluster's, one group per slot.
        let groups: Vec<Vec<Key>> = if self.clustered {
            fred::util::group_by_hash_slot(keys)?
                .into_values()
                .map(Vec::from)
                .collect()
        } else {
            vec![keys.into_iter().map(Key::from).collect()]
        };
        for group in groups {
            let mut keys = group.into_iter();
            loop {
                let chunk: Vec<Key> = keys.by_ref().take(KEYS_PER_DEL).collect();
                if chunk.is_empty() {
                    break;
                }
                let () = pipeline.del(chunk).await?;
            }
        }
        let markers = self.marker_keys(epoch)?;
        for marker in &markers {
            let () = pipeline.get(marker.as_str()).await?;
        }
        let mut replies: Vec<Value> = pipeline.all().await?;
        let read = replies.split_off(replies.len().saturating_sub(markers.len()));
        let mut held: Vec<Option<String>> = read.into_iter().map(|m| m.convert().ok()).collect();
        if held.len() != markers.len() || held.iter().any(Option::is_none) {
            return Ok(None);
        }
        Ok(held.pop().flatten())
    }

    /// The keys of `epoch`'s markers: one, or one per master of a cluster.
    fn marker_keys(&self, epoch: Epoch) -> Result<Vec<String>, fred::error::Error> {
        if !self.clustered {
            return Ok(vec![epoch.marker_key()]);
        }
        Ok(self
            .shards()?
            .iter()
            .map(|shard| epoch.marker_key_in(Some(&shard.tag)))
            .collect())
    }

    /// The cluster's masters as fred knows them now.
    fn shards(&self) -> Result<Vec<Shard>, fred::error::Error> {
        let shards = self
            .client
            .cached_cluster_state()
            .map(|routing| shards::shards(&routing))
            .unwrap_or_default();
        if shards.is_empty() {
            return Err(fred::error::Error::new(
                fred::error::ErrorKind::Cluster,
                "the cluster's layout is not known yet",
            ));
        }
        Ok(shards)
    }

    /// Writes the marker of a new `epoch` (the run id of the server it is
    /// written to; in a cluster, one on every master, in a slot of its own),
    /// and gives `previous`'s markers the entries' TTL, after which no entry
    /// of that epoch is left. The epoch may be committed in PostgreSQL only
    /// once this succeeded ([`super::outbox_watch`]).
    pub async fn mark_epoch(&self, epoch: Epoch, previous: Epoch) -> Result<(), CacheError> {
        let ttl = i64::try_from(self.ttl_secs).unwrap_or(i64::MAX);
        let write = async {
            if !self.clustered {
                let info: String = self.client.info(Some(InfoKind::Server)).await?;
                let run_id = run_id(&info)?;
                let () = self
                    .client
                    .set(epoch.marker_key(), run_id, None, None, false)
                    .await?;
                let _: Value = self.client.expire(previous.marker_key(), ttl, None).await?;
                return Ok(());
            }
            self.client.sync_cluster().await?;
            for shard in self.shards()? {
                let master = fred::types::config::Server::new(shard.host.as_str(), shard.port);
                let node = self.client.with_cluster_node(master);
                let info: String = node.info(Some(InfoKind::Server)).await?;
                let run_id = run_id(&info)?;
                let tag = Some(shard.tag.as_str());
                let () = node
                    .set(epoch.marker_key_in(tag), run_id, None, None, false)
                    .await?;
                let _: Value = node.expire(previous.marker_key_in(tag), ttl, None).await?;
            }
            Ok::<_, CacheError>(())
        };
        tokio::time::timeout(self.timeout * 4, write)
            .await
            .map_err(|_| CacheError::Timeout)?
    }
}

/// The run id in `INFO server`'s text.
fn run_id(info: &str) -> Result<String, CacheError> {
    trust::info_run_id(info)
        .map(str::to_owned)
        .ok_or(CacheError::NoRunId)
}

/// Two keys of `epoch` that no entry uses, in two different hash slots.
fn probe_keys(epoch: Epoch) -> Vec<String> {
    let first = epoch.movement_key(Uuid::nil());
    let slot = fred::util::redis_keyslot(first.as_bytes());
    let second = (1..=u128::from(u16::MAX))
        .map(|n| epoch.movement_key(Uuid::from_u128(n)))
        .find(|key| fred::util::redis_keyslot(key.as_bytes()) != slot)
        .unwrap_or_else(|| epoch.stock_key(Uuid::nil(), Uuid::nil()));
    vec![first, second]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_names_two_hash_slots() {
        for _ in 0..20 {
            let keys = probe_keys(Epoch::random());
            let slot = |k: &String| fred::util::redis_keyslot(k.as_bytes());
            assert_eq!(keys.len(), 2);
            assert_ne!(slot(&keys[0]), slot(&keys[1]));
        }
    }
}
