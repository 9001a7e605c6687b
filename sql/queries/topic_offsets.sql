-- Every stored offset of a topic, with the seconds since it last moved.
SELECT partition, next_offset, extract(epoch FROM now() - updated_at)::bigint
FROM consumer_offsets
WHERE topic = $1
ORDER BY partition
