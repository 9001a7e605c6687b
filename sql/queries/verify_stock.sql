-- Every (warehouse, product) whose stored stock differs from the sum of its events.
WITH computed AS (
    SELECT warehouse_id, product_id,
           SUM(CASE WHEN event = 'arrival' THEN quantity ELSE -quantity END)::bigint AS quantity
    FROM movement_events
    GROUP BY warehouse_id, product_id
)
SELECT COALESCE(c.warehouse_id, s.warehouse_id) AS warehouse_id,
       COALESCE(c.product_id, s.product_id)     AS product_id,
       COALESCE(c.quantity, 0)                  AS expected,
       s.quantity                               AS stored
FROM computed c
FULL OUTER JOIN stock s
  ON s.warehouse_id = c.warehouse_id AND s.product_id = c.product_id
WHERE s.quantity IS DISTINCT FROM COALESCE(c.quantity, 0)
ORDER BY 1, 2
