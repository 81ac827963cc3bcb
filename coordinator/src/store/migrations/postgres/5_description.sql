-- v5 (SQLite's v9): the scientist's paragraph for the volunteers who compute a batch.
ALTER TABLE batches ADD COLUMN description TEXT;
CREATE INDEX units_batch_done ON units(batch_id, done_at);
