-- v5: recomputation jobs are claimed in the database (until a time), so several workers, or
-- several coordinators sharing a database, never take the same one.
ALTER TABLE spot_queue ADD COLUMN claimed_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE challenges ADD COLUMN claimed_until INTEGER NOT NULL DEFAULT 0;
