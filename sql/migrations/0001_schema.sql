-- Core schema of warehouse-monitor: events, movements, stock, offsets, rejects.

-- One row per accepted event. Key per docs/SPEC.md section 4: (movement_id, product_id, event).
CREATE TABLE movement_events (
    movement_id     uuid        NOT NULL,
    product_id      uuid        NOT NULL,
    event           text        NOT NULL CHECK (event IN ('departure', 'arrival')),
    warehouse_id    uuid        NOT NULL,
    warehouse_code  text        NOT NULL,
    quantity        bigint      NOT NULL CHECK (quantity BETWEEN 1 AND 1000000000),
    happened_at     timestamptz NOT NULL,
    message_id      uuid        NOT NULL,
    emitted_at      timestamptz,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (movement_id, product_id, event)
);

-- One row per movement: its two sides as far as they are known.
-- `version` grows with every batch that changes the row (cache versioning).
CREATE TABLE movements (
    movement_id    uuid        PRIMARY KEY,
    sender_id      uuid,
    sender_code    text,
    departed_at    timestamptz,
    receiver_id    uuid,
    receiver_code  text,
    arrived_at     timestamptz,
    version        bigint      NOT NULL DEFAULT 1,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (sender_id IS DISTINCT FROM receiver_id OR sender_id IS NULL)
);

-- Exact stock per (warehouse, product): arrivals minus departures, negatives kept.
CREATE TABLE stock (
    warehouse_id uuid        NOT NULL,
    product_id   uuid        NOT NULL,
    quantity     bigint      NOT NULL,
    version      bigint      NOT NULL DEFAULT 1,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (warehouse_id, product_id)
);

-- Next Kafka offset to consume per partition, committed with the batch it covers.
CREATE TABLE consumer_offsets (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- Every record that was not applied, with its raw bytes and a stable reason code.
CREATE TABLE rejected_events (
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    raw             bytea,
    reason          text        NOT NULL,
    detail          text        NOT NULL,
    record_time     timestamptz,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX rejected_events_reason_idx ON rejected_events (reason);
