//! A Redis Cluster as the cache sees it: its masters, the hash slots each
//! serves, and where each keeps its epoch marker.
//!
//! Why one marker per master: the rule of epochs ([`super::trust`]) is that
//! a server is believed for an epoch only while it holds the epoch's marker
//! with its own run id. In a cluster each master holds only the keys of its
//! own slots, and each may fail over to a lagging replica on its own. So
//! each master gets a marker in one of its own slots (a key whose hash tag
//! lands there), written with that master's run id, and each master's
//! tracking connection reads its own: a shard that lost writes shows it
//! there, whatever the others hold.
//!
//! The layout comes from fred's view of the cluster (`CLUSTER SLOTS`), and
//! a shard's marker lives in its lowest slot. When slots move or a replica
//! is promoted, the marker read where the new layout says no longer holds
//! the reading server's run id, so the epoch ends and a new one is marked
//! where the new layout says: a change of layout costs the cache's entries,
//! never a stale answer.

use fred::types::cluster::ClusterRouting;

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16_384;

/// No shard serves the slot (the cluster is incomplete).
const NO_SHARD: u16 = u16::MAX;

/// One master and the slots it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shard {
    pub host: String,
    pub port: u16,
    /// Its slot ranges, first to last.
    pub ranges: Vec<(u16, u16)>,
    /// The hash tag of its marker (`wm:<epoch>:marker:{<tag>}`), a key of
    /// its lowest slot.
    pub tag: String,
}

/// The masters of a cluster, and which serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    pub shards: Vec<Shard>,
    /// The index in `shards` of each slot's master, or [`NO_SHARD`].
    by_slot: Vec<u16>,
}

impl Layout {
    /// The layout of fred's cached view; `None` before fred has one.
    pub(super) fn of(routing: &ClusterRouting) -> Option<Self> {
        let mut shards: Vec<Shard> = Vec::new();
        let mut by_slot = vec![NO_SHARD; SLOTS];
        for range in routing.slots() {
            let (host, port) = (range.primary.host.to_string(), range.primary.port);
            let index = match shards.iter().position(|s| s.host == host && s.port == port) {
                Some(index) => index,
                None => {
                    shards.push(Shard {
                        host,
                        port,
                        ranges: Vec::new(),
                        tag: String::new(),
                    });
                    shards.len() - 1
                }
            };
            shards[index].ranges.push((range.start, range.end));
            let slots = usize::from(range.start)..=usize::from(range.end).min(SLOTS - 1);
            for slot in &mut by_slot[slots] {
                *slot = u16::try_from(index).unwrap_or(NO_SHARD);
            }
        }
        if shards.is_empty() {
            return None;
        }
        for shard in &mut shards {
            shard.ranges.sort_unstable();
            shard.tag = tag_of_slot(shard.ranges[0].0);
        }
        Some(Self { shards, by_slot })
    }

    /// The index of the shard serving `key`.
    pub(super) fn shard_of(&self, key: &str) -> Option<usize> {
        let slot = usize::from(fred::util::redis_keyslot(key.as_bytes()));
        self.by_slot
            .get(slot)
            .filter(|index| **index != NO_SHARD)
            .map(|index| usize::from(*index))
    }

    /// The marker tags, one per shard.
    pub(super) fn tags(&self) -> impl Iterator<Item = &str> {
        self.shards.iter().map(|s| s.tag.as_str())
    }
}

/// The shortest decimal number whose hash slot is `slot`: a hash tag that
/// puts a key there. Every slot has one below a few hundred thousand.
pub(super) fn tag_of_slot(slot: u16) -> String {
    (0_u32..)
        .map(|n| n.to_string())
        .find(|tag| fred::util::redis_keyslot(tag.as_bytes()) == slot)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Epoch;

    #[test]
    fn a_tag_puts_a_marker_in_the_slot_it_was_made_for() {
        for slot in [0_u16, 1, 5460, 5461, 10922, 16383] {
            let tag = tag_of_slot(slot);
            let marker = Epoch(42).marker_key_in(Some(&tag));
            assert_eq!(
                fred::util::redis_keyslot(marker.as_bytes()),
                slot,
                "{marker}"
            );
        }
    }
}
