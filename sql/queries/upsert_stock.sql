-- Adds each (warehouse, product) delta of a batch in one statement; rows come in
-- key order so that concurrent batches lock them in the same order. $4 is the
-- batch's stock version (sql/migrations/0006): a row takes it unless a batch
-- with a larger one changed the row first, and then its own version + 1.
INSERT INTO stock AS s (warehouse_id, product_id, quantity, version)
SELECT w, p, q, $4::bigint FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS d (w, p, q)
ON CONFLICT (warehouse_id, product_id) DO UPDATE SET
    quantity   = s.quantity + EXCLUDED.quantity,
    version    = GREATEST(s.version + 1, EXCLUDED.version),
    updated_at = now()
RETURNING warehouse_id, product_id, version, quantity
