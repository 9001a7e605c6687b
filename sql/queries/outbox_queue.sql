-- Queues a batch's undelivered keys ($1, sorted), each once, unless the mark
-- is pending (it covers every key) or the keys waiting would exceed $2.
-- Returns whether the mark is pending and whether the keys fit.
WITH state AS (
    SELECT EXISTS (SELECT FROM cache_outbox WHERE mark) AS marked,
           (SELECT count(*) FROM cache_outbox_keys) + cardinality($1::text[]) <= $2 AS fits
), queued AS (
    INSERT INTO cache_outbox_keys (key)
    SELECT key FROM unnest($1::text[]) AS key, state
    WHERE state.fits AND NOT state.marked
    ORDER BY key
    ON CONFLICT (key) DO NOTHING
)
SELECT marked, fits FROM state
