-- Live instances of the topic whose key is $1 in the database whose oid is $2:
-- sessions holding a member lock (join_group.sql). A session that ended holds
-- nothing, so a dead instance stops counting the moment the server ends its
-- session. It reads nothing but pg_locks, so it answers even while the lock
-- table is full.
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2 AND granted
  AND database = $2 AND classid = (-$1::int4)::oid
