-- Compare-and-set of a partition's offset: succeeds (1 row) only when the stored
-- value is still the one this consumer read ($3, NULL when there was no row).
INSERT INTO consumer_offsets AS o (topic, partition, next_offset)
VALUES ($1, $2, $4)
ON CONFLICT (topic, partition) DO UPDATE
    SET next_offset = EXCLUDED.next_offset, updated_at = now()
    WHERE o.next_offset = $3
