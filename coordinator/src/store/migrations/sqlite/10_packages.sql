-- v10: scientists' kernel packages. A package is stored once, by the SHA-256 of its canonical
-- bytes, immutable; its status (pending, approved, suspended) says whether it is dispatched.
-- Errors are counted per volunteer (errors from several suspend it), and pairs of replicas on
-- one adapter class that disagree flag a digest package as nondeterministic.
CREATE TABLE packages (
    hash BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    author TEXT NOT NULL,
    files BLOB NOT NULL,
    key_id INTEGER REFERENCES api_keys(id),
    status TEXT NOT NULL,
    reason TEXT,
    created_at INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    class_pairs INTEGER NOT NULL DEFAULT 0,
    class_disagreements INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE package_errors (
    hash BLOB NOT NULL,
    volunteer_id INTEGER NOT NULL,
    message TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (hash, volunteer_id)
) WITHOUT ROWID;
-- Units of a package that is not approved are held (never dispatched); `package` marks units
-- of any package (a volunteer may ask for built-in kernels only), so the scheduler's index
-- still answers every work request alone.
ALTER TABLE units ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE units ADD COLUMN package INTEGER NOT NULL DEFAULT 0;
DROP INDEX units_wanted;
CREATE INDEX units_wanted ON units(id, distinct_prefixes, package) WHERE wanted > 0 AND held = 0;
-- Recomputation of a package's unit needs a GPU: the built-in CPU pool leaves it to verifiers.
ALTER TABLE spot_queue ADD COLUMN package INTEGER NOT NULL DEFAULT 0;
ALTER TABLE challenges ADD COLUMN package INTEGER NOT NULL DEFAULT 0;
