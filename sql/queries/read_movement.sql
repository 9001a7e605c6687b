-- One movement with its product lines, read in one statement (one snapshot), so
-- that the version returned belongs to exactly these rows.
SELECT m.version, m.sender_id, m.sender_code, m.departed_at,
       m.receiver_id, m.receiver_code, m.arrived_at,
       e.product_id, e.event, e.quantity
FROM movements m
LEFT JOIN movement_events e ON e.movement_id = m.movement_id
WHERE m.movement_id = $1
ORDER BY e.product_id, e.event
