-- Serialises batches (of any partition or instance) that touch the same movements.
-- Keys are taken in ascending order so that two batches cannot deadlock.
SELECT pg_advisory_xact_lock(1, k)
FROM (SELECT DISTINCT k FROM unnest($1::int4[]) AS k ORDER BY k) AS keys
