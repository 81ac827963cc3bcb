-- v9: the scientist's paragraph for the volunteers who compute a batch (NULL: none).
ALTER TABLE batches ADD COLUMN description TEXT;
-- A batch's pace reads its latest settled units.
CREATE INDEX units_batch_done ON units(batch_id, done_at);
