-- Compare-and-set of a partition's offset: succeeds (returns 1) only when the
-- stored value is still the one this consumer read ($3), or when it read no row
-- ($3 NULL) and there still is none. A row deleted or moved by anyone else
-- makes it return 0.
WITH updated AS (
    UPDATE consumer_offsets
    SET next_offset = $4, updated_at = now()
    WHERE topic = $1 AND partition = $2 AND next_offset = $3
    RETURNING 1
), inserted AS (
    INSERT INTO consumer_offsets (topic, partition, next_offset)
    SELECT $1, $2, $4
    WHERE $3::bigint IS NULL
    ON CONFLICT (topic, partition) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted)
