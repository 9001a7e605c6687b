-- Deletes announcements older than $1 seconds that no batch holds, once
-- nothing else waits: their consumer has long committed with them, or died.
-- While keys or the mark wait, they stay, so that a consumer in a long Redis
-- outage keeps the one it holds batch after batch.
DELETE FROM cache_outbox WHERE id IN (
    SELECT id FROM cache_outbox
    WHERE NOT mark AND created_at < now() - make_interval(secs => $1::float8)
      AND NOT EXISTS (SELECT FROM cache_outbox WHERE mark)
      AND NOT EXISTS (SELECT FROM cache_outbox_keys)
    FOR UPDATE SKIP LOCKED
)
