-- Merges the sides a batch learned into each movement. LEAST/GREATEST skip NULLs:
-- departed_at stays the earliest departure, arrived_at the latest arrival.
INSERT INTO movements AS m (movement_id, sender_id, sender_code, departed_at,
                            receiver_id, receiver_code, arrived_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[],
                     $5::uuid[], $6::text[], $7::timestamptz[])
ON CONFLICT (movement_id) DO UPDATE SET
    sender_id     = COALESCE(m.sender_id, EXCLUDED.sender_id),
    sender_code   = COALESCE(m.sender_code, EXCLUDED.sender_code),
    departed_at   = LEAST(m.departed_at, EXCLUDED.departed_at),
    receiver_id   = COALESCE(m.receiver_id, EXCLUDED.receiver_id),
    receiver_code = COALESCE(m.receiver_code, EXCLUDED.receiver_code),
    arrived_at    = GREATEST(m.arrived_at, EXCLUDED.arrived_at),
    version       = m.version + 1,
    updated_at    = now()
RETURNING movement_id
