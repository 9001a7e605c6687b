-- A new cache epoch ($1, a random number): every key of the older ones is
-- unreachable from its COMMIT on.
UPDATE cache_epoch SET epoch = $1::bigint
