-- Takes or renews the lease of a partition for owner $3 for $4 ms: succeeds (one
-- row returned) when the lease is free, expired, or already ours.
INSERT INTO partition_leases AS l (topic, partition, owner, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8 / 1000))
ON CONFLICT (topic, partition) DO UPDATE
    SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
    WHERE l.owner = EXCLUDED.owner OR l.expires_at < now()
RETURNING owner
