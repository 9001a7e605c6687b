//! The Lua scripts through which readers fill the cache, kept together
//! because they share one rule: a reader only stores a value over the
//! *lease* it took before it read PostgreSQL, so that anything that touched
//! the key meanwhile (a batch's `DEL`, an expiry, another fill) makes the
//! store fail (docs/SPEC.md, section 8).
//!
//! An entry is one string: a *value* `version:payload` or a *lease*
//! `lease:<token>`.

/// Takes a lease on `KEYS[1]` for `ARGV[1]` ms, as `ARGV[2]` (`lease:<uuid>`),
/// unless the key holds anything (a value, or another reader's lease).
/// Returns `ARGV[2]` when the lease was taken, otherwise the entry that is there.
pub(super) const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return ARGV[2]
"#;

/// Stores `ARGV[3]` (`version:payload`) under `KEYS[1]` with a TTL of `ARGV[1]`
/// seconds if the key still holds the lease `ARGV[2]`; with an empty
/// `ARGV[3]`, deletes the lease instead (the reader gave up). Returns 1 when
/// the lease was still there.
pub(super) const FILL: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1])
end
return 1
"#;
