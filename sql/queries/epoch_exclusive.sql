-- Waits for every batch transaction in flight (sql/queries/epoch_share.sql)
-- and keeps new ones out until this transaction ends.
SELECT pg_advisory_xact_lock(2, 0)
