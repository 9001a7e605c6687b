-- Rows in the cache outbox: while there is any, no instance reads the cache.
SELECT count(*) FROM cache_outbox
