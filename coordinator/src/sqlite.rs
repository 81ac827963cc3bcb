//! The embedded store: SQLite in WAL mode with `synchronous = NORMAL`, so a committed
//! transaction survives the coordinator being killed (`kill -9`). Every [`Store`] method is
//! one `IMMEDIATE` transaction; lifecycle transitions are computed by the pure
//! [`crate::lifecycle::transition`] and applied here.

use crate::credibility;
use crate::lifecycle::{
    self, Event, Mark, Oracle, Policy, Replica, ReplicaId, ReplicaState, Replication, Spot, Unit,
    UnitState,
};
use crate::store::*;
use base64::Engine as _;
use protocol::api::{AdapterInfo, Assignment};
use protocol::{Checkpoint, Digest, first_divergence};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::Value;
use shaders::{Comparison, Job};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

/// Credit granted per elementary operation of a valid replica (one per million).
pub const CREDIT_PER_WORK: f64 = 1e-6;

/// Versioned schema migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
-- v2: the swept parameter names of a batch, for aggregating results per swept point.
ALTER TABLE batches ADD COLUMN axes TEXT NOT NULL DEFAULT '[]';
"#,
    r#"
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
"#,
    // Kernel versions: results of different versions are never compared.
    r#"
ALTER TABLE batches ADD COLUMN kernel_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE units ADD COLUMN kernel_version INTEGER NOT NULL DEFAULT 1;
"#,
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Draws for ringers and adaptive replication; seedable so simulations repeat.
    rng: Mutex<StdRng>,
    /// Adapter classes known to be in the `classes` table.
    classes: Mutex<std::collections::HashSet<String>>,
}

/// What the scheduler reads of a unit it hands out.
struct PickedUnit {
    deadline_s: i64,
    kernel: String,
    params: String,
    output_len: i64,
    batch_id: i64,
    ringer_rate: f64,
    replication: String,
    target: u32,
    kernel_version: u32,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        db(e)
    }
}

/// Decodes JSON the store itself wrote; a failure means a damaged database.
fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Db(format!("stored JSON: {e}")))
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Db(format!("encoding JSON: {e}")))
}

/// The per-database salt that anonymises volunteer ids.
fn anon_salt(tx: &Transaction<'_>) -> Result<Vec<u8>> {
    Ok(
        tx.query_row("SELECT value FROM meta WHERE key = 'anon_salt'", [], |r| {
            r.get(0)
        })?,
    )
}

fn digest_of(blob: Option<Vec<u8>>) -> Option<Digest> {
    blob.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok().map(Digest))
}

fn state_of(s: &str) -> Result<UnitState> {
    UnitState::parse(s).ok_or_else(|| StoreError::Db(format!("bad unit state {s}")))
}

fn rstate_of(s: &str) -> Result<ReplicaState> {
    ReplicaState::parse(s).ok_or_else(|| StoreError::Db(format!("bad replica state {s}")))
}

fn spot_of(s: &str) -> Spot {
    match s {
        "pending" => Spot::Pending,
        "ready" => Spot::Ready,
        _ => Spot::None,
    }
}

fn spot_str(s: Spot) -> &'static str {
    match s {
        Spot::None => "none",
        Spot::Pending => "pending",
        Spot::Ready => "ready",
    }
}

/// A unit row with what the lifecycle and the API need.
struct UnitRow {
    id: i64,
    batch_id: i64,
    kernel: String,
    params: String,
    work: f64,
    unit: Unit,
    spot_digest: Option<Digest>,
    canonical_digest: Option<Digest>,
    summary: Option<String>,
}

