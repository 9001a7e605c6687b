-- Up to $1 waiting keys, locked for one delivery; keys another instance is
-- delivering are skipped.
SELECT key FROM cache_outbox_keys ORDER BY key LIMIT $1 FOR UPDATE SKIP LOCKED
