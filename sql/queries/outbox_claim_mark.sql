-- The pending mark once it is older than $1 seconds, locked for its delivery
-- (skipped while another instance delivers it).
SELECT id FROM cache_outbox
WHERE mark AND created_at < now() - make_interval(secs => $1::float8)
FOR UPDATE SKIP LOCKED