struct ReplicaRow {
    replica: Replica,
    digest: Option<Digest>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Durable against a process crash (the WAL is written before COMMIT returns); only
        // an OS crash or power loss can lose the last transactions.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(256);
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('anon_salt', randomblob(16))",
            [],
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
            rng: Mutex::new(StdRng::from_os_rng()),
            classes: Mutex::default(),
        })
    }

    /// Units not yet settled (neither canonical nor failed).
    pub fn open_units(&self) -> Result<u64> {
        self.read(|tx| {
            Ok(tx.query_row(
                "SELECT count(*) FROM units
                 WHERE state IN ('unsent', 'in_progress', 'needs_validation', 'inconclusive')",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    /// Challenges by status (open, ready, passed, failed, expired).
    pub fn challenge_counts(&self) -> Result<BTreeMap<String, u64>> {
        self.read(challenge_counts)
    }

    /// Ringer replicas issued so far.
    pub fn ringers_issued(&self) -> Result<u64> {
        self.read(|tx| {
            Ok(
                tx.query_row("SELECT count(*) FROM replicas WHERE ringer = 1", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            )
        })
    }

    /// The ids of blacklisted volunteers.
    pub fn blacklisted_volunteers(&self) -> Result<std::collections::HashSet<i64>> {
        self.read(|tx| {
            Ok(tx
                .prepare("SELECT id FROM volunteers WHERE blacklisted = 1")?
                .query_map([], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?)
        })
    }

    /// Makes the store's random draws (ringers, adaptive replication) repeatable.
    pub fn seed(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = StdRng::seed_from_u64(seed);
    }

    fn draw(&self, p: f64) -> bool {
        p > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .random_bool(p.min(1.0))
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        self.tx(|tx| Ok(tx.pragma_query_value(None, "user_version", |r| r.get(0))?))
    }

    /// A read-only transaction (no write lock taken).
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn load_unit(tx: &Transaction<'_>, id: i64) -> Result<UnitRow> {
    let mut st = tx.prepare_cached(
        "SELECT id, batch_id, kernel, params, work, state, min_quorum, target_results,
                max_error_results, max_total_results, deadline_s, target, spot, spot_digest,
                canonical_replica, canonical_digest, summary, fail_reason, replication,
                target_error, saboteur_fraction, ringer_rate, distinct_prefixes, challenge_rate
         FROM units WHERE id = ?1",
    )?;
    let row = st
        .query_row([id], |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, String>(5)?,
                ),
                Policy {
                    min_quorum: r.get(6)?,
                    target_results: r.get(7)?,
                    max_error_results: r.get(8)?,
                    max_total_results: r.get(9)?,
                    deadline_s: r.get::<_, i64>(10)? as u64,
                    replication: Replication::parse(&r.get::<_, String>(18)?).unwrap_or_default(),
                    target_error: r.get(19)?,
                    saboteur_fraction: r.get(20)?,
                    ringer_rate: r.get(21)?,
                    distinct_prefixes: r.get(22)?,
                    challenge_rate: r.get(23)?,
                },
                (
                    r.get::<_, u32>(11)?,
                    r.get::<_, String>(12)?,
                    r.get::<_, Option<Vec<u8>>>(13)?,
                    r.get::<_, Option<i64>>(14)?,
                    r.get::<_, Option<Vec<u8>>>(15)?,
                    r.get::<_, Option<String>>(16)?,
                    r.get::<_, Option<String>>(17)?,
                ),
            ))
        })
        .optional()?
        .ok_or(StoreError::NotFound("unit"))?;
    let ((id, batch_id, kernel, params, work, state), policy, rest) = row;
    let (target, spot, spot_digest, canonical, canonical_digest, summary, fail_reason) = rest;
    Ok(UnitRow {
        id,
        batch_id,
        kernel,
        params,
        work,
        unit: Unit {
            state: state_of(&state)?,
            policy,
            target,
            spot: spot_of(&spot),
            canonical,
            fail_reason,
        },
        spot_digest: digest_of(spot_digest),
        canonical_digest: digest_of(canonical_digest),
        summary,
    })
}

/// A unit's replicas; for a unit replicated by credibility, each with its doubt: its
/// volunteer's (from passed checks) combined with its adapter class's (from the class's failed
/// checks).
fn load_replicas(tx: &Transaction<'_>, unit: i64, policy: &Policy) -> Result<Vec<ReplicaRow>> {
    let credibility = policy.replication == Replication::Credibility;
    let mut st = tx.prepare_cached(if credibility {
        "SELECT r.id, r.volunteer_id, r.state, r.digest, r.alone, v.checks,
                coalesce(c.passed, 0), coalesce(c.failed, 0)
         FROM replicas r JOIN volunteers v ON v.id = r.volunteer_id
         LEFT JOIN classes c ON c.name = r.class
         WHERE r.unit_id = ?1 ORDER BY r.id"
    } else {
        "SELECT id, volunteer_id, state, digest, alone, 0, 0, 0
         FROM replicas WHERE unit_id = ?1 ORDER BY id"
    })?;
    let rows = st.query_map([unit], |r| {
        Ok((
            (
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ),
            (
                r.get::<_, bool>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
            ),
        ))
    })?;
    let f = policy.saboteur_fraction;
    let mut out = Vec::new();
    for row in rows {
        let ((id, volunteer, state, digest), (alone, checks, passed, failed)) = row?;
        let doubt = if credibility {
            let dv = credibility::volunteer_doubt(checks.max(0) as u64, f);
            let dc = credibility::class_doubt(passed.max(0) as u64, failed.max(0) as u64, f);
            1.0 - (1.0 - dv) * (1.0 - dc)
        } else {
            1.0
        };
        out.push(ReplicaRow {
            replica: Replica {
                id,
                volunteer,
                state: rstate_of(&state)?,
                doubt,
                alone,
            },
            digest: digest_of(digest),
        });
    }
    Ok(out)
}

fn load_output(tx: &Transaction<'_>, d: &Digest) -> Result<Option<Vec<u8>>> {
    let mut st = tx.prepare_cached("SELECT bytes FROM outputs WHERE digest = ?1")?;
    Ok(st.query_row([&d.0[..]], |r| r.get(0)).optional()?)
}

/// Agreement by digest, or for float kernels by the kernel's tolerance on the stored outputs.
struct DbOracle<'a> {
    tx: &'a Transaction<'a>,
    digests: HashMap<ReplicaId, Digest>,
    spot: Option<Digest>,
    tolerance: Option<Job>,
    cache: RefCell<HashMap<Digest, Option<Vec<u8>>>>,
}

impl DbOracle<'_> {
    fn same(&self, a: Option<&Digest>, b: Option<&Digest>) -> bool {
        let (Some(a), Some(b)) = (a, b) else {
            return false;
        };
        if a == b {
            return true;
        }
        let Some(job) = &self.tolerance else {
            return false;
        };
        let mut cache = self.cache.borrow_mut();
        for d in [a, b] {
            if !cache.contains_key(d) {
                let bytes = load_output(self.tx, d).ok().flatten();
                cache.insert(*d, bytes);
            }
        }
        match (cache.get(a), cache.get(b)) {
            (Some(Some(x)), Some(Some(y))) => job.equivalent(x, y),
            _ => false,
        }
    }
}

impl Oracle for DbOracle<'_> {
    fn agree(&self, a: ReplicaId, b: ReplicaId) -> bool {
        self.same(self.digests.get(&a), self.digests.get(&b))
    }
    fn matches_spot(&self, r: ReplicaId) -> bool {
        self.same(self.digests.get(&r), self.spot.as_ref())
    }
}

/// Runs the lifecycle for `event` on `unit` and applies the result.
fn step(tx: &Transaction<'_>, unit_id: i64, event: Event, now: i64) -> Result<UnitRow> {
    let row = load_unit(tx, unit_id)?;
    let reps = load_replicas(tx, unit_id, &row.unit.policy)?;
    let tolerance = match shaders::kernels().iter().find(|k| k.name == row.kernel) {
        Some(info) if matches!(info.comparison, Comparison::Tolerance { .. }) => {
            let params: Value = serde_json::from_str(&row.params)
                .map_err(|e| StoreError::Db(format!("unit params: {e}")))?;
            Job::new(&row.kernel, params).ok()
        }
        _ => None,
    };
    let oracle = DbOracle {
        tx,
        digests: reps
            .iter()
            .filter_map(|r| r.digest.map(|d| (r.replica.id, d)))
            .collect(),
        spot: row.spot_digest,
        tolerance,
        cache: RefCell::new(HashMap::new()),
    };
    let replicas: Vec<Replica> = reps.iter().map(|r| r.replica).collect();
    let t = lifecycle::transition(&row.unit, &replicas, event, &oracle).map_err(|e| match e {
        lifecycle::LifecycleError::AlreadyClosed(..) => StoreError::Conflict(e.to_string()),
        lifecycle::LifecycleError::UnknownReplica(_) => StoreError::NotFound("assignment"),
    })?;

    let became_canonical =
        t.unit.state == UnitState::Canonical && row.unit.state != UnitState::Canonical;
    let mut canonical_digest = row.canonical_digest;
    let mut summary = row.summary.clone();
    if became_canonical {
        canonical_digest = t
            .unit
            .canonical
            .and_then(|c| oracle.digests.get(&c).copied());
        if let Some(d) = &canonical_digest {
            summary = canonical_summary(tx, &row, d)?;
        }
    }
    let done_at = t.unit.state.is_terminal().then_some(now);
    tx.prepare_cached(
        "UPDATE units SET state = ?2, target = ?3, wanted = ?4, canonical_replica = ?5,
             canonical_digest = ?6, summary = ?7, fail_reason = ?8,
             done_at = COALESCE(done_at, ?9)
         WHERE id = ?1",
    )?
    .execute(params![
        unit_id,
        t.unit.state.as_str(),
        t.unit.target,
        t.wanted,
        t.unit.canonical,
        canonical_digest.map(|d| d.0.to_vec()),
        summary,
        t.unit.fail_reason,
        done_at,
    ])?;
    let mut up = tx.prepare_cached("UPDATE replicas SET state = ?2 WHERE id = ?1")?;
    for (id, st) in &t.replicas {
        up.execute(params![id, st.as_str()])?;
    }
    for (volunteer, replica, mark) in &t.marks {
        match mark {
            Mark::Valid => tx
                .prepare_cached(
                    "UPDATE volunteers SET valid = valid + 1, credit = credit + ?2,
                         streak = streak + 1 WHERE id = ?1",
                )?
                .execute(params![volunteer, row.work * CREDIT_PER_WORK])?,
            Mark::Invalid => tx
                .prepare_cached(
                    "UPDATE volunteers SET invalid = invalid + 1, streak = 0, checks = 0
                     WHERE id = ?1",
                )?
                .execute([volunteer])?,
            // Caught: its credibility starts again from nothing (if it is not blacklisted).
            Mark::SpotFailed => {
                tx.prepare_cached(
                    "UPDATE classes SET failed = failed + 1
                     WHERE name = (SELECT class FROM replicas WHERE id = ?1)",
                )?
                .execute([replica])?;
                tx.prepare_cached(
                    "UPDATE volunteers SET invalid = invalid + 1, spot_failed = spot_failed + 1,
                         streak = 0, checks = 0 WHERE id = ?1",
                )?
                .execute([volunteer])?
            }
            Mark::Passed => {
                tx.prepare_cached(
                    "UPDATE classes SET passed = passed + 1
                     WHERE name = (SELECT class FROM replicas WHERE id = ?1)",
                )?
                .execute([replica])?;
                tx.prepare_cached("UPDATE volunteers SET checks = checks + 1 WHERE id = ?1")?
                    .execute([volunteer])?
            }
            Mark::Confirmed => tx
                .prepare_cached("UPDATE volunteers SET checks = checks + 1 WHERE id = ?1")?
                .execute([volunteer])?,
            Mark::Error => tx
                .prepare_cached(
                    "UPDATE volunteers SET errors = errors + 1, streak = 0 WHERE id = ?1",
                )?
                .execute([volunteer])?,
        };
    }
    let mut after = row;
    after.unit = t.unit;
    after.canonical_digest = canonical_digest;
    after.summary = summary;
    for (volunteer, _, mark) in &t.marks {
        if *mark == Mark::SpotFailed && blacklisting(tx)? {
            blacklist(tx, *volunteer, unit_id, now)?;
        }
    }
    Ok(after)
}

