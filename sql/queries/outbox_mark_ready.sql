-- Whether a mark older than $1 seconds waits: looked at before the exclusive
-- epoch lock is taken, so that deliveries of keys alone never take it.
SELECT EXISTS (
    SELECT FROM cache_outbox
    WHERE mark AND created_at < now() - make_interval(secs => $1::float8)
)
