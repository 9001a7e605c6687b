-- Marks this session as a live instance of the topic whose key is $1: the lock
-- (-key, own backend pid) lasts as long as the session. A pid names one live
-- backend, so no other session can hold the same key. Also returns the
-- database's oid, which count_members.sql filters pg_locks by.
SELECT pg_backend_pid(),
       pg_try_advisory_lock(-$1::int4, pg_backend_pid()),
       (SELECT oid FROM pg_database WHERE datname = current_database())
