-- Deletes delivered outbox rows (locked by the delivering transaction).
DELETE FROM cache_outbox WHERE id = ANY($1::bigint[])
