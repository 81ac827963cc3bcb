-- v3 (SQLite's v7): when a batch was cancelled.
ALTER TABLE batches ADD COLUMN cancelled_at BIGINT;
