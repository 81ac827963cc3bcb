-- v2: the swept parameter names of a batch, for aggregating results per swept point.
ALTER TABLE batches ADD COLUMN axes TEXT NOT NULL DEFAULT '[]';
