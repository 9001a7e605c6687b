-- Adds each (warehouse, product) delta of a batch in one statement; rows come in
-- key order so that concurrent batches lock them in the same order. The row
-- lock taken here is held until the COMMIT, and the cache key of each row is
-- deleted only after this statement returned (docs/SPEC.md section 8).
INSERT INTO stock AS s (warehouse_id, product_id, quantity)
SELECT w, p, q FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS d (w, p, q)
ON CONFLICT (warehouse_id, product_id) DO UPDATE SET
    quantity   = s.quantity + EXCLUDED.quantity,
    version    = s.version + 1,
    updated_at = now()
RETURNING warehouse_id, product_id, quantity
