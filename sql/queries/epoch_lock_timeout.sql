-- A new epoch waits this long at most for the batches in flight: new batches
-- queue behind its lock request meanwhile, so a batch that hangs must not
-- stall them all. The delivery is tried again at the next look.
SET LOCAL lock_timeout = '2s'
