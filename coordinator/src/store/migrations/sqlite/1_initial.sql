CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE volunteers (
    id INTEGER PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    nickname TEXT,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    valid INTEGER NOT NULL DEFAULT 0,
    invalid INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    spot_failed INTEGER NOT NULL DEFAULT 0,
    credit REAL NOT NULL DEFAULT 0,
    blacklisted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    operator INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    key_id INTEGER REFERENCES api_keys(id),
    name TEXT NOT NULL,
    kernel TEXT NOT NULL,
    policy TEXT NOT NULL,
    spot_rate REAL NOT NULL,
    units INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE units (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    kernel TEXT NOT NULL,
    params TEXT NOT NULL,
    output_len INTEGER NOT NULL,
    work REAL NOT NULL,
    state TEXT NOT NULL,
    min_quorum INTEGER NOT NULL,
    target_results INTEGER NOT NULL,
    max_error_results INTEGER NOT NULL,
    max_total_results INTEGER NOT NULL,
    deadline_s INTEGER NOT NULL,
    target INTEGER NOT NULL,
    wanted INTEGER NOT NULL,
    spot TEXT NOT NULL,
    spot_digest BLOB,
    canonical_replica INTEGER,
    canonical_digest BLOB,
    summary TEXT,
    fail_reason TEXT,
    created_at INTEGER NOT NULL,
    done_at INTEGER
);
CREATE INDEX units_wanted ON units(id) WHERE wanted > 0;
CREATE INDEX units_batch ON units(batch_id, state);
CREATE INDEX units_state ON units(state);
CREATE TABLE replicas (
    id INTEGER PRIMARY KEY,
    unit_id INTEGER NOT NULL REFERENCES units(id),
    volunteer_id INTEGER NOT NULL REFERENCES volunteers(id),
    state TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    deadline_at INTEGER NOT NULL,
    reported_at INTEGER,
    late INTEGER NOT NULL DEFAULT 0,
    digest BLOB,
    checkpoints TEXT,
    summary TEXT,
    error TEXT,
    adapter TEXT
);
CREATE INDEX replicas_unit ON replicas(unit_id);
CREATE INDEX replicas_volunteer_unit ON replicas(volunteer_id, unit_id);
CREATE INDEX replicas_deadline ON replicas(deadline_at) WHERE state = 'in_progress';
CREATE INDEX replicas_state ON replicas(state);
-- Canonical and reported outputs, stored once by their data digest (protocol::Digest::of_data).
CREATE TABLE outputs (digest BLOB PRIMARY KEY, bytes BLOB NOT NULL) WITHOUT ROWID;
-- Units whose spot-check answer the coordinator still has to compute.
CREATE TABLE spot_queue (unit_id INTEGER PRIMARY KEY REFERENCES units(id));
