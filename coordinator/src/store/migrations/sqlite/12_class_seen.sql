-- v12: an adapter class remembers when it was last seen, so classes nobody uses expire (their
-- number is capped too; see decide::MAX_CLASSES). Classes from before count as seen now.
ALTER TABLE classes ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
UPDATE classes SET seen = CAST(strftime('%s', 'now') AS INTEGER);
CREATE INDEX classes_failed ON classes(failed DESC, passed DESC, name);
