-- v6 (SQLite's v10): scientists' kernel packages, held units, and recomputation that needs a
-- GPU (see the SQLite migration for what each part is for).
CREATE TABLE packages (
    hash BYTEA PRIMARY KEY,
    name TEXT NOT NULL,
    author TEXT NOT NULL,
    files BYTEA NOT NULL,
    key_id BIGINT REFERENCES api_keys(id),
    status TEXT NOT NULL,
    reason TEXT,
    created_at BIGINT NOT NULL,
    changed_at BIGINT NOT NULL,
    class_pairs BIGINT NOT NULL DEFAULT 0,
    class_disagreements BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE package_errors (
    hash BYTEA NOT NULL,
    volunteer_id BIGINT NOT NULL,
    message TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (hash, volunteer_id)
);
ALTER TABLE units ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
ALTER TABLE units ADD COLUMN package BIGINT NOT NULL DEFAULT 0;
DROP INDEX units_wanted;
CREATE INDEX units_wanted ON units(id, distinct_prefixes, package) WHERE wanted > 0 AND held = 0;
ALTER TABLE spot_queue ADD COLUMN package BIGINT NOT NULL DEFAULT 0;
ALTER TABLE challenges ADD COLUMN package BIGINT NOT NULL DEFAULT 0;
