-- The current cache epoch. In a batch, sent after the share lock is granted,
-- so that its snapshot follows any epoch change committed before.
SELECT epoch FROM cache_epoch
