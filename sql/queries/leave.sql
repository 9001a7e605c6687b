-- Removes this instance, and rows of instances long dead.
DELETE FROM consumer_instances
WHERE topic = $1 AND (instance_id = $2 OR expires_at < now() - interval '1 day')
