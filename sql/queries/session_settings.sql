-- Settings of an ownership session ($1 the application_name operators see in
-- pg_stat_activity and partition_owners): the server probes the client after
-- $2 s of silence, every $3 s, and gives up after $4 unanswered probes, ending
-- the session and releasing its locks.
SELECT set_config('application_name', $1, false),
       set_config('tcp_keepalives_idle', $2, false),
       set_config('tcp_keepalives_interval', $3, false),
       set_config('tcp_keepalives_count', $4, false)