/// Challenges by status: every status named, 0 where there are none.
fn challenge_counts(tx: &Transaction<'_>) -> Result<BTreeMap<String, u64>> {
    let mut counts: BTreeMap<String, u64> = ["open", "ready", "passed", "failed", "expired"]
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    let mut st = tx.prepare_cached("SELECT status, count(*) FROM challenges GROUP BY status")?;
    for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (s, n) = row?;
        counts.insert(s, n as u64);
    }
    Ok(counts)
}

/// Every adapter class with its checks and doubt, the most failed checks first.
fn class_rows(tx: &Transaction<'_>) -> Result<Vec<ClassRow>> {
    let f = Policy::default().saboteur_fraction;
    let rows = tx
        .prepare_cached(
            "SELECT name, passed, failed FROM classes ORDER BY failed DESC, passed DESC, name",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?.max(0) as u64,
                r.get::<_, i64>(2)?.max(0) as u64,
            ))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(class, passed, failed)| ClassRow {
            doubt: credibility::class_doubt(passed, failed, f),
            class,
            passed,
            failed,
        })
        .collect())
}

/// The class a replica's result is attributed to besides its volunteer: client version,
/// backend, vendor and device type (a driver bug makes all of one class wrong alike).
fn adapter_class(a: &AdapterInfo) -> String {
    format!(
        "{}/{}/{}/{}",
        if a.client.is_empty() { "?" } else { &a.client },
        a.backend,
        a.vendor,
        a.device_type
    )
}

