SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = $2
