-- One outbox row: a batch's undelivered invalidations (key, version) pairwise,
-- or, with two empty arrays, an announcement.
INSERT INTO cache_outbox (keys, versions) VALUES ($1::text[], $2::bigint[]) RETURNING id
