SELECT quantity, version FROM stock WHERE warehouse_id = $1 AND product_id = $2
