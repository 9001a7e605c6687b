-- An announcement: a consumer that could not reach Redis commits one, then
-- waits outbox.permit_ms before it commits a batch whose keys it queues.
INSERT INTO cache_outbox DEFAULT VALUES RETURNING id
