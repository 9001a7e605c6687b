-- The topic's advisory-lock key, assigned on first use. The no-op update makes
-- the row come back even when another instance inserted it concurrently.
INSERT INTO consumer_topics AS t (topic) VALUES ($1)
ON CONFLICT (topic) DO UPDATE SET topic = t.topic
RETURNING lock_key
