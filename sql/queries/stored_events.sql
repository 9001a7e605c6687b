SELECT movement_id, product_id, event, warehouse_id, quantity, happened_at
FROM movement_events
WHERE movement_id = ANY($1::uuid[])
