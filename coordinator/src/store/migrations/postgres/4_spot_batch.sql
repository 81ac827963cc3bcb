-- v4 (SQLite's v8): queued spot-checks know their batch, so they are taken fairly.
ALTER TABLE spot_queue ADD COLUMN batch_id BIGINT NOT NULL DEFAULT 0;
UPDATE spot_queue SET batch_id = u.batch_id FROM units u WHERE u.id = spot_queue.unit_id;
CREATE INDEX spot_queue_batch ON spot_queue(batch_id, unit_id);
