-- v7: a scientist can cancel a batch; when it was cancelled (NULL: it was not).
ALTER TABLE batches ADD COLUMN cancelled_at INTEGER;
-- Work a volunteer holds, counted at every work request (its allowance depends on it).
CREATE INDEX replicas_in_flight ON replicas(volunteer_id) WHERE state = 'in_progress';
