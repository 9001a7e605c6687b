-- Taken first by every batch transaction, and held until it ends: the cache
-- epoch cannot change while a batch deletes keys of the epoch it read. A new
-- epoch begins under the exclusive lock (sql/queries/epoch_exclusive.sql).
-- Key (2, 0): a space of its own (docs/SPEC.md section 8, lock keys).
SELECT pg_advisory_xact_lock_shared(2, 0)
