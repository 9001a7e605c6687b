-- Live instances of the topic whose key is $1: sessions holding a member lock
-- (join_group.sql). A session that ended holds nothing, so a dead instance
-- stops counting the moment the server ends its session.
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = (-$1::int4)::oid
