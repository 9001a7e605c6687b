-- Which instance consumes which partition: a lease that its owner renews and
-- that anyone may take once it has expired (a dead instance's partitions are
-- taken over). Offsets stay guarded by their own compare-and-set.
CREATE TABLE partition_leases (
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    owner      uuid        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (topic, partition)
);
