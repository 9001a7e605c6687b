-- Live consumer instances per topic, so that partitions can be shared fairly:
-- each instance renews its row; a row past `expires_at` is a dead instance.
CREATE TABLE consumer_instances (
    topic       text        NOT NULL,
    instance_id uuid        NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (topic, instance_id)
);
