-- Deletes announcements that a committed batch row now stands in for, except
-- those another batch transaction still holds.
DELETE FROM cache_outbox WHERE id IN (
    SELECT id FROM cache_outbox
    WHERE id = ANY($1::bigint[]) AND cardinality(keys) = 0
    FOR UPDATE SKIP LOCKED
)
