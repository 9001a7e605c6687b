DELETE FROM partition_leases WHERE topic = $1 AND partition = $2 AND owner = $3
