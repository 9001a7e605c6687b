//! The Lua scripts every write to the cache goes through, kept together
//! because they share one rule: an entry's version never goes back.
//!
//! An entry is one string: a *value* `version:payload` or a *tombstone*
//! `version:` (a version and no value). Lua numbers are doubles: versions
//! stay far below 2^53. An entry that does not parse is replaced.

/// For each `KEYS[i]`, sets it to `ARGV[2i] .. ":" .. ARGV[2i + 1]` (version,
/// payload; an empty payload is a tombstone) with a TTL of `ARGV[1]` seconds,
/// unless the stored version is newer, or equal and the stored entry is
/// already a value or the new one is a tombstone.
/// Readers store one key with it. Returns how many keys were set.
pub(super) const SET_IF_NEWER: &str = r#"
local ttl, set = ARGV[1], 0
for i, key in ipairs(KEYS) do
  local version, payload = ARGV[2 * i], ARGV[2 * i + 1]
  local new_version = tonumber(version)
  local cur = redis.call('GET', key)
  local newer = true
  if cur then
    local sep = string.find(cur, ':', 1, true)
    local cur_version = sep and tonumber(string.sub(cur, 1, sep - 1))
    if cur_version then
      local cur_is_value = string.len(cur) > sep
      newer = cur_version < new_version
        or (cur_version == new_version and not cur_is_value and payload ~= '')
    end
  end
  if newer then
    redis.call('SET', key, version .. ':' .. payload, 'EX', ttl)
    set = set + 1
  end
end
return set
"#;

/// The consumer's tombstones (and the outbox's deliveries), with
/// [`SET_IF_NEWER`]'s rule for them: for each `KEYS[i]`, stores `ARGV[i + 1]`
/// (`version:`) with a TTL of `ARGV[1]` seconds unless the stored version is
/// at least as new. Most keys are older or absent, so it sets first (one
/// call, `SET ... GET`) and puts the stored entry back, with a fresh TTL, in
/// the rare case it should stay: half the calls into Redis per key of a GET
/// then SET (issue 8). Returns how many keys took the version.
pub(super) const TOMBSTONE: &str = r#"
local ttl, set = ARGV[1], 0
for i, key in ipairs(KEYS) do
  local tombstone = ARGV[i + 1]
  local cur = redis.call('SET', key, tombstone, 'EX', ttl, 'GET')
  local sep = cur and string.find(cur, ':', 1, true)
  local cur_version = sep and tonumber(string.sub(cur, 1, sep - 1))
  if cur_version and cur_version >= tonumber(string.sub(tombstone, 1, -2)) then
    redis.call('SET', key, cur, 'EX', ttl)
  else
    set = set + 1
  end
end
return set
"#;
