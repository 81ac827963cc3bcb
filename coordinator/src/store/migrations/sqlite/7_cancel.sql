-- v7: a scientist can cancel a batch; when it was cancelled (NULL: it was not).
ALTER TABLE batches ADD COLUMN cancelled_at INTEGER;
