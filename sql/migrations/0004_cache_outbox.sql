-- Cache invalidations that Redis did not acknowledge before their batch's
-- COMMIT, written in that same transaction, so that they survive a crash and
-- any instance can deliver them; deleted once Redis has acknowledged them.
-- While any row exists, no instance reads from the cache (docs/SPEC.md,
-- section 8, "Cache invalidation that survives crashes").
-- A row without keys is an announcement: a consumer that could not reach Redis
-- commits one, then waits before it commits a batch with undelivered
-- invalidations, so that every instance has stopped reading the cache first.
CREATE TABLE cache_outbox (
    id         bigserial   PRIMARY KEY,
    -- Cache keys and the row versions that made them stale, pairwise.
    keys       text[]      NOT NULL,
    versions   bigint[]    NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(keys) = cardinality(versions))
);
