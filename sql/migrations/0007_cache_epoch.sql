-- The cache epoch, a bounded cache outbox, and the end of stock versions
-- drawn from a sequence (docs/SPEC.md section 8, "Cache invalidation").
--
-- Every cache key carries the epoch (`wm:<epoch>:...`). An epoch is believed
-- in Redis only while Redis holds its marker key, written when the epoch
-- begins, with the run id of the server that holds it. A Redis that
-- restarted, failed over, was flushed or reloaded an older snapshot is
-- caught by that marker (or by the flush it pushes to the near cache), and a
-- new epoch makes every older entry unreachable at once. The epoch is a
-- random number, so that deployments sharing one Redis never share keys.
CREATE TABLE cache_epoch (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch bigint  NOT NULL
);
INSERT INTO cache_epoch (epoch) VALUES ((random() * 9.2e18)::bigint);

-- Keys that Redis did not acknowledge before their batch's COMMIT, one row
-- per key: a key already waiting is not stored again.
CREATE TABLE cache_outbox_keys (
    key       text        PRIMARY KEY,
    queued_at timestamptz NOT NULL DEFAULT now()
);

-- cache_outbox now holds announcements and, at most one at a time, the mark
-- that says every entry is suspect: a new epoch is needed. Keyed rows of the
-- earlier release named keys without an epoch, which nothing reads any more:
-- the mark below covers them. (Instances of the earlier release read those
-- keys: stop them before starting this one.)
DELETE FROM cache_outbox WHERE cardinality(keys) > 0;
ALTER TABLE cache_outbox
    DROP COLUMN keys,
    DROP COLUMN versions,
    ADD COLUMN mark boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX cache_outbox_one_mark ON cache_outbox (mark) WHERE mark;
-- The first delivery writes the marker of the first epoch. It need not wait
-- for earlier permits to lapse (no instance of this release holds one yet).
INSERT INTO cache_outbox (mark, created_at) VALUES (true, '-infinity');

-- Stock versions grow by one per batch again, as movement versions do: the
-- sequence let batches invalidate before they locked their rows, which the
-- lease-and-delete cache forbids (a delete must follow the row lock).
DROP SEQUENCE stock_versions;