/// A random settled unit of `batch` with a known answer that `volunteer` never held.
fn pick_ringer(
    tx: &Transaction<'_>,
    batch: i64,
    volunteer: i64,
    rng: &mut StdRng,
) -> Result<Option<i64>> {
    let (lo, hi): (Option<i64>, Option<i64>) = tx
        .prepare_cached(
            "SELECT min(id), max(id) FROM units
             WHERE batch_id = ?1 AND spot = 'ready' AND state = 'canonical'",
        )?
        .query_row([batch], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(None);
    };
    let start = rng.random_range(lo..=hi);
    let mut st = tx.prepare_cached(
        "SELECT id FROM units WHERE batch_id = ?1 AND spot = 'ready' AND state = 'canonical'
         AND id >= ?2 AND NOT EXISTS (
             SELECT 1 FROM replicas r WHERE r.volunteer_id = ?3 AND r.unit_id = units.id)
         ORDER BY id LIMIT 1",
    )?;
    // From a random point, wrapping around once.
    for from in [start, lo] {
        if let Some(id) = st
            .query_row(params![batch, from, volunteer], |r| r.get(0))
            .optional()?
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Whether a failed spot-check blacklists the volunteer (the default; see
/// [`Store::set_blacklisting`]).
fn blacklisting(tx: &Transaction<'_>) -> Result<bool> {
    let v: Option<Vec<u8>> = tx
        .prepare_cached("SELECT value FROM meta WHERE key = 'blacklist_on_spot_failure'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(v.is_none_or(|v| v != b"0"))
}

/// Stops giving work to a caught volunteer and backtracks: every other unit where it still
/// counts (a result, a validated result, work in hand) goes through the lifecycle again
/// without it, so nothing stays canonical on its word. Runs once per volunteer.
fn blacklist(tx: &Transaction<'_>, volunteer: i64, except_unit: i64, now: i64) -> Result<()> {
    let newly = tx
        .prepare_cached("UPDATE volunteers SET blacklisted = 1 WHERE id = ?1 AND blacklisted = 0")?
        .execute([volunteer])?;
    if newly == 0 {
        return Ok(());
    }
    let units: Vec<i64> = tx
        .prepare_cached(
            "SELECT DISTINCT unit_id FROM replicas WHERE volunteer_id = ?1 AND unit_id != ?2
             AND state IN ('success', 'valid', 'in_progress') ORDER BY unit_id",
        )?
        .query_map(params![volunteer, except_unit], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    tracing::warn!(
        volunteer,
        units = units.len(),
        "blacklisted after a failed spot-check; backtracking"
    );
    for unit in units {
        step(tx, unit, Event::Backtrack(volunteer), now)?;
    }
    Ok(())
}

/// The canonical result's summary, recomputed from its output bytes by the coordinator.
fn canonical_summary(tx: &Transaction<'_>, row: &UnitRow, d: &Digest) -> Result<Option<String>> {
    let Some(bytes) = load_output(tx, d)? else {
        return Ok(None);
    };
    let params: Value = from_json(&row.params)?;
    let Ok(job) = Job::new(&row.kernel, params) else {
        return Ok(None);
    };
    Ok(job.summarize(&bytes).ok().map(|s| s.to_string()))
}

/// One report inside the caller's transaction (and savepoint).
fn report_one(
    tx: &Transaction<'_>,
    rng: &Mutex<StdRng>,
    volunteer: i64,
    assignment: i64,
    body: &ReportBody,
    now: i64,
) -> Result<ReportOutcome> {
    let row: Option<(i64, i64, i64)> = tx
        .prepare_cached("SELECT unit_id, volunteer_id, deadline_at FROM replicas WHERE id = ?1")?
        .query_row([assignment], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let (unit_id, owner, deadline_at) = row.ok_or(StoreError::NotFound("assignment"))?;
    if owner != volunteer {
        return Err(StoreError::Forbidden(format!(
            "assignment {assignment} belongs to another volunteer"
        )));
    }
    let event = match body {
        ReportBody::Output {
            digest,
            output,
            checkpoints,
            summary,
        } => {
            let cps = to_json(checkpoints)?;
            tx.prepare_cached("INSERT OR IGNORE INTO outputs(digest, bytes) VALUES (?1, ?2)")?
                .execute(params![&digest.0[..], output])?;
            tx.prepare_cached(
                "UPDATE replicas SET digest = ?2, checkpoints = ?3, summary = ?4, reported_at = ?5,
                     late = ?6 WHERE id = ?1",
            )?
            .execute(params![
                assignment,
                &digest.0[..],
                cps,
                summary.to_string(),
                now,
                now > deadline_at
            ])?;
            Event::Reported(assignment)
        }
        ReportBody::Error(msg) => {
            tx.prepare_cached("UPDATE replicas SET error = ?2, reported_at = ?3 WHERE id = ?1")?
                .execute(params![assignment, msg, now])?;
            Event::ClientError(assignment)
        }
    };
    // A conflict (second report) rolls all of this back.
    let after = step(tx, unit_id, event, now)?;
    let state: String = tx
        .prepare_cached("SELECT state FROM replicas WHERE id = ?1")?
        .query_row([assignment], |r| r.get(0))?;
    let replica_state = rstate_of(&state)?;
    let mut challenge = None;
    if let ReportBody::Output {
        digest,
        checkpoints,
        ..
    } = body
        && matches!(replica_state, ReplicaState::Success | ReplicaState::Valid)
        && after.unit.policy.challenge_rate > 0.0
        && !checkpoints.is_empty()
        && chance(rng, after.unit.policy.challenge_rate)
        && let Ok(job) = Job::new(&after.kernel, from_json(&after.params)?)
        && job.resumable_on_cpu()
    {
        // One segment at random: from the checkpoint before it (or the initial state) to
        // its end; the last one also binds the checkpoints to the output. A segment starting
        // at a checkpoint is chosen only if the client keeps that state (the latest that fit
        // in protocol::KEPT_STATE_BYTES), so an honest client can always answer.
        let n = checkpoints.len();
        let kept = protocol::kept_states(n - 1, job.state_len());
        let choices = 1 + kept;
        let pick = rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_range(0..choices);
        // 0: the first segment; else one of the last `kept` segments.
        let j = if pick == 0 { 0 } else { n - kept - 1 + pick };
        let (from, state_digest) = match j {
            0 => (0, None),
            _ => (checkpoints[j - 1].step, Some(checkpoints[j - 1].digest)),
        };
        let last = j + 1 == checkpoints.len();
        tx.prepare_cached(
            "INSERT INTO challenges(replica_id, from_step, to_step, state_digest, end_digest,
                 output_digest, status, created_at, deadline_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            assignment,
            from as i64,
            checkpoints[j].step as i64,
            state_digest.map(|d| d.0.to_vec()),
            &checkpoints[j].digest.0[..],
            last.then(|| digest.0.to_vec()),
            // From the initial state the coordinator needs nothing from the volunteer.
            if from == 0 { "ready" } else { "open" },
            now,
            now + CHALLENGE_DEADLINE_S,
        ])?;
        challenge = (from > 0).then_some(from);
    }
    Ok(ReportOutcome {
        replica_state,
        unit_state: after.unit.state,
        challenge,
    })
}

/// Seconds a volunteer has to answer a challenge (it holds the state in memory).
pub const CHALLENGE_DEADLINE_S: i64 = 600;

fn chance(rng: &Mutex<StdRng>, p: f64) -> bool {
    p > 0.0
        && rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_bool(p.min(1.0))
}

/// A challenge's verdict inside the caller's transaction.
fn settle_challenge(tx: &Transaction<'_>, replica: i64, passed: bool, now: i64) -> Result<()> {
    let n = tx
        .prepare_cached(
            "UPDATE challenges SET status = ?2, state = NULL
             WHERE replica_id = ?1 AND status IN ('open', 'ready')",
        )?
        .execute(params![replica, if passed { "passed" } else { "failed" }])?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "challenge of assignment {replica} is already settled"
        )));
    }
    let (unit, volunteer): (i64, i64) = tx
        .prepare_cached("SELECT unit_id, volunteer_id FROM replicas WHERE id = ?1")?
        .query_row([replica], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let column = if passed { "passed" } else { "failed" };
    tx.prepare_cached(&format!(
        "UPDATE classes SET {column} = {column} + 1
         WHERE name = (SELECT class FROM replicas WHERE id = ?1)"
    ))?
    .execute([replica])?;
    if passed {
        tx.prepare_cached("UPDATE volunteers SET checks = checks + 1 WHERE id = ?1")?
            .execute([volunteer])?;
        return Ok(());
    }
    tracing::warn!(volunteer, replica, "failed a challenge");
    tx.prepare_cached(
        "UPDATE volunteers SET spot_failed = spot_failed + 1, streak = 0, checks = 0
         WHERE id = ?1",
    )?
    .execute([volunteer])?;
    if blacklisting(tx)? {
        // Every unit it counts in, this one included, goes through validation again.
        blacklist(tx, volunteer, -1, now)
    } else {
        step(tx, unit, Event::Backtrack(volunteer), now).map(|_| ())
    }
}

fn batch_status_tx(tx: &Transaction<'_>, batch: i64) -> Result<BatchStatus> {
    type Row = (String, String, String, f64, i64, i64, String, u32);
    let (name, kernel, policy, spot_rate, units, created_at, axes, kernel_version): Row = tx
        .prepare_cached(
            "SELECT name, kernel, policy, spot_rate, units, created_at, axes, kernel_version
             FROM batches WHERE id = ?1",
        )?
        .query_row([batch], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .optional()?
        .ok_or(StoreError::NotFound("batch"))?;
    let mut by_state: BTreeMap<String, u64> = UnitState::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    let mut st =
        tx.prepare_cached("SELECT state, count(*) FROM units WHERE batch_id = ?1 GROUP BY state")?;
    for row in st.query_map([batch], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (s, n) = row?;
        by_state.insert(s, n as u64);
    }
    let terminal = by_state["canonical"] + by_state["failed"];
    Ok(BatchStatus {
        batch_id: batch,
        name,
        retired: kernel_version != shaders::kernel_version(&kernel),
        kernel,
        kernel_version,
        created_at,
        units: units as u64,
        done: terminal == units as u64,
        by_state,
        policy: from_json(&policy)?,
        spot_check_rate: spot_rate,
        axes: from_json(&axes)?,
    })
}

fn check_viewer(tx: &Transaction<'_>, batch: i64, viewer: Option<i64>) -> Result<()> {
    let owner: Option<Option<i64>> = tx
        .prepare_cached("SELECT key_id FROM batches WHERE id = ?1")?
        .query_row([batch], |r| r.get(0))
        .optional()?;
    match (owner, viewer) {
        (None, _) => Err(StoreError::NotFound("batch")),
        (Some(_), None) => Ok(()),
        // A scientist sees only their own batches; others' look absent.
        (Some(o), Some(v)) if o == Some(v) => Ok(()),
        _ => Err(StoreError::NotFound("batch")),
    }
}

fn anon(salt: &[u8], volunteer: i64) -> String {
    let d = Digest::of_parts([salt, &volunteer.to_le_bytes()[..]]);
    format!("v-{}", &d.to_hex()[..12])
}

impl Store for SqliteStore {
    fn register_volunteer(
        &self,
        token_hash: &[u8],
        nickname: Option<&str>,
        now: i64,
    ) -> Result<i64> {
        self.tx(|tx| {
            tx.prepare_cached(
                "INSERT INTO volunteers(token_hash, nickname, created_at, last_seen) VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![token_hash, nickname, now])?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn volunteer_by_token(&self, token_hash: &[u8], now: i64) -> Result<Option<VolunteerAuth>> {
        self.tx(|tx| {
            let v = tx
                .prepare_cached("SELECT id, blacklisted FROM volunteers WHERE token_hash = ?1")?
                .query_row([token_hash], |r| {
                    Ok(VolunteerAuth {
                        id: r.get(0)?,
                        blacklisted: r.get::<_, i64>(1)? != 0,
                    })
                })
                .optional()?;
            if let Some(v) = &v {
                tx.prepare_cached(
                    "UPDATE volunteers SET last_seen = ?2 WHERE id = ?1 AND last_seen < ?2",
                )?
                .execute(params![v.id, now])?;
            }
            Ok(v)
        })
    }

    fn create_key(&self, name: &str, key_hash: &[u8], operator: bool, now: i64) -> Result<i64> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO api_keys(name, key_hash, operator, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, key_hash, operator, now],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn key_by_hash(&self, key_hash: &[u8]) -> Result<Option<KeyAuth>> {
        self.tx(|tx| {
            Ok(tx
                .prepare_cached("SELECT id, name, operator FROM api_keys WHERE key_hash = ?1")?
                .query_row([key_hash], |r| {
                    Ok(KeyAuth {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        operator: r.get::<_, i64>(2)? != 0,
                    })
                })
                .optional()?)
        })
    }

    fn create_batch(&self, b: &NewBatch, now: i64) -> Result<i64> {
        let policy_json = to_json(&b.policy)?;
        let axes_json = to_json(&b.axes)?;
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO batches(key_id, name, kernel, policy, spot_rate, units, created_at, axes,
                     kernel_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    b.key_id,
                    b.name,
                    b.kernel,
                    policy_json,
                    b.spot_check_rate,
                    b.units.len() as i64,
                    now,
                    axes_json,
                    shaders::kernel_version(&b.kernel)
                ],
            )?;
            let batch = tx.last_insert_rowid();
            let p = b.policy;
            let mut ins = tx.prepare_cached(
                "INSERT INTO units(batch_id, kernel, params, output_len, work, state, min_quorum,
                     target_results, max_error_results, max_total_results, deadline_s, target,
                     wanted, spot, created_at, replication, target_error, saboteur_fraction,
                     ringer_rate, distinct_prefixes, challenge_rate, kernel_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'unsent', ?6, ?7, ?8, ?9, ?10, ?13, ?13, ?11, ?12,
                     ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            )?;
            let mut queue = tx.prepare_cached("INSERT INTO spot_queue(unit_id) VALUES (?1)")?;
            for u in &b.units {
                let job = Job::new(&b.kernel, u.params.clone())
                    .map_err(|e| StoreError::invalid("units", e.to_string()))?;
                let spot = if u.spot_check {
                    Spot::Pending
                } else {
                    Spot::None
                };
                ins.execute(params![
                    batch,
                    b.kernel,
                    u.params.to_string(),
                    job.output_len() as i64,
                    u.work as f64,
                    p.min_quorum,
                    p.target_results,
                    p.max_error_results,
                    p.max_total_results,
                    p.deadline_s as i64,
                    spot_str(spot),
                    now,
                    p.initial_target(),
                    p.replication.as_str(),
                    p.target_error,
                    p.saboteur_fraction,
                    p.ringer_rate,
                    p.distinct_prefixes,
                    p.challenge_rate,
                    job.version(),
                ])?;
                if u.spot_check {
                    queue.execute([tx.last_insert_rowid()])?;
                }
            }
            Ok(batch)
        })
    }

    fn request_work(
        &self,
        volunteer: i64,
        max: u32,
        adapter: &AdapterInfo,
        prefix: Option<&str>,
        now: i64,
    ) -> Result<Vec<Assignment>> {
        let adapter_json = to_json(adapter)?;
        let class = adapter_class(adapter);
        let new_class = !self
            .classes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&class);
        let out = self.tx(|tx| {
            if new_class {
                tx.prepare_cached("INSERT OR IGNORE INTO classes(name) VALUES (?1)")?
                    .execute([&class])?;
            }
            let mut streak = None;
            let ids: Vec<i64> = tx
                .prepare_cached(
                    "SELECT id FROM units WHERE wanted > 0 AND NOT EXISTS (
                         SELECT 1 FROM replicas r WHERE r.volunteer_id = ?1 AND r.unit_id = units.id)
                     AND (?3 IS NULL OR distinct_prefixes = 0 OR NOT EXISTS (
                         SELECT 1 FROM replicas r WHERE r.unit_id = units.id AND r.prefix = ?3
                         AND r.state NOT IN ('error', 'no_reply')))
                     ORDER BY id LIMIT ?2",
                )?
                .query_map(params![volunteer, max, prefix], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            let unit_row = |id: i64| -> Result<PickedUnit> {
                Ok(tx
                    .prepare_cached(
                        "SELECT deadline_s, kernel, params, output_len, batch_id, ringer_rate,
                                replication, target, kernel_version FROM units WHERE id = ?1",
                    )?
                    .query_row([id], |r| {
                        Ok(PickedUnit {
                            deadline_s: r.get(0)?,
                            kernel: r.get(1)?,
                            params: r.get(2)?,
                            output_len: r.get(3)?,
                            batch_id: r.get(4)?,
                            ringer_rate: r.get(5)?,
                            replication: r.get(6)?,
                            target: r.get(7)?,
                            kernel_version: r.get(8)?,
                        })
                    })?)
            };
            for picked in ids {
                let mut u = unit_row(picked)?;
                // A unit of a kernel version this coordinator no longer runs cannot be
                // computed or validated by anyone it serves: it is not handed out again.
                if u.kernel_version != shaders::kernel_version(&u.kernel) {
                    tracing::warn!(
                        unit = picked,
                        kernel = %u.kernel,
                        version = u.kernel_version,
                        "unit of a retired kernel version: not dispatched"
                    );
                    tx.prepare_cached("UPDATE units SET wanted = 0 WHERE id = ?1")?
                        .execute([picked])?;
                    continue;
                }
                // A ringer takes this slot: a settled unit whose answer the coordinator
                // computed itself, sent like any other.
                let ringer = if self.draw(u.ringer_rate) {
                    let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                    pick_ringer(tx, u.batch_id, volunteer, &mut rng)?
                } else {
                    None
                };
                if let Some(r) = ringer {
                    u = unit_row(r)?;
                }
                let unit_id = ringer.unwrap_or(picked);
                // BOINC adaptive replication: after 10 valid in a row, alone with
                // probability 1 - 1/streak.
                let mut alone = false;
                if ringer.is_none() && u.replication == Replication::Adaptive.as_str() && u.target == 1 {
                    let s: i64 = match streak {
                        Some(s) => s,
                        None => tx
                            .prepare_cached("SELECT streak FROM volunteers WHERE id = ?1")?
                            .query_row([volunteer], |r| r.get(0))?,
                    };
                    streak = Some(s);
                    alone = s >= 10 && self.draw(1.0 - 1.0 / s as f64);
                }
                let PickedUnit {
                    deadline_s,
                    kernel,
                    params: params_s,
                    output_len,
                    kernel_version,
                    ..
                } = u;
                let deadline = now + deadline_s;
                tx.prepare_cached(
                    "INSERT INTO replicas(unit_id, volunteer_id, state, sent_at, deadline_at, adapter,
                         alone, prefix, class, ringer)
                     VALUES (?1, ?2, 'in_progress', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    unit_id,
                    volunteer,
                    now,
                    deadline,
                    adapter_json,
                    alone,
                    prefix,
                    class,
                    ringer.is_some()
                ])?;
                let assignment_id = tx.last_insert_rowid();
                step(tx, unit_id, Event::Issued, now)?;
                out.push(Assignment {
                    assignment_id,
                    unit_id,
                    kernel,
                    params: from_json(&params_s)?,
                    deadline,
                    output_len: output_len as u64,
                    kernel_version,
                });
            }
            Ok(out)
        })?;
        if new_class {
            self.classes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(class);
        }
        Ok(out)
    }

    fn assignment_jobs(
        &self,
        volunteer: i64,
        assignments: &[i64],
    ) -> Result<Vec<Result<(String, Value, u32)>>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT r.volunteer_id, u.kernel, u.params, u.kernel_version FROM replicas r
                 JOIN units u ON u.id = r.unit_id WHERE r.id = ?1",
            )?;
            let mut out = Vec::with_capacity(assignments.len());
            for &assignment in assignments {
                let row: Option<(i64, String, String, u32)> = st
                    .query_row([assignment], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?;
                out.push(match row {
                    None => Err(StoreError::NotFound("assignment")),
                    Some((owner, ..)) if owner != volunteer => Err(StoreError::Forbidden(format!(
                        "assignment {assignment} belongs to another volunteer"
                    ))),
                    Some((_, kernel, params, version)) => {
                        from_json(&params).map(|p| (kernel, p, version))
                    }
                });
            }
            Ok(out)
        })
    }

    fn report_batch(
        &self,
        volunteer: i64,
        items: &[(i64, ReportBody)],
        now: i64,
    ) -> Result<Vec<Result<ReportOutcome>>> {
        self.tx(|tx| {
            let mut out = Vec::with_capacity(items.len());
            for (assignment, body) in items {
                tx.execute_batch("SAVEPOINT item")?;
                let r = report_one(tx, &self.rng, volunteer, *assignment, body, now);
                match &r {
                    Ok(_) => tx.execute_batch("RELEASE item")?,
                    // A database error aborts the whole transaction; an item error its item.
                    Err(StoreError::Db(m)) => return Err(StoreError::Db(m.clone())),
                    Err(_) => tx.execute_batch("ROLLBACK TO item; RELEASE item")?,
                }
                out.push(r);
            }
            Ok(out)
        })
    }

    fn expire(&self, now: i64) -> Result<usize> {
        self.tx(|tx| {
            let due: Vec<(i64, i64)> = tx
                .prepare_cached(
                    "SELECT id, unit_id FROM replicas WHERE state = 'in_progress' AND deadline_at < ?1
                     ORDER BY deadline_at LIMIT 5000",
                )?
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<std::result::Result<_, _>>()?;
            for (replica, unit) in &due {
                step(tx, *unit, Event::Timeout(*replica), now)?;
            }
            // An unanswered challenge is a check not passed: the result it asked about goes
            // back through validation without it, and its volunteer's credibility starts over
            // (not blacklisted: an honest client may have been closed before answering). So
            // ignoring challenges buys a cheater nothing.
            let dodged: Vec<(i64, i64, i64)> = tx
                .prepare_cached(
                    "SELECT c.replica_id, r.unit_id, r.volunteer_id
                     FROM challenges c JOIN replicas r ON r.id = c.replica_id
                     WHERE c.status = 'open' AND c.deadline_at < ?1
                     ORDER BY c.deadline_at LIMIT 5000",
                )?
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<std::result::Result<_, _>>()?;
            for (replica, unit, volunteer) in &dodged {
                tx.prepare_cached(
                    "UPDATE challenges SET status = 'expired', state = NULL WHERE replica_id = ?1",
                )?
                .execute([replica])?;
                tracing::info!(volunteer, replica, "challenge unanswered");
                step(tx, *unit, Event::Backtrack(*volunteer), now)?;
            }
            Ok(due.len() + dodged.len())
        })
    }

    fn pending_spot_checks(&self, limit: usize) -> Result<Vec<SpotJob>> {
        self.tx(|tx| {
            let rows = tx
                .prepare_cached(
                    "SELECT u.id, u.kernel, u.params FROM spot_queue q JOIN units u ON u.id = q.unit_id
                     ORDER BY q.unit_id LIMIT ?1",
                )?
                .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?)))?
                .collect::<std::result::Result<Vec<(i64, String, String)>, _>>()?;
            rows.into_iter()
                .map(|(unit_id, kernel, p)| {
                    Ok(SpotJob {
                        unit_id,
                        kernel,
                        params: from_json(&p)?,
                    })
                })
                .collect()
        })
    }

    fn answer_challenge(
        &self,
        volunteer: i64,
        assignment: i64,
        step: u64,
        state: Vec<Vec<u8>>,
        now: i64,
    ) -> Result<()> {
        self.tx(|tx| {
            let owner: Option<i64> = tx
                .prepare_cached("SELECT volunteer_id FROM replicas WHERE id = ?1")?
                .query_row([assignment], |r| r.get(0))
                .optional()?;
            match owner {
                None => return Err(StoreError::NotFound("assignment")),
                Some(o) if o != volunteer => {
                    return Err(StoreError::Forbidden(format!(
                        "assignment {assignment} belongs to another volunteer"
                    )));
                }
                _ => {}
            }
            let row: Option<(i64, Option<Vec<u8>>, String)> = tx
                .prepare_cached(
                    "SELECT from_step, state_digest, status FROM challenges WHERE replica_id = ?1",
                )?
                .query_row([assignment], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((from, state_digest, status)) = row else {
                return Err(StoreError::NotFound("challenge"));
            };
            if status != "open" {
                return Err(StoreError::Conflict(format!(
                    "the challenge of assignment {assignment} is {status}"
                )));
            }
            if step != from as u64 {
                return Err(StoreError::invalid(
                    "step",
                    format!("the challenge asks for step {from}, got {step}"),
                ));
            }
            // The state must be the one the volunteer reported at that checkpoint.
            let got = Digest::of_data_parts(state.iter().map(Vec::as_slice));
            if digest_of(state_digest) != Some(got) {
                return settle_challenge(tx, assignment, false, now);
            }
            let encoded: Vec<String> = state
                .iter()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                .collect();
            tx.prepare_cached(
                "UPDATE challenges SET state = ?2, status = 'ready' WHERE replica_id = ?1",
            )?
            .execute(params![assignment, to_json(&encoded)?])?;
            Ok(())
        })
    }

    fn pending_challenges(&self, limit: usize) -> Result<Vec<ChallengeJob>> {
        self.read(|tx| {
            let rows = tx
                .prepare_cached(
                    "SELECT c.replica_id, u.kernel, u.params, c.from_step, c.to_step, c.state,
                            c.end_digest, c.output_digest
                     FROM challenges c JOIN replicas r ON r.id = c.replica_id
                     JOIN units u ON u.id = r.unit_id
                     WHERE c.status = 'ready' ORDER BY c.replica_id LIMIT ?1",
                )?
                .query_map([limit as i64], |r| {
                    Ok((
                        (
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ),
                        (
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Option<String>>(5)?,
                        ),
                        (r.get::<_, Vec<u8>>(6)?, r.get::<_, Option<Vec<u8>>>(7)?),
                    ))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(
                    |((replica_id, kernel, params), (from, to, state), (end, out))| {
                        let state: Vec<String> = match state {
                            Some(s) => from_json(&s)?,
                            None => Vec::new(),
                        };
                        let state = state
                            .iter()
                            .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
                            .collect::<std::result::Result<_, _>>()
                            .map_err(|e| StoreError::Db(format!("challenge state: {e}")))?;
                        Ok(ChallengeJob {
                            replica_id,
                            kernel,
                            params: from_json(&params)?,
                            from: from as u64,
                            to: to as u64,
                            state,
                            end_digest: digest_of(Some(end))
                                .ok_or_else(|| StoreError::Db("challenge digest".into()))?,
                            output_digest: digest_of(out),
                        })
                    },
                )
                .collect()
        })
    }

    fn challenge_done(&self, replica: i64, passed: bool, now: i64) -> Result<()> {
        self.tx(|tx| settle_challenge(tx, replica, passed, now))
    }

    fn spot_check_done(&self, unit: i64, digest: &Digest, output: &[u8], now: i64) -> Result<()> {
        self.tx(|tx| {
            tx.prepare_cached("INSERT OR IGNORE INTO outputs(digest, bytes) VALUES (?1, ?2)")?
                .execute(params![&digest.0[..], output])?;
            tx.prepare_cached("UPDATE units SET spot = 'ready', spot_digest = ?2 WHERE id = ?1")?
                .execute(params![unit, &digest.0[..]])?;
            tx.prepare_cached("DELETE FROM spot_queue WHERE unit_id = ?1")?
                .execute([unit])?;
            step(tx, unit, Event::SpotReady, now)?;
            Ok(())
        })
    }

    fn batch_status(&self, batch: i64, viewer: Option<i64>) -> Result<BatchStatus> {
        self.read(|tx| {
            check_viewer(tx, batch, viewer)?;
            batch_status_tx(tx, batch)
        })
    }

    fn list_batches(&self, viewer: Option<i64>) -> Result<Vec<BatchStatus>> {
        self.read(|tx| {
            let ids: Vec<i64> = tx
                .prepare_cached(
                    "SELECT id FROM batches WHERE ?1 IS NULL OR key_id = ?1 ORDER BY id DESC LIMIT 200",
                )?
                .query_map([viewer], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?;
            ids.into_iter().map(|id| batch_status_tx(tx, id)).collect()
        })
    }

    fn dashboard(&self, now: i64) -> Result<Dashboard> {
        let status = self.status()?;
        self.read(|tx| {
            let salt: Vec<u8> =
                tx.query_row("SELECT value FROM meta WHERE key = 'anon_salt'", [], |r| {
                    r.get(0)
                })?;
            let mut st = tx.prepare_cached(
                "SELECT id, nickname, valid, invalid, errors, spot_failed, last_seen, blacklisted,
                        checks
                 FROM volunteers ORDER BY last_seen DESC LIMIT 100",
            )?;
            let hosts = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        [
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?,
                        ],
                        r.get::<_, i64>(6)?,
                        (r.get::<_, bool>(7)?, r.get::<_, i64>(8)?),
                    ))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?
                .into_iter()
                .map(
                    |(
                        id,
                        nickname,
                        [valid, invalid, errors, spot_failed],
                        last_seen,
                        (blacklisted, checks),
                    )| {
                        let judged = valid + invalid + errors;
                        let checks = checks.max(0) as u64;
                        HostRow {
                            volunteer: anon(&salt, id),
                            nickname,
                            valid: valid as u64,
                            invalid: invalid as u64,
                            errors: errors as u64,
                            spot_failed: spot_failed as u64,
                            reliability: (judged > 0).then(|| valid as f64 / judged as f64),
                            checks,
                            credibility: 1.0
                                - credibility::volunteer_doubt(
                                    checks,
                                    Policy::default().saboteur_fraction,
                                ),
                            last_seen,
                            blacklisted,
                        }
                    },
                )
                .collect();
            let mut st = tx.prepare_cached(
                "SELECT id, batch_id, state, fail_reason FROM units
                 WHERE state IN ('inconclusive', 'failed') ORDER BY id DESC LIMIT 50",
            )?;
            let problems = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?
                .into_iter()
                .map(|(unit_id, batch_id, state, reason)| {
                    Ok(ProblemUnit {
                        unit_id,
                        batch_id,
                        state: state_of(&state)?,
                        reason: reason.or_else(|| {
                            (state == "inconclusive")
                                .then(|| "replicas disagree; another one was issued".into())
                        }),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let spot: i64 = tx.query_row(
                "SELECT coalesce(sum(spot_failed), 0) FROM volunteers",
                [],
                |r| r.get(0),
            )?;
            let valid = status.replicas["valid"] as f64;
            let invalid = status.replicas["invalid"] as f64;
            let mut classes = class_rows(tx)?;
            classes.truncate(50);
            Ok(Dashboard {
                classes,
                agreement_rate: (valid + invalid > 0.0).then(|| valid / (valid + invalid)),
                spot_check_failures: spot as u64,
                hosts,
                problems,
                status: status.clone(),
                at: now,
            })
        })
    }

    fn batch_results(&self, batch: i64, viewer: Option<i64>) -> Result<Vec<UnitResult>> {
        self.tx(|tx| {
            check_viewer(tx, batch, viewer)?;
            let mut st = tx.prepare_cached(
                "SELECT id, params, state, canonical_digest, summary, fail_reason FROM units
                 WHERE batch_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([batch], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (unit_id, params, state, digest, summary, fail_reason) = row?;
                out.push(UnitResult {
                    unit_id,
                    params: from_json(&params)?,
                    state: state_of(&state)?,
                    digest: digest_of(digest),
                    summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
                    fail_reason,
                });
            }
            Ok(out)
        })
    }

    fn unit_provenance(&self, unit: i64, viewer: Option<i64>) -> Result<UnitProvenance> {
        self.tx(|tx| {
            let row = load_unit(tx, unit)?;
            check_viewer(tx, row.batch_id, viewer)?;
            let salt: Vec<u8> = anon_salt(tx)?;
            let mut st = tx.prepare_cached(
                "SELECT r.id, r.volunteer_id, r.state, r.digest, r.checkpoints, r.adapter, r.sent_at,
                        r.reported_at, r.late, r.error, r.ringer,
                        (SELECT status || ' ' || from_step || '..' || to_step FROM challenges c
                         WHERE c.replica_id = r.id)
                 FROM replicas r WHERE r.unit_id = ?1 ORDER BY r.id",
            )?;
            let rows = st
                .query_map([unit], |r| {
                    Ok((
                        (r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, Option<Vec<u8>>>(3)?),
                        (r.get::<_, Option<String>>(4)?, r.get::<_, Option<String>>(5)?),
                        (r.get::<_, i64>(6)?, r.get::<_, Option<i64>>(7)?, r.get::<_, bool>(8)?, r.get::<_, Option<String>>(9)?),
                        (r.get::<_, bool>(10)?, r.get::<_, Option<String>>(11)?),
                    ))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let parse_cps = |s: &Option<String>| -> Vec<Checkpoint> {
                s.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default()
            };
            let canonical_cps = rows
                .iter()
                .find(|((id, ..), ..)| Some(*id) == row.unit.canonical)
                .map(|(_, (cps, _), ..)| parse_cps(cps))
                .unwrap_or_default();
            let mut replicas = Vec::new();
            for ((id, vol, state, digest), (cps, adapter), (sent_at, reported_at, late, error), (ringer, challenge)) in &rows {
                let digest = digest_of(digest.clone());
                let checkpoints = parse_cps(cps);
                let diverged_at_step = match (digest, row.canonical_digest) {
                    (Some(d), Some(c)) if d != c => first_divergence(&checkpoints, &canonical_cps),
                    _ => None,
                };
                replicas.push(ReplicaProvenance {
                    replica_id: *id,
                    volunteer: anon(&salt, *vol),
                    state: rstate_of(state)?,
                    digest,
                    checkpoints,
                    adapter: adapter.as_deref().and_then(|a| serde_json::from_str(a).ok()),
                    sent_at: *sent_at,
                    reported_at: *reported_at,
                    late: *late,
                    error: error.clone(),
                    diverged_at_step,
                    ringer: *ringer,
                    challenge: challenge.clone(),
                });
            }
            let params: Value = from_json(&row.params)?;
            let passed = match (row.unit.spot, row.spot_digest, row.canonical_digest) {
                (Spot::Ready, Some(s), Some(c)) => Some(
                    s == c || replicas.iter().any(|r| r.digest == Some(c) && r.state == ReplicaState::Valid),
                ),
                _ => None,
            };
            Ok(UnitProvenance {
                unit_id: row.id,
                batch_id: row.batch_id,
                reproduce: format!(
                    "cargo run --release -p client-wasm --bin qg-run -- {} --params '{}' --backend cpu",
                    row.kernel, params
                ),
                kernel: row.kernel,
                params,
                state: row.unit.state,
                canonical_digest: row.canonical_digest,
                canonical_replica: row.unit.canonical,
                summary: row.summary.as_deref().and_then(|s| serde_json::from_str(s).ok()),
                fail_reason: row.unit.fail_reason,
                policy: row.unit.policy,
                spot_check: SpotCheck {
                    sampled: row.unit.spot != Spot::None,
                    state: spot_str(row.unit.spot).to_owned(),
                    expected_digest: row.spot_digest,
                    passed,
                },
                replicas,
            })
        })
    }

    fn status(&self) -> Result<Status> {
        self.tx(|tx| {
            let mut units: BTreeMap<String, u64> = UnitState::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), 0))
                .collect();
            let mut st = tx.prepare_cached("SELECT state, count(*) FROM units GROUP BY state")?;
            for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (s, n) = row?;
                units.insert(s, n as u64);
            }
            let mut replicas: BTreeMap<String, u64> = ReplicaState::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), 0))
                .collect();
            let mut st =
                tx.prepare_cached("SELECT state, count(*) FROM replicas GROUP BY state")?;
            for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (s, n) = row?;
                replicas.insert(s, n as u64);
            }
            let volunteers: i64 =
                tx.query_row("SELECT count(*) FROM volunteers", [], |r| r.get(0))?;
            let batches: i64 = tx.query_row("SELECT count(*) FROM batches", [], |r| r.get(0))?;
            let blacklisted: i64 = tx.query_row(
                "SELECT count(*) FROM volunteers WHERE blacklisted = 1",
                [],
                |r| r.get(0),
            )?;
            let ringers: i64 =
                tx.query_row("SELECT count(*) FROM replicas WHERE ringer = 1", [], |r| {
                    r.get(0)
                })?;
            let doubted_classes = class_rows(tx)?.iter().filter(|c| c.doubt > 0.0).count() as u64;
            let challenges = challenge_counts(tx)?;
            Ok(Status {
                units,
                replicas,
                volunteers: volunteers as u64,
                batches: batches as u64,
                blacklisted: blacklisted as u64,
                ringers: ringers as u64,
                doubted_classes,
                challenges,
            })
        })
    }

    fn volunteer_stats(&self, volunteer: i64) -> Result<VolunteerStats> {
        self.read(|tx| {
            let (nickname, valid, invalid, errors, credit): (Option<String>, i64, i64, i64, f64) = tx
                .prepare_cached(
                    "SELECT nickname, valid, invalid, errors, credit FROM volunteers WHERE id = ?1",
                )?
                .query_row([volunteer], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .optional()?
                .ok_or(StoreError::NotFound("volunteer"))?;
            let in_progress: i64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM replicas WHERE volunteer_id = ?1 AND state = 'in_progress'",
                )?
                .query_row([volunteer], |r| r.get(0))?;
            let ahead: i64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM volunteers WHERE credit > ?1 AND blacklisted = 0",
                )?
                .query_row([credit], |r| r.get(0))?;
            Ok(VolunteerStats {
                volunteer_id: volunteer,
                nickname,
                valid: valid as u64,
                invalid: invalid as u64,
                errors: errors as u64,
                in_progress: in_progress as u64,
                credit,
                rank: ahead as u64 + 1,
            })
        })
    }

    fn set_nickname(&self, volunteer: i64, nickname: Option<&str>) -> Result<()> {
        self.tx(|tx| {
            let n = tx
                .prepare_cached("UPDATE volunteers SET nickname = ?2 WHERE id = ?1")?
                .execute(params![volunteer, nickname])?;
            if n == 0 {
                return Err(StoreError::NotFound("volunteer"));
            }
            Ok(())
        })
    }

    fn leaderboard(&self, limit: usize) -> Result<Vec<LeaderboardRow>> {
        self.read(|tx| {
            let salt: Vec<u8> =
                tx.query_row("SELECT value FROM meta WHERE key = 'anon_salt'", [], |r| {
                    r.get(0)
                })?;
            let mut st = tx.prepare_cached(
                "SELECT id, nickname, credit, valid FROM volunteers
                 WHERE credit > 0 AND blacklisted = 0
                 ORDER BY credit DESC, id LIMIT ?1",
            )?;
            let rows = st
                .query_map([limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, f64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .enumerate()
                .map(|(i, (id, nick, credit, valid))| LeaderboardRow {
                    rank: i as u64 + 1,
                    name: nick.unwrap_or_else(|| anon(&salt, id)),
                    credit,
                    valid: valid as u64,
                })
                .collect())
        })
    }

    fn set_blacklisting(&self, on: bool) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('blacklist_on_spot_failure', ?1)",
                [if on { b"1" } else { b"0" }],
            )?;
            Ok(())
        })
    }

    fn output(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        self.tx(|tx| load_output(tx, digest))
    }

    fn unit_count(&self) -> Result<u64> {
        self.tx(|tx| {
            Ok(tx.query_row("SELECT count(*) FROM units", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }
}
