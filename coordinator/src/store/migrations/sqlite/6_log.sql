-- v6: the transparency log. A unit's decision queues a receipt (log_queue) in the transaction
-- that makes it; the sequencer moves queued receipts into the tree (log_entries, and the
-- Merkle tree's stored hashes in log_hashes, Go's sumdb layout) and signs a checkpoint. Nothing
-- here is ever updated or deleted but the queue.
CREATE TABLE log_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id INTEGER NOT NULL,
    batch_id INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE log_entries (
    idx INTEGER PRIMARY KEY,
    unit_id INTEGER NOT NULL,
    batch_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX log_entries_unit ON log_entries(unit_id, idx);
CREATE INDEX log_entries_batch ON log_entries(batch_id, idx);
CREATE TABLE log_hashes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE log_checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE log_cosignatures (
    size INTEGER NOT NULL,
    witness TEXT NOT NULL,
    line TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (size, witness)
);
INSERT INTO meta(key, value) VALUES ('log_lock', x'00');
