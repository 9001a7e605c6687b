-- Adds each (warehouse, product) delta of a batch in one statement; rows come in
-- key order so that concurrent batches lock them in the same order.
INSERT INTO stock AS s (warehouse_id, product_id, quantity)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[])
ON CONFLICT (warehouse_id, product_id) DO UPDATE SET
    quantity   = s.quantity + EXCLUDED.quantity,
    version    = s.version + 1,
    updated_at = now()
RETURNING warehouse_id, product_id, version, quantity
