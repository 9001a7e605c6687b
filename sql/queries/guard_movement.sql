-- Run just before a read that may fill the cache, as a statement of its own:
-- false while a batch holds the movement's advisory lock (sql/queries/
-- lock_movements.sql), which it takes before it writes the movement and keeps
-- until its COMMIT. Taken and released at once (it ends with its statement).
SELECT pg_try_advisory_xact_lock_shared(1, $1)
