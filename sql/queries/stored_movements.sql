SELECT movement_id, sender_id, receiver_id
FROM movements
WHERE movement_id = ANY($1::uuid[])
