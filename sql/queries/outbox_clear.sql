-- Delivered with a new epoch: the mark and every key waiting (their entries
-- are unreachable now).
WITH keys AS (DELETE FROM cache_outbox_keys)
DELETE FROM cache_outbox WHERE mark
