COPY movement_events (movement_id, product_id, event, warehouse_id, warehouse_code, quantity,
                      happened_at, message_id, emitted_at, kafka_topic, kafka_partition, kafka_offset)
FROM STDIN (FORMAT binary)
