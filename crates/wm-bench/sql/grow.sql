-- `wm-bench growth`: {movements} movements stored as real traffic leaves
-- them, before the timed ingest. Keys are random (md5 of a counter and a
-- salt, as uniform as v4 UUIDs), so that index inserts land all over the
-- indexes as they do in a database a year of traffic filled. Each movement
-- carries one product from one of 100 warehouses to another: two events,
-- the movement row, and the stock rows all of them sum to.
INSERT INTO movement_events (movement_id, product_id, event, warehouse_id, warehouse_code,
                             quantity, happened_at, message_id, emitted_at,
                             kafka_topic, kafka_partition, kafka_offset)
SELECT md5('m{salt}' || i)::uuid,
       md5('p' || (i % {products}))::uuid,
       e.event,
       CASE e.event WHEN 'departure' THEN md5('w' || (i % 100))::uuid
                    ELSE md5('w' || ((i * 7 + 3) % 100))::uuid END,
       CASE e.event WHEN 'departure' THEN 'W' || (i % 100) ELSE 'W' || ((i * 7 + 3) % 100) END,
       1 + i % 50,
       now() - make_interval(secs => ({movements} - i) * 1.5),
       md5('e{salt}' || e.event || i)::uuid,
       now() - make_interval(secs => ({movements} - i) * 1.5),
       'grown', (i % 3)::int, i
FROM generate_series(1, {movements}) AS i
CROSS JOIN (VALUES ('departure'), ('arrival')) AS e(event);

INSERT INTO movements (movement_id, sender_id, sender_code, departed_at,
                       receiver_id, receiver_code, arrived_at)
SELECT md5('m{salt}' || i)::uuid,
       md5('w' || (i % 100))::uuid, 'W' || (i % 100),
       now() - make_interval(secs => ({movements} - i) * 1.5),
       md5('w' || ((i * 7 + 3) % 100))::uuid, 'W' || ((i * 7 + 3) % 100),
       now() - make_interval(secs => ({movements} - i) * 1.5 - 60)
FROM generate_series(1, {movements}) AS i;

INSERT INTO stock (warehouse_id, product_id, quantity)
SELECT warehouse_id, product_id,
       sum(CASE event WHEN 'arrival' THEN quantity ELSE -quantity END)
FROM movement_events
GROUP BY warehouse_id, product_id;
