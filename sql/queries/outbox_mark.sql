-- The mark: every cached entry is suspect, and the next delivery begins a new
-- epoch. At most one waits (a unique index on the marks).
INSERT INTO cache_outbox (mark) VALUES (true)
ON CONFLICT (mark) WHERE mark DO NOTHING
