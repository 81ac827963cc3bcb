-- v8: queued spot-checks know their batch, so the pool takes them fairly across batches.
ALTER TABLE spot_queue ADD COLUMN batch_id INTEGER NOT NULL DEFAULT 0;
UPDATE spot_queue SET batch_id = (SELECT batch_id FROM units WHERE units.id = spot_queue.unit_id);
CREATE INDEX spot_queue_batch ON spot_queue(batch_id, unit_id);
