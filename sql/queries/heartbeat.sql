-- Renews this instance ($2) for $3 ms and counts the *other* live instances of
-- the topic (the row written here is not visible to the same statement).
WITH beat AS (
    INSERT INTO consumer_instances (topic, instance_id, expires_at)
    VALUES ($1, $2, now() + make_interval(secs => $3::float8 / 1000))
    ON CONFLICT (topic, instance_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING 1
)
SELECT count(*) FROM consumer_instances
WHERE topic = $1 AND instance_id <> $2 AND expires_at > now()
