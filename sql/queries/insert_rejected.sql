-- A replayed record that was already rejected keeps its first row.
INSERT INTO rejected_events (kafka_topic, kafka_partition, kafka_offset, raw, reason, detail, record_time)
SELECT $1, $2, * FROM unnest($3::bigint[], $4::bytea[], $5::text[], $6::text[], $7::timestamptz[])
ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING
