-- Takes partition $2 of the topic whose key is $1 for this session, without
-- waiting: true when this session holds it now.
SELECT pg_try_advisory_lock($1::int4, $2::int4)
