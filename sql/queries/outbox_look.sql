-- What every instance looks at every outbox.poll_ms: the rows of the cache
-- outbox (announcements, the mark and the keys waiting; while there is any, no
-- instance reads the cache) and the cache epoch.
SELECT (SELECT count(*) FROM cache_outbox) + (SELECT count(*) FROM cache_outbox_keys),
       (SELECT epoch FROM cache_epoch)
