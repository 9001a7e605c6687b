//! Cache keys and the epoch they belong to. Every key is
//! `wm:<epoch>:<kind>:<ids>`, and an epoch is believed only while Redis
//! holds its *marker*, `wm:<epoch>:marker`, with the run id of the server
//! holding it ([`super::trust`]). A new epoch (a random number, begun by the
//! delivery of the outbox's mark) makes every older entry unreachable at
//! once: that is how entries that a restarted, failed-over, flushed or
//! reloaded Redis may have brought back are never served.

use std::fmt::Write as _;

use uuid::Uuid;

const KEY_PREFIX: &str = "wm:";

/// A cache epoch: a non-negative random number kept in PostgreSQL
/// (`cache_epoch`), written in keys as 16 hexadecimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub i64);

impl Epoch {
    /// A fresh epoch, unlikely ever to meet another one (63 random bits).
    pub fn random() -> Self {
        let (high, _) = Uuid::new_v4().as_u64_pair();
        Self(i64::try_from(high >> 1).unwrap_or(0))
    }

    /// Key of a cached movement: `wm:<epoch>:movement:<id>`.
    pub fn movement_key(self, movement_id: Uuid) -> String {
        self.key("movement", &[movement_id])
    }

    /// Key of a cached stock answer: `wm:<epoch>:stock:<warehouse id>:<product id>`.
    pub fn stock_key(self, warehouse_id: Uuid, product_id: Uuid) -> String {
        self.key("stock", &[warehouse_id, product_id])
    }

    /// The key whose value, the run id of the Redis server that holds it,
    /// says that this server's entries of the epoch can be believed.
    pub fn marker_key(self) -> String {
        self.marker_key_in(None)
    }

    /// The marker key with a hash tag, `wm:<epoch>:marker:{<tag>}`: a
    /// cluster's master keeps its marker in a slot of its own
    /// (`cache/shards.rs`). Without a tag, [`Epoch::marker_key`].
    pub fn marker_key_in(self, tag: Option<&str>) -> String {
        match tag {
            Some(tag) => format!("{KEY_PREFIX}{self}:marker:{{{tag}}}"),
            None => format!("{KEY_PREFIX}{self}:marker"),
        }
    }

    /// `KEY_PREFIX`, the epoch, `kind`, then the ids (hyphenated, lower
    /// case), separated by colons, in one allocation: a batch makes one key
    /// per changed row, and `format!` growing the string piece by piece was
    /// 5% of the service's CPU in a 200 000-event ingest (perf).
    fn key(self, kind: &str, ids: &[Uuid]) -> String {
        let mut key = String::with_capacity(
            KEY_PREFIX.len() + 17 + kind.len() + ids.len() * (1 + uuid::fmt::Hyphenated::LENGTH),
        );
        key.push_str(KEY_PREFIX);
        // Writing into a String cannot fail.
        let _ = write!(key, "{self}:");
        key.push_str(kind);
        for id in ids {
            key.push(':');
            key.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        }
        key
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What the API asks the cache for, without the epoch: the cache adds the
/// epoch its permit is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Movement(Uuid),
    Stock {
        warehouse_id: Uuid,
        product_id: Uuid,
    },
}

impl Key {
    /// The Redis key of this answer in `epoch`.
    pub fn in_epoch(self, epoch: Epoch) -> String {
        match self {
            Key::Movement(id) => epoch.movement_key(id),
            Key::Stock {
                warehouse_id,
                product_id,
            } => epoch.stock_key(warehouse_id, product_id),
        }
    }
}

/// Where the payload of a stored `version:payload` value starts; `None` for a
/// lease or an entry without a version.
pub(super) fn payload_start(raw: &str) -> Option<usize> {
    let (version, payload) = raw.split_once(':')?;
    (version.parse::<i64>().is_ok() && !payload.is_empty()).then_some(version.len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_epoch_and_are_distinct() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let epoch = Epoch(0x2a);
        assert_eq!(
            epoch.movement_key(a),
            format!("wm:000000000000002a:movement:{a}")
        );
        assert_eq!(
            epoch.stock_key(a, b),
            format!("wm:000000000000002a:stock:{a}:{b}")
        );
        assert_ne!(epoch.stock_key(a, b), epoch.stock_key(b, a));
        assert_ne!(epoch.movement_key(a), Epoch(0x2b).movement_key(a));
        assert_eq!(epoch.marker_key(), "wm:000000000000002a:marker");
        assert_eq!(
            epoch.marker_key_in(Some("7")),
            "wm:000000000000002a:marker:{7}"
        );
        assert_eq!(Key::Movement(a).in_epoch(epoch), epoch.movement_key(a));
        let big = Epoch(i64::MAX);
        assert_eq!(big.to_string(), "7fffffffffffffff");
        assert!(big.movement_key(a).starts_with("wm:7fffffffffffffff:"));
        assert!((0..100).all(|_| Epoch::random().0 >= 0));
    }

    #[test]
    fn only_versioned_values_have_a_payload() {
        assert_eq!(payload_start("7:{\"a\":1}"), Some(2));
        assert_eq!(payload_start("0:null"), Some(2));
        assert_eq!(payload_start("lease:0123456789abcdef"), None);
        assert_eq!(payload_start("garbage"), None);
        assert_eq!(payload_start("8:"), None);
    }
}
