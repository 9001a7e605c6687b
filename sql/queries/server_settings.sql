-- Server settings by name, each as a number or word in its unit (max_wal_size
-- in MB, checkpoint_timeout in s): the caller converts with the unit given.
SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)
