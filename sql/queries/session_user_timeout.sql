-- Linux servers: the session also ends once data it sent, or a keepalive probe,
-- has gone unacknowledged for $1 ms (tcp_user_timeout), so a client cut off
-- mid-answer cannot hold its locks for the kernel's retransmission time.
SELECT set_config('tcp_user_timeout', $1, false)
