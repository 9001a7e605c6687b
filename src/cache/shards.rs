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

use std::sync::OnceLock;

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

/// The masters of fred's cached view, each with its slot ranges (first to
/// last) and its marker's tag; empty before fred has a view.
pub(super) fn shards(routing: &ClusterRouting) -> Vec<Shard> {
    let mut shards: Vec<Shard> = Vec::new();
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
    }
    for shard in &mut shards {
        shard.ranges.sort_unstable();
        shard.tag = tag_of_slot(shard.ranges[0].0);
    }
    shards
}

impl Layout {
    /// The layout of fred's cached view; `None` before fred has one.
    pub(super) fn of(routing: &ClusterRouting) -> Option<Self> {
        let shards = shards(routing);
        if shards.is_empty() {
            return None;
        }
        let mut by_slot = vec![NO_SHARD; SLOTS];
        for (index, shard) in shards.iter().enumerate() {
            for (start, end) in &shard.ranges {
                let slots = usize::from(*start)..=usize::from(*end).min(SLOTS - 1);
                for slot in &mut by_slot[slots] {
                    *slot = u16::try_from(index).unwrap_or(NO_SHARD);
                }
            }
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
}

/// The smallest decimal number whose hash slot is `slot`: a hash tag that
/// puts a key there. The table of all 16 384 is made once (about 170 000
/// numbers hashed), since every batch on a cluster names its markers.
pub(super) fn tag_of_slot(slot: u16) -> String {
    static TAGS: OnceLock<Vec<u32>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; SLOTS];
        let mut missing = SLOTS;
        for n in 0_u32.. {
            let slot = usize::from(fred::util::redis_keyslot(n.to_string().as_bytes()));
            if tags[slot] == u32::MAX {
                tags[slot] = n;
                missing -= 1;
                if missing == 0 {
                    break;
                }
            }
        }
        tags
    });
    tags.get(usize::from(slot))
        .map(u32::to_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Epoch;

    /// A `CLUSTER SLOTS` reply: (start, end, port of its master) per range.
    fn routing(ranges: &[(i64, i64, i64)]) -> ClusterRouting {
        use fred::types::Value;
        let value = Value::Array(
            ranges
                .iter()
                .map(|(start, end, port)| {
                    let node = Value::Array(vec![
                        Value::from("127.0.0.1"),
                        Value::Integer(*port),
                        Value::from(format!("node-{port}")),
                    ]);
                    Value::Array(vec![Value::Integer(*start), Value::Integer(*end), node])
                })
                .collect(),
        );
        ClusterRouting::from_cluster_slots(value, "127.0.0.1").unwrap()
    }

    #[test]
    fn each_key_goes_to_the_master_of_its_slot_and_each_master_has_a_marker_of_its_own() {
        let layout = Layout::of(&routing(&[
            (0, 5460, 7000),
            (5461, 10922, 7001),
            (10923, 16383, 7002),
        ]))
        .unwrap();
        assert_eq!(layout.shards.len(), 3);
        let epoch = Epoch(7);
        for (index, shard) in layout.shards.iter().enumerate() {
            let marker = epoch.marker_key_in(Some(&shard.tag));
            assert_eq!(layout.shard_of(&marker), Some(index), "{marker}");
            assert_eq!(
                shard.ranges[0].0,
                fred::util::redis_keyslot(marker.as_bytes())
            );
        }
        for n in 0..200_u128 {
            let key = epoch.movement_key(uuid::Uuid::from_u128(n));
            let slot = fred::util::redis_keyslot(key.as_bytes());
            let port = layout.shards[layout.shard_of(&key).unwrap()].port;
            let want = 7000 + u16::from(slot > 5460) + u16::from(slot > 10922);
            assert_eq!(port, want, "{key} in slot {slot}");
        }
        // A master with two ranges is one shard, its marker in the lowest.
        let split = Layout::of(&routing(&[
            (0, 99, 7001),
            (100, 16383, 7000),
            (200, 300, 7001),
        ]));
        let split = split.unwrap();
        assert_eq!(split.shards.len(), 2);
        let second = split.shards.iter().find(|s| s.port == 7001).unwrap();
        assert_eq!(second.ranges, vec![(0, 99), (200, 300)]);
        assert!(Layout::of(&routing(&[])).is_none(), "no layout yet");
    }

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
