-- Keeps one of the given outbox rows from being deleted until this transaction
-- ends (a deleter needs FOR UPDATE, which waits for FOR KEY SHARE). Rows being
-- delivered right now are skipped. Returns the row held, if any.
SELECT id FROM cache_outbox WHERE id = ANY($1::bigint[])
ORDER BY id DESC LIMIT 1
FOR KEY SHARE SKIP LOCKED
