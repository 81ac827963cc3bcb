-- v3 (SQLite's v7): when a batch was cancelled.
ALTER TABLE batches ADD COLUMN cancelled_at BIGINT;
CREATE INDEX replicas_in_flight ON replicas(volunteer_id) WHERE state = 'in_progress';
