-- Outbox rows for one delivery: rows with keys (when $1, i.e. Redis is
-- reachable) and announcements older than $2 seconds, oldest first, locked so
-- that another instance delivering at the same time takes other rows.
SELECT id, keys, versions, created_at FROM cache_outbox
WHERE (cardinality(keys) > 0 AND $1::boolean)
   OR (cardinality(keys) = 0 AND created_at < now() - make_interval(secs => $2::float8))
ORDER BY id
LIMIT $3
FOR UPDATE SKIP LOCKED
