-- Gives partition $2 of the topic whose key is $1 up: false when this session
-- did not hold it.
SELECT pg_advisory_unlock($1::int4, $2::int4)
