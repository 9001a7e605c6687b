-- Run just before a read that may fill the cache, as a statement of its own:
-- fails (55P03, lock_not_available) while a batch holds the stock row, which
-- its upsert locks until the COMMIT. The share lock ends with the statement.
SELECT true FROM stock WHERE warehouse_id = $1 AND product_id = $2 FOR SHARE NOWAIT
