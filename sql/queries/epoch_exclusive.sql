-- Waits for every batch transaction in flight (sql/queries/epoch_share.sql)
-- and keeps new ones out until this transaction ends; at most the
-- transaction's lock_timeout (sql/queries/epoch_lock_timeout.sql).
SELECT pg_advisory_xact_lock(2, 0)
