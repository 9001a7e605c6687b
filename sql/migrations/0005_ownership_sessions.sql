-- Partition ownership moves from rows with an expiry to session-level advisory
-- locks, which the server releases the moment the holding connection ends
-- (docs/SPEC.md section 7). The rows of 0002 and 0003 go: who holds what is
-- read from the lock table itself, so it can never be stale.
DROP TABLE partition_leases;
DROP TABLE consumer_instances;

-- The first advisory-lock key of each topic, assigned once. The two-key lock
-- (lock_key, partition) is that partition's ownership; (-lock_key, backend
-- pid) marks a live instance of the topic. Keys start at 1000 because the
-- two-key space below is taken: (1, k) locks a batch's movements.
CREATE TABLE consumer_topics (
    topic    text    PRIMARY KEY,
    lock_key integer GENERATED ALWAYS AS IDENTITY (START WITH 1000) UNIQUE CHECK (lock_key >= 1000)
);

-- Which session holds which partition, now: one row per granted ownership lock.
-- `owner` is the holder's application_name ("warehouse-monitor <instance id>").
CREATE VIEW partition_owners AS
SELECT t.topic,
       l.objid::bigint::integer AS partition,
       a.application_name       AS owner,
       l.pid,
       a.backend_start          AS session_started
FROM consumer_topics t
JOIN pg_locks l
  ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 AND l.classid = t.lock_key::oid
LEFT JOIN pg_stat_activity a ON a.pid = l.pid;

-- The live consumer instances of each topic: one row per open ownership session.
CREATE VIEW consumer_members AS
SELECT t.topic,
       a.application_name AS owner,
       l.pid,
       a.backend_start    AS session_started
FROM consumer_topics t
JOIN pg_locks l
  ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 AND l.classid = (-t.lock_key)::oid
LEFT JOIN pg_stat_activity a ON a.pid = l.pid;
