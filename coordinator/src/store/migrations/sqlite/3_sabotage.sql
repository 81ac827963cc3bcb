-- v3: sabotage tolerance. The replication mode and its parameters per unit; passed checks and
-- the valid streak per volunteer; per adapter class check records; ringer lookup.
ALTER TABLE units ADD COLUMN replication TEXT NOT NULL DEFAULT 'quorum';
ALTER TABLE units ADD COLUMN target_error REAL NOT NULL DEFAULT 1e-4;
ALTER TABLE units ADD COLUMN saboteur_fraction REAL NOT NULL DEFAULT 0.1;
ALTER TABLE units ADD COLUMN ringer_rate REAL NOT NULL DEFAULT 0;
ALTER TABLE units ADD COLUMN distinct_prefixes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volunteers ADD COLUMN checks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volunteers ADD COLUMN streak INTEGER NOT NULL DEFAULT 0;
ALTER TABLE replicas ADD COLUMN alone INTEGER NOT NULL DEFAULT 0;
ALTER TABLE replicas ADD COLUMN ringer INTEGER NOT NULL DEFAULT 0;
ALTER TABLE replicas ADD COLUMN prefix TEXT;
ALTER TABLE replicas ADD COLUMN class TEXT;
CREATE TABLE classes (
    name TEXT PRIMARY KEY,
    passed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
ALTER TABLE units ADD COLUMN challenge_rate REAL NOT NULL DEFAULT 0;
-- Challenges: a reported segment the coordinator recomputes from the volunteer's own state.
-- status: open (waiting for the state), ready (to verify), passed, failed, expired.
CREATE TABLE challenges (
    replica_id INTEGER PRIMARY KEY REFERENCES replicas(id),
    from_step INTEGER NOT NULL,
    to_step INTEGER NOT NULL,
    state_digest BLOB,
    end_digest BLOB NOT NULL,
    output_digest BLOB,
    state TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deadline_at INTEGER NOT NULL
);
CREATE INDEX challenges_status ON challenges(status, deadline_at);
-- Ringers: units whose answer the coordinator computed itself and that are settled.
CREATE INDEX units_ringers ON units(batch_id, id) WHERE spot = 'ready' AND state = 'canonical';
CREATE INDEX replicas_ringer ON replicas(id) WHERE ringer = 1;
-- The scheduler's index covers the prefix rule too, so picking work reads no unit rows.
DROP INDEX units_wanted;
CREATE INDEX units_wanted ON units(id, distinct_prefixes) WHERE wanted > 0;
