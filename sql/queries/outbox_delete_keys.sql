-- Keys Redis acknowledged (locked by the delivering transaction).
DELETE FROM cache_outbox_keys WHERE key = ANY($1::text[])
