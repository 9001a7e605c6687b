-- Deletes the given announcements (this instance's own, once Redis answers
-- it again), except those a batch transaction still holds.
DELETE FROM cache_outbox WHERE id IN (
    SELECT id FROM cache_outbox
    WHERE id = ANY($1::bigint[]) AND NOT mark
    FOR UPDATE SKIP LOCKED
)
