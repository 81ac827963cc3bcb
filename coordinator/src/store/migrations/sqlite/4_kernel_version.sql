-- v4: kernel versions: results of different versions are never compared.
ALTER TABLE batches ADD COLUMN kernel_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE units ADD COLUMN kernel_version INTEGER NOT NULL DEFAULT 1;
