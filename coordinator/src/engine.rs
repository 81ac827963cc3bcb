//! The coordinator's operations, each one transaction: load what a decision needs through
//! [`crate::store::queries`], decide with the pure [`crate::lifecycle`] and [`crate::decide`],
//! and store the decision's effects. Written once; the backend ([`crate::store::sqlite`] or
//! [`crate::store::postgres`]) only runs the transaction.

use crate::decide;
use crate::lifecycle::{self, Event, Oracle, Replica, ReplicaId, ReplicaState, Spot, UnitState};
use crate::store::log as lg;
use crate::store::packages as pk;
use crate::store::postgres::PostgresBackend;
use crate::store::queries::{self as q, UnitRow};
use crate::store::sql::{self, Backend, Sql};
use crate::store::sqlite::SqliteBackend;
use crate::store::views;
use crate::store::*;
use base64::Engine as _;
use protocol::Digest;
use protocol::api::{AdapterInfo, Assignment};
use protocol::package::{PackageFiles, package_hash};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use shaders::package::Package;
use shaders::{Job, ParamError};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A lifecycle mark: what happened to which volunteer's replica.
type Mark = (lifecycle::VolunteerId, ReplicaId, lifecycle::Mark);

/// Where the coordinator keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded default: one SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL (`postgres://…`), shareable by several coordinators.
    Postgres(String),
}

impl Database {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; anything else a SQLite file path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Self::Postgres(s.to_owned())
        } else {
            Self::Sqlite(s.into())
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            // Never the password, if the URL carries one.
            Self::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
                match rest.split_once('@') {
                    Some((user, host)) if user.contains(':') => {
                        let name = user.split(':').next().unwrap_or("");
                        write!(f, "{scheme}://{name}:***@{host}")
                    }
                    _ => write!(f, "{url}"),
                }
            }
        }
    }
}

/// How fresh a volunteer's `last_seen` is kept, in seconds.
pub const LAST_SEEN_GRAIN_S: i64 = 60;

pub struct Engine {
    db: Box<dyn Backend>,
    /// Draws for ringers, adaptive replication and challenges; seedable so simulations repeat.
    rng: Mutex<StdRng>,
    /// Adapter classes known to be in the `classes` table: each claimed class, the class it
    /// is counted in (itself, or `other` beyond the cap) and when its `seen` was last written
    /// (again after a day, so a class in use never expires).
    classes: Mutex<HashMap<String, (String, i64)>>,
    /// Replicas a new volunteer may hold at once ([`decide::work_allowance`]); `u32::MAX`
    /// (the default of an engine not behind the API, as in simulations): no limit.
    in_flight_base: std::sync::atomic::AtomicU32,
    /// The most work one challenge segment may cost to recompute (`max_recompute_work`).
    challenge_cap: std::sync::atomic::AtomicU64,
    /// Kernel packages checked in this process, by hash (immutable, so never stale).
    packages: Mutex<HashMap<Digest, Arc<Package>>>,
    /// Distinct volunteers whose errors suspend a package.
    package_error_volunteers: AtomicU64,
    /// When this process last recorded a verifier worker's visit (written once a minute).
    verifier_noted: AtomicI64,
}

/// How long after a verifier worker's last visit packages' units are still sampled for
/// recomputation (only verifiers, on a GPU, recompute them).
pub const VERIFIER_RECENT_S: i64 = 600;

/// What an operator does to a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageAction {
    Approve,
    Suspend,
}

use crate::lock;

impl Engine {
    pub fn new(db: Box<dyn Backend>) -> Result<Self> {
        let salt: [u8; 16] = rand::random();
        sql::write(db.as_ref(), |s| q::ensure_salt(s, &salt))?;
        Ok(Self {
            db,
            rng: Mutex::new(StdRng::from_os_rng()),
            classes: Mutex::default(),
            in_flight_base: std::sync::atomic::AtomicU32::new(u32::MAX),
            challenge_cap: std::sync::atomic::AtomicU64::new(u64::MAX),
            packages: Mutex::default(),
            package_error_volunteers: AtomicU64::new(decide::PACKAGE_ERROR_VOLUNTEERS),
            verifier_noted: AtomicI64::new(0),
        })
    }

    /// Opens the database (creating and migrating it as needed).
    pub fn open(db: &Database) -> Result<Self> {
        match db {
            Database::Sqlite(path) => Self::sqlite(path),
            Database::Postgres(url) => Self::postgres(url),
        }
    }

    pub fn sqlite(path: &Path) -> Result<Self> {
        Self::new(Box::new(SqliteBackend::open(path)?))
    }

    pub fn sqlite_in_memory() -> Result<Self> {
        Self::new(Box::new(SqliteBackend::open_in_memory()?))
    }

    /// PostgreSQL with a pool of 16 connections.
    pub fn postgres(url: &str) -> Result<Self> {
        Self::new(Box::new(PostgresBackend::connect(url, 16)?))
    }

    /// "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        self.db.name()
    }

    /// Makes the random draws (ringers, adaptive replication, challenges) repeatable.
    pub fn seed(&self, seed: u64) {
        *lock(&self.rng) = StdRng::seed_from_u64(seed);
    }

    pub(crate) fn write<T: Send>(
        &self,
        f: impl FnMut(&mut dyn Sql) -> Result<T> + Send,
    ) -> Result<T> {
        sql::write(self.db.as_ref(), f)
    }

    pub(crate) fn read<T: Send>(
        &self,
        f: impl FnMut(&mut dyn Sql) -> Result<T> + Send,
    ) -> Result<T> {
        sql::read(self.db.as_ref(), f)
    }

    // ---- Volunteers and keys ----

    pub fn register_volunteer(
        &self,
        token_hash: &[u8],
        nickname: Option<&str>,
        now: i64,
    ) -> Result<i64> {
        self.write(|s| q::register_volunteer(s, token_hash, nickname, now))
    }

    /// The volunteer a token belongs to, read without the write lock (every volunteer request
    /// starts here); its `last_seen` is written only when a minute old, so most requests cost
    /// one read, not a write transaction of their own.
    pub fn volunteer_by_token(&self, token_hash: &[u8], now: i64) -> Result<Option<VolunteerAuth>> {
        let v = self.read(|s| q::volunteer_by_token(s, token_hash))?;
        if let Some(v) = &v
            && now - v.last_seen >= LAST_SEEN_GRAIN_S
        {
            self.write(|s| q::touch_volunteer(s, v.id, now))?;
        }
        Ok(v)
    }

    pub fn create_key(&self, name: &str, key_hash: &[u8], operator: bool, now: i64) -> Result<i64> {
        self.write(|s| q::create_key(s, name, key_hash, operator, now))
    }

    pub fn key_by_hash(&self, key_hash: &[u8]) -> Result<Option<KeyAuth>> {
        self.read(|s| q::key_by_hash(s, key_hash))
    }

    pub fn set_nickname(&self, volunteer: i64, nickname: Option<&str>) -> Result<()> {
        self.write(|s| q::set_nickname(s, volunteer, nickname))
    }

    /// Whether a failed spot-check or challenge blacklists the volunteer and backtracks its
    /// work (on by default).
    pub fn set_blacklisting(&self, on: bool) -> Result<()> {
        self.write(|s| q::set_blacklisting(s, on))
    }

    /// Caps what one challenge segment may cost to recompute, as spot-checks are capped: a
    /// report whose drawn segment costs more is not challenged.
    pub fn set_challenge_cap(&self, work: u64) {
        self.challenge_cap
            .store(work, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bounds the work a volunteer holds by its record: `base` replicas for a new one, more
    /// as it earns valid results, fewer with errors, none when it only errs.
    pub fn set_work_in_flight(&self, base: u32) {
        self.in_flight_base
            .store(base, std::sync::atomic::Ordering::Relaxed);
    }

    // ---- Batches ----

    pub fn create_batch(&self, b: &NewBatch, now: i64) -> Result<i64> {
        self.create_batch_within(b, now, None)
    }

    /// [`Engine::create_batch`], refused ([`StoreError::Quota`]) if the batch's key would then
    /// have more than `max_open_units` units not yet settled; checked in the same transaction.
    pub fn create_batch_within(
        &self,
        b: &NewBatch,
        now: i64,
        max_open_units: Option<u64>,
    ) -> Result<i64> {
        // Everything derived from the params before the transaction: a bad unit changes nothing.
        let package = package_hash(&b.kernel);
        let mut units = Vec::with_capacity(b.units.len());
        for u in &b.units {
            let job = self
                .job(&b.kernel, &u.params)?
                .map_err(|e| StoreError::invalid("units", e.to_string()))?;
            units.push(q::UnitInsert {
                params: &u.params,
                output_len: job.output_len(),
                work: u.work,
                spot: if u.spot_check {
                    Spot::Pending
                } else {
                    Spot::None
                },
                version: job.version(),
                held: false,
                package: package.is_some(),
            });
        }
        let version = shaders::kernel_version(&b.kernel);
        self.write(|s| {
            // A package's units wait for its approval (read in this transaction).
            if let Some(h) = &package {
                let row = pk::get(s, h)?.ok_or(StoreError::NotFound("kernel package"))?;
                if row.status == "suspended" {
                    return Err(StoreError::Conflict(format!(
                        "kernel package {} is suspended: {}",
                        row.kernel(),
                        row.reason.as_deref().unwrap_or("by an operator")
                    )));
                }
                for u in &mut units {
                    u.held = row.status != "approved";
                }
            }
            if let (Some(max), Some(key)) = (max_open_units, b.key_id) {
                let open = q::open_units_of_key(s, key)?;
                let new = units.len() as u64;
                if open + new > max {
                    return Err(StoreError::Quota(format!(
                        "this key may have at most {max} units not yet finished; it has {open}, \
                         and this batch adds {new}: wait for some to finish or cancel a batch"
                    )));
                }
            }
            let batch = q::insert_batch(s, b, version, now)?;
            let mut committed = Vec::with_capacity(units.len());
            for u in &units {
                let id = q::insert_unit(s, batch, &b.kernel, &b.policy, u, now)?;
                committed.push((id, transparency::params_hash(u.params)));
            }
            // The batch's commitment, logged before any receipt of its units: a bundle that
            // leaves a unit out or presents other params is caught against it.
            let spec = b.spec();
            lg::set_batch_spec(s, batch, &transparency::canonical_json(&spec))?;
            let c = transparency::BatchCommitment::new(batch, &b.kernel, &spec, &committed, now);
            lg::queue(s, lg::COMMITMENT_UNIT, batch, &c.to_bytes())?;
            Ok(batch)
        })
    }

    /// Cancels a batch for its owner (`viewer`; None for an operator): its unsettled units
    /// fail (the lifecycle's `Cancel`), its queued spot-checks and challenges are dropped, and
    /// its settled results stand. Cancelling again changes nothing.
    pub fn cancel_batch(&self, batch: i64, viewer: Option<i64>, now: i64) -> Result<BatchStatus> {
        self.write(|s| {
            views::check_viewer(s, batch, viewer)?;
            q::cancel_batch(s, batch, now)?;
            for unit in q::unsettled_units(s, batch)? {
                self.step(s, unit, Event::Cancel, now)?;
            }
            q::drop_batch_checks(s, batch)?;
            views::batch_status(s, batch)
        })
    }

    // ---- Dispatch ----

    /// Up to `max` replicas of units the volunteer holds no replica of (nor, where a unit's
    /// policy asks for distinct prefixes, anybody in its network `prefix`); some may be
    /// ringers, as the units' `ringer_rate` says.
    pub fn request_work(
        &self,
        volunteer: i64,
        max: u32,
        adapter: &AdapterInfo,
        prefix: Option<&str>,
        now: i64,
    ) -> Result<Vec<Assignment>> {
        self.request_work_holding(volunteer, max, adapter, prefix, None, false, now)
    }

    /// [`Engine::request_work`] from a client that says which assignments it still holds:
    /// its open assignments not in `holding` were lost on the way and are sent again first
    /// (they count toward `max` and toward its allowance, as they did all along).
    /// `builtin_only`: no unit of a kernel package.
    #[allow(clippy::too_many_arguments)]
    pub fn request_work_holding(
        &self,
        volunteer: i64,
        max: u32,
        adapter: &AdapterInfo,
        prefix: Option<&str>,
        holding: Option<&[i64]>,
        builtin_only: bool,
        now: i64,
    ) -> Result<Vec<Assignment>> {
        let adapter_json = q::to_json(adapter)?;
        let claimed = decide::adapter_class(adapter);
        let known = lock(&self.classes)
            .get(&claimed)
            .filter(|(_, seen)| now - seen < 86_400)
            .map(|(class, _)| class.clone());
        let base = self
            .in_flight_base
            .load(std::sync::atomic::Ordering::Relaxed);
        let out = self.write(|s| {
            let class = match &known {
                Some(c) => c.clone(),
                None => q::ensure_class(
                    s,
                    &claimed,
                    decide::OTHER_CLASS,
                    decide::MAX_CLASSES,
                    now,
                )?,
            };
            let mut out = Vec::new();
            if let Some(holding) = holding {
                out = q::open_assignments(s, volunteer, max)?;
                out.retain(|a| !holding.contains(&a.assignment_id));
                for a in &mut out {
                    a.package = self.package_run(s, &a.kernel, &a.params)?;
                }
            }
            // Behind the API, what a volunteer may hold is bounded by its record, and its
            // deadlines follow its measured speed.
            let admitted = base != u32::MAX;
            let mut max = max.saturating_sub(out.len() as u32);
            if max == 0 {
                return Ok((out, class));
            }
            let mut speed = None;
            if admitted {
                let (valid, errors, in_flight) = q::volunteer_load(s, volunteer)?;
                let Some(allowed) = decide::work_allowance(base, valid, errors) else {
                    return Err(StoreError::Forbidden(format!(
                        "this volunteer reported {errors} errors and no valid result: it gets no more work"
                    )));
                };
                let room = u64::from(allowed).saturating_sub(in_flight);
                max = max.min(room.min(u64::from(u32::MAX)) as u32);
                if max == 0 {
                    return Ok((out, class));
                }
                speed = q::volunteer_speed(s, volunteer)?;
            }
            let mut streak = None;
            // What volunteers are told of each batch dispatched from (read once per request).
            let mut about: Vec<protocol::api::BatchAbout> = Vec::new();
            let ids = q::candidates(s, volunteer, max, prefix, builtin_only)?;
            for picked in ids {
                let mut u = q::lock_unit(s, picked)?;
                // A unit of a kernel version this coordinator no longer runs cannot be
                // computed or validated by anyone it serves: it is not handed out again.
                if u.kernel_version != shaders::kernel_version(&u.kernel) {
                    tracing::warn!(
                        unit = picked,
                        kernel = %u.kernel,
                        version = u.kernel_version,
                        "unit of a retired kernel version: not dispatched"
                    );
                    q::stop_dispatch(s, picked)?;
                    continue;
                }
                // A ringer takes this slot: a settled unit whose answer the coordinator
                // computed itself, sent like any other.
                let ringer = if decide::chance(&mut *lock(&self.rng), u.unit.policy.ringer_rate) {
                    self.pick_ringer(s, u.batch_id, volunteer)?
                } else {
                    None
                };
                if let Some(r) = ringer {
                    u = q::lock_unit(s, r)?;
                }
                let mut alone = false;
                if ringer.is_none()
                    && u.unit.policy.replication == lifecycle::Replication::Adaptive
                    && u.unit.target == 1
                {
                    let st = match streak {
                        Some(st) => st,
                        None => q::streak(s, volunteer)?,
                    };
                    streak = Some(st);
                    alone = decide::send_alone(&mut *lock(&self.rng), st);
                }
                let deadline_s = if admitted {
                    decide::replica_deadline_s(u.unit.policy.deadline_s, u.work, speed)
                } else {
                    u.unit.policy.deadline_s
                };
                let deadline = now + deadline_s.min(i64::MAX as u64) as i64;
                let assignment_id = q::insert_replica(
                    s,
                    &q::NewReplica {
                        unit: u.id,
                        volunteer,
                        now,
                        deadline,
                        adapter_json: &adapter_json,
                        alone,
                        prefix,
                        class: &class,
                        ringer: ringer.is_some(),
                    },
                )?;
                let batch = match about.iter().find(|b| b.id == u.batch_id) {
                    Some(b) => b.clone(),
                    None => {
                        let b = q::batch_about(s, u.batch_id)?;
                        about.push(b.clone());
                        b
                    }
                };
                let params: Value = q::from_json(&u.params)?;
                let assignment = Assignment {
                    assignment_id,
                    unit_id: u.id,
                    package: self.package_run(s, &u.kernel, &params)?,
                    params,
                    kernel: u.kernel.clone(),
                    deadline,
                    output_len: u.output_len,
                    kernel_version: u.kernel_version,
                    batch: Some(batch),
                };
                // The unit row read above (and locked) is the lifecycle's input.
                self.step_loaded(s, u, Event::Issued, now)?;
                out.push(assignment);
            }
            Ok((out, class))
        })?;
        if known.is_none() {
            let mut cache = lock(&self.classes);
            // Claims are attacker-chosen: the cache is bounded too (emptied when full).
            if cache.len() >= 4 * decide::MAX_CLASSES as usize {
                cache.clear();
            }
            cache.insert(claimed, (out.1, now));
        }
        Ok(out.0)
    }

    /// A random settled unit of `batch` with a known answer that `volunteer` never held.
    fn pick_ringer(&self, s: &mut dyn Sql, batch: i64, volunteer: i64) -> Result<Option<i64>> {
        let Some((lo, hi)) = q::ringer_range(s, batch)? else {
            return Ok(None);
        };
        let start = decide::ringer_start(&mut *lock(&self.rng), lo, hi);
        // From a random point, wrapping around once.
        for from in [start, lo] {
            if let Some(id) = q::ringer_from(s, batch, from, volunteer)? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    // ---- Reports ----

    /// Each assignment's kernel and params, checked to belong to `volunteer` (one result per
    /// id, in order).
    pub fn assignment_jobs(
        &self,
        volunteer: i64,
        assignments: &[i64],
    ) -> Result<Vec<Result<(String, Value, u32)>>> {
        self.read(|s| q::assignment_jobs(s, volunteer, assignments))
    }

    /// Applies reports in one transaction; each item succeeds or fails alone (a savepoint
    /// each), so a bad item changes nothing and does not spoil the others.
    pub fn report_batch(
        &self,
        volunteer: i64,
        items: &[(i64, ReportBody)],
        now: i64,
    ) -> Result<Vec<Result<ReportOutcome>>> {
        self.write(|s| {
            if self.db.concurrent_writers() {
                let replicas: Vec<i64> = items.iter().map(|(a, _)| *a).collect();
                q::lock_units_of(s, &replicas)?;
            }
            let mut out = Vec::with_capacity(items.len());
            for (assignment, body) in items {
                s.script("SAVEPOINT item")?;
                let r = self.report_one(s, volunteer, *assignment, body, now);
                match &r {
                    Ok(_) => s.script("RELEASE SAVEPOINT item")?,
                    // A database error aborts the whole transaction; an item error its item.
                    Err(e) if e.is_fatal() => return Err(e.clone()),
                    Err(_) => {
                        s.script("ROLLBACK TO SAVEPOINT item")?;
                        s.script("RELEASE SAVEPOINT item")?
                    }
                }
                out.push(r);
            }
            Ok(out)
        })
    }

    pub fn report(
        &self,
        volunteer: i64,
        assignment: i64,
        body: &ReportBody,
        now: i64,
    ) -> Result<ReportOutcome> {
        self.report_batch(volunteer, &[(assignment, body.clone())], now)?
            .pop()
            .unwrap_or(Err(StoreError::NotFound("assignment")))
    }

    fn report_one(
        &self,
        s: &mut dyn Sql,
        volunteer: i64,
        assignment: i64,
        body: &ReportBody,
        now: i64,
    ) -> Result<ReportOutcome> {
        // Its unit is locked already (report_batch), before any of its replicas is written.
        let (unit_id, deadline_at) = q::owned_replica(s, volunteer, assignment)?;
        let event = match body {
            ReportBody::Output {
                digest,
                output,
                checkpoints,
                summary,
            } => {
                q::put_output(s, digest, output)?;
                q::record_output(
                    s,
                    assignment,
                    digest,
                    checkpoints,
                    summary,
                    now,
                    now > deadline_at,
                )?;
                Event::Reported(assignment)
            }
            ReportBody::Error(msg) => {
                q::record_error(s, assignment, msg, now)?;
                Event::ClientError(assignment)
            }
        };
        // A conflict (second report) rolls all of this back.
        let after = self.step(s, unit_id, event, now)?;
        if let Some(hash) = package_hash(&after.kernel) {
            self.package_evidence(s, &hash, &after, volunteer, assignment, body, now)?;
        }
        let replica_state = q::replica_state(s, assignment)?;
        let mut challenge = None;
        if let ReportBody::Output {
            digest,
            checkpoints,
            ..
        } = body
            && matches!(replica_state, ReplicaState::Success | ReplicaState::Valid)
            && after.unit.policy.challenge_rate > 0.0
            && !checkpoints.is_empty()
            && decide::chance(&mut *lock(&self.rng), after.unit.policy.challenge_rate)
            && let Ok(job) = self.job_in(s, &after.kernel, &q::from_json(&after.params)?)?
            // A package's segment is recomputed by a verifier worker's GPU, if one comes.
            && (job.resumable_on_cpu()
                || (job.as_package().is_some() && self.verifiers_recent(s, now)?))
            && let Some(plan) =
                decide::pick_challenge(&mut *lock(&self.rng), checkpoints, job.state_len())
            && decide::segment_affordable(
                job.work(),
                &plan,
                checkpoints.last().map_or(0, |c| c.step),
                self.challenge_cap.load(std::sync::atomic::Ordering::Relaxed),
            )
        {
            let package = job.as_package().is_some();
            q::insert_challenge(
                s,
                assignment,
                &plan,
                plan.last.then_some(digest),
                package,
                now,
            )?;
            challenge = (plan.from > 0).then_some(plan.from);
        }
        Ok(ReportOutcome {
            replica_state,
            unit_state: after.unit.state,
            challenge,
        })
    }

    /// Marks replicas past their deadline as no-reply, and open challenges past theirs as
    /// expired (a check not passed: the result goes back through validation without it);
    /// returns how many of both.
    pub fn expire(&self, now: i64) -> Result<usize> {
        self.write(|s| {
            let due = q::due_replicas(s, now)?;
            if self.db.concurrent_writers() {
                let replicas: Vec<i64> = due.iter().map(|d| d.0).collect();
                q::lock_units_of(s, &replicas)?;
            }
            for (replica, unit) in &due {
                self.step(s, *unit, Event::Timeout(*replica), now)?;
            }
            // An unanswered challenge is a check not passed: the result it asked about goes
            // back through validation without it, and its volunteer's credibility starts over
            // (not blacklisted: an honest client may have been closed before answering). So
            // ignoring challenges buys a cheater nothing.
            let dodged = q::dodged_challenges(s, now)?;
            // Classes nobody has used for a month go, their records with them.
            q::expire_classes(s, now - decide::CLASS_EXPIRY_S)?;
            let mut n = due.len();
            for (replica, unit, volunteer) in &dodged {
                // Another coordinator may have expired it first.
                if q::close_challenge(s, *replica, "expired")? {
                    tracing::info!(volunteer, replica, "challenge unanswered");
                    self.step(s, *unit, Event::Backtrack(*volunteer), now)?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    // ---- Spot-checks and challenges ----

    /// Claims up to `limit` units whose spot-check answer the coordinator must compute, for
    /// `hold_s` seconds: nobody else (another worker, another coordinator) gets them meanwhile.
    /// They are taken round-robin across batches, and a batch with `per_batch` jobs in
    /// `running` (jobs being computed, by batch) gets none ([`decide::pick_spot_checks`]).
    pub fn claim_spot_checks(
        &self,
        limit: usize,
        now: i64,
        hold_s: i64,
        running: &HashMap<i64, usize>,
        per_batch: usize,
    ) -> Result<Vec<SpotJob>> {
        self.claim_spot_checks_for(limit, now, hold_s, running, per_batch, false)
    }

    /// [`Engine::claim_spot_checks`]; `gpu`: for a claimer that runs packages too (a verifier
    /// worker; the built-in CPU pool does not).
    pub fn claim_spot_checks_for(
        &self,
        limit: usize,
        now: i64,
        hold_s: i64,
        running: &HashMap<i64, usize>,
        per_batch: usize,
        gpu: bool,
    ) -> Result<Vec<SpotJob>> {
        let times = (now, now.saturating_add(hold_s));
        self.write(|s| q::claim_spot_checks(s, limit, times, running, per_batch, gpu))
    }

    /// Extends, for `hold_s` more seconds, the claims on spot-checks still being computed:
    /// a claim runs out soon after its holder dies, however long the job.
    pub fn renew_spot_claims(&self, units: &[i64], now: i64, hold_s: i64) -> Result<()> {
        self.write(|s| q::renew_spot_claims(s, units, now.saturating_add(hold_s)))
    }

    pub fn spot_check_done(
        &self,
        unit: i64,
        digest: &Digest,
        output: &[u8],
        now: i64,
    ) -> Result<()> {
        self.spot_check_done_unless(unit, digest, output, now, |_| false)
            .map(|_| ())
    }

    /// A spot-check's answer, stored unless `recheck` says otherwise (given each reported
    /// replica's volunteer, digest and record, for a kernel compared by digest; see
    /// `decide::verifier_needs_recheck`): whether it was stored.
    pub fn spot_check_done_unless(
        &self,
        unit: i64,
        digest: &Digest,
        output: &[u8],
        now: i64,
        recheck: impl Fn(&[(i64, Digest, bool)]) -> bool + Send + Sync,
    ) -> Result<bool> {
        self.write(|s| {
            let row = q::lock_unit(s, unit)?;
            if self.by_digest(s, &row)? {
                let reported: Vec<(i64, Digest, bool)> = q::replicas(s, unit, false)?
                    .iter()
                    .filter_map(|r| r.digest.map(|d| (r.replica.volunteer, d, r.replica.proven)))
                    .collect();
                if recheck(&reported) {
                    return Ok(false);
                }
            }
            q::spot_ready(s, unit, digest)?;
            q::put_output(s, digest, output)?;
            self.step(s, unit, Event::SpotReady, now)?;
            Ok(true)
        })
    }

    /// Whether `row`'s kernel compares results by digest (a package's, by its manifest).
    fn by_digest(&self, s: &mut dyn Sql, row: &UnitRow) -> Result<bool> {
        Ok(
            match shaders::kernels().iter().find(|k| k.name == row.kernel) {
                Some(info) => matches!(info.comparison, shaders::Comparison::Digest),
                None => self
                    .job_in(s, &row.kernel, &q::from_json(&row.params)?)?
                    .is_ok_and(|j| j.by_digest()),
            },
        )
    }

    /// A volunteer's answer to a challenge: the state buffers at `step`. A state that does not
    /// hash to the checkpoint it reported fails the challenge at once.
    pub fn answer_challenge(
        &self,
        volunteer: i64,
        assignment: i64,
        step: u64,
        state: Vec<Vec<u8>>,
        now: i64,
    ) -> Result<()> {
        let got = Digest::of_data_parts(state.iter().map(Vec::as_slice));
        let encoded: Vec<String> = state
            .iter()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
            .collect();
        let encoded = q::to_json(&encoded)?;
        self.write(|s| {
            q::owned_replica(s, volunteer, assignment)?;
            let Some((from, state_digest, status)) = q::challenge(s, assignment)? else {
                return Err(StoreError::NotFound("challenge"));
            };
            if status != "open" {
                return Err(StoreError::Conflict(format!(
                    "the challenge of assignment {assignment} is {status}"
                )));
            }
            if step != from {
                return Err(StoreError::invalid(
                    "step",
                    format!("the challenge asks for step {from}, got {step}"),
                ));
            }
            // The state must be the one the volunteer reported at that checkpoint.
            if state_digest != Some(got) {
                return self.settle_challenge(s, assignment, false, now);
            }
            q::challenge_answered(s, assignment, &encoded)
        })
    }

    /// Claims up to `limit` challenges whose segment can now be recomputed, for `hold_s`
    /// seconds.
    /// seconds; `gpu`: for a claimer that runs packages too.
    pub fn claim_challenges(
        &self,
        limit: usize,
        now: i64,
        hold_s: i64,
        gpu: bool,
    ) -> Result<Vec<ChallengeJob>> {
        self.write(|s| q::claim_challenges(s, limit, now, now.saturating_add(hold_s), gpu))
    }

    /// The verdict: a passed check, or a caught volunteer (blacklisted, its work backtracked).
    pub fn challenge_done(&self, replica: i64, passed: bool, now: i64) -> Result<()> {
        self.write(|s| self.settle_challenge(s, replica, passed, now))
    }

    /// A challenge's verdict is a lifecycle event of the replica's unit: its marks change the
    /// records like any other's.
    fn settle_challenge(
        &self,
        s: &mut dyn Sql,
        replica: i64,
        passed: bool,
        now: i64,
    ) -> Result<()> {
        let (unit, volunteer) = q::replica_unit(s, replica)?;
        // The unit first (the lock order reports keep), then its challenge.
        let row = q::lock_unit(s, unit)?;
        if !q::close_challenge(s, replica, if passed { "passed" } else { "failed" })? {
            return Err(StoreError::Conflict(format!(
                "challenge of assignment {replica} is already settled"
            )));
        }
        if !passed {
            tracing::warn!(volunteer, replica, "failed a challenge");
        }
        self.step_loaded(s, row, Event::ChallengeVerdict { replica, passed }, now)?;
        Ok(())
    }

    // ---- The lifecycle ----

    /// Runs the lifecycle for `event` on `unit_id` and applies the result; then what follows
    /// for a volunteer it caught ([`decide::after_caught`]): blacklisting and backtracking,
    /// which may catch others in turn. Depth first, in the order the decisions name them, from
    /// a stack rather than by recursion.
    fn step(&self, s: &mut dyn Sql, unit_id: i64, event: Event, now: i64) -> Result<UnitRow> {
        let row = q::lock_unit(s, unit_id)?;
        self.step_loaded(s, row, event, now)
    }

    /// [`Engine::step`] on a unit row already read (and locked) in this transaction.
    fn step_loaded(
        &self,
        s: &mut dyn Sql,
        row: UnitRow,
        event: Event,
        now: i64,
    ) -> Result<UnitRow> {
        enum Work {
            Follow(decide::FollowUp),
            Step(i64, Event),
        }
        let unit_id = row.id;
        let (after, marks) = self.transition(s, row, event, now)?;
        let follow_ups = |s: &mut dyn Sql, unit: i64, marks: &[Mark]| -> Result<Vec<Work>> {
            if !marks.iter().any(|m| {
                matches!(
                    m.2,
                    lifecycle::Mark::SpotFailed | lifecycle::Mark::ChallengeFailed
                )
            }) {
                return Ok(Vec::new());
            }
            let blacklisting = q::blacklisting(s)?;
            // Reversed: the stack pops the first one first.
            Ok(decide::after_caught(unit, marks, blacklisting)
                .into_iter()
                .rev()
                .map(Work::Follow)
                .collect())
        };
        let mut stack = follow_ups(s, unit_id, &marks)?;
        while let Some(work) = stack.pop() {
            match work {
                Work::Follow(decide::FollowUp::Blacklist { volunteer, except }) => {
                    if q::blacklist(s, volunteer)? {
                        let units = q::units_counting(s, volunteer, except.unwrap_or(-1))?;
                        tracing::warn!(
                            volunteer,
                            units = units.len(),
                            "blacklisted after a failed check; backtracking"
                        );
                        stack.extend(
                            units
                                .into_iter()
                                .rev()
                                .map(|u| Work::Step(u, Event::Backtrack(volunteer))),
                        );
                    }
                }
                Work::Follow(decide::FollowUp::Backtrack { volunteer, unit }) => {
                    stack.push(Work::Step(unit, Event::Backtrack(volunteer)))
                }
                Work::Step(unit, event) => {
                    let row = q::lock_unit(s, unit)?;
                    let (_, marks) = self.transition(s, row, event, now)?;
                    stack.extend(follow_ups(s, unit, &marks)?);
                }
            }
        }
        Ok(after)
    }

    /// One transition: load, decide, store. Returns the unit after it and its marks.
    fn transition(
        &self,
        s: &mut dyn Sql,
        row: UnitRow,
        event: Event,
        now: i64,
    ) -> Result<(UnitRow, Vec<Mark>)> {
        let unit_id = row.id;
        let policy = row.unit.policy;
        let credibility = policy.replication == lifecycle::Replication::Credibility;
        let rows = q::replicas(s, unit_id, credibility)?;
        let by_digest = self.by_digest(s, &row)?;
        let tolerance = if by_digest {
            None
        } else {
            self.job_in(s, &row.kernel, &q::from_json(&row.params)?)?
                .ok()
        };
        let replicas: Vec<Replica> = rows
            .iter()
            .map(|r| Replica {
                doubt: if credibility {
                    decide::replica_doubt(
                        r.checks,
                        r.class_passed,
                        r.class_failed,
                        policy.saboteur_fraction,
                    )
                } else {
                    1.0
                },
                ..r.replica
            })
            .collect();
        let digests: HashMap<ReplicaId, Digest> = rows
            .iter()
            .filter_map(|r| r.digest.map(|d| (r.replica.id, d)))
            .collect();
        let oracle = DbOracle {
            sql: RefCell::new(s),
            digests,
            spot: row.spot_digest,
            tolerance,
            cache: RefCell::new(HashMap::new()),
            error: RefCell::new(None),
        };
        let t =
            lifecycle::transition(&row.unit, &replicas, event, &oracle).map_err(|e| match e {
                lifecycle::LifecycleError::AlreadyClosed(..) => StoreError::Conflict(e.to_string()),
                lifecycle::LifecycleError::UnknownReplica(_) => StoreError::NotFound("assignment"),
            })?;
        if let Some(e) = oracle.error.borrow_mut().take() {
            return Err(e);
        }
        let DbOracle { sql, digests, .. } = oracle;
        let s = sql.into_inner();

        let became_canonical =
            t.unit.state == UnitState::Canonical && row.unit.state != UnitState::Canonical;
        let mut canonical_digest = row.canonical_digest;
        let mut summary = row.summary.clone();
        if became_canonical {
            canonical_digest = t.unit.canonical.and_then(|c| digests.get(&c).copied());
            if let Some(d) = &canonical_digest {
                summary = self.canonical_summary(s, &row, d)?;
            }
        }
        let (volunteers, classes) = decide::record_changes(&t.marks, row.work, |id| {
            replicas.iter().any(|r| r.id == id && r.proven)
        });
        let update = t.settled.then(|| q::UnitUpdate {
            unit: &t.unit,
            wanted: t.wanted,
            canonical_digest,
            summary: summary.as_deref(),
            done_at: t.unit.state.is_terminal().then_some(now),
        });
        q::apply(
            s,
            unit_id,
            update.as_ref(),
            &t.replicas,
            &volunteers,
            &classes,
        )?;
        let mut after = row;
        let before = std::mem::replace(&mut after.unit, t.unit);
        let before_digest = std::mem::replace(&mut after.canonical_digest, canonical_digest);
        after.summary = summary;
        if t.settled {
            // The replicas as they are now, and whether the agreeing ones changed.
            let now_state = |r: &q::ReplicaRow| {
                t.replicas
                    .iter()
                    .find(|(id, _)| *id == r.replica.id)
                    .map_or(r.replica.state, |c| c.1)
            };
            let agreeing_changed = rows.iter().any(|r| {
                (r.replica.state == ReplicaState::Valid) != (now_state(r) == ReplicaState::Valid)
            });
            let caught = match event {
                Event::Backtrack(v) => Some(v),
                _ => None,
            };
            if let Some(kind) =
                decide::receipt(&before, &after.unit, caught.is_some(), agreeing_changed)
            {
                let after_replicas: Vec<_> = rows
                    .iter()
                    .map(|r| (r.replica.volunteer, now_state(r), r.digest))
                    .collect();
                // Acceptance by credibility (not by the coordinator's own answer): the bound
                // the agreeing replicas reached.
                let error_bound = match (credibility, after.unit.spot, after.canonical_digest) {
                    (true, Spot::None, Some(c)) => Some(decide::error_bound(
                        &replicas
                            .iter()
                            .zip(&rows)
                            .map(|(r, row)| (r.doubt, row.digest))
                            .collect::<Vec<_>>(),
                        c,
                    )),
                    _ => None,
                };
                let decision = crate::log::Decision {
                    kind,
                    before: &before,
                    before_digest,
                    replicas: &after_replicas,
                    caught,
                    error_bound,
                };
                crate::log::queue_receipt(s, &after, decision, now)?;
            }
        }
        Ok((after, t.marks))
    }

    /// The canonical result's summary, recomputed from its output bytes by the coordinator.
    fn canonical_summary(
        &self,
        s: &mut dyn Sql,
        row: &UnitRow,
        d: &Digest,
    ) -> Result<Option<String>> {
        let Some(bytes) = q::output(s, d)? else {
            return Ok(None);
        };
        let Ok(job) = self.job_in(s, &row.kernel, &q::from_json(&row.params)?)? else {
            return Ok(None);
        };
        Ok(job.summarize(&bytes).ok().map(|s| s.to_string()))
    }

    // ---- Kernel packages ----

    /// The checked package with this hash: from memory, or from the database (checked again
    /// once per process: what is stored was checked when it came, by whichever coordinator).
    fn package_in(&self, s: &mut dyn Sql, hash: &Digest) -> Result<Option<Arc<Package>>> {
        if let Some(p) = lock(&self.packages).get(hash) {
            return Ok(Some(p.clone()));
        }
        let Some(bytes) = pk::files(s, hash)? else {
            return Ok(None);
        };
        let files = PackageFiles::from_canonical(&bytes, hash)
            .ok_or_else(|| StoreError::Db(format!("stored package {hash} does not hash to it")))?;
        let p = Arc::new(
            Package::from_files(files)
                .map_err(|e| StoreError::Db(format!("stored package {hash}: {e}")))?,
        );
        lock(&self.packages).insert(*hash, p.clone());
        Ok(Some(p))
    }

    /// The job of a unit of `kernel` (a built-in, or a package's `name@hash`) with `params`:
    /// the outer error is the store's, the inner one the params'.
    pub(crate) fn job_in(
        &self,
        s: &mut dyn Sql,
        kernel: &str,
        params: &Value,
    ) -> Result<std::result::Result<Job, ParamError>> {
        let Some(hash) = package_hash(kernel) else {
            return Ok(Job::new(kernel, params.clone()));
        };
        Ok(match self.package_in(s, &hash)? {
            Some(p) if p.kernel() == kernel => Job::package(&p, params),
            _ => Err(ParamError::UnknownPackage(kernel.to_owned())),
        })
    }

    /// [`Engine::job_in`] outside a transaction (a read one only when a package is not in
    /// memory yet).
    pub fn job(
        &self,
        kernel: &str,
        params: &Value,
    ) -> Result<std::result::Result<Job, ParamError>> {
        if let Some(hash) = package_hash(kernel)
            && lock(&self.packages).get(&hash).is_none()
        {
            return self.read(|s| self.job_in(s, kernel, params));
        }
        self.read_free(kernel, params)
    }

    fn read_free(
        &self,
        kernel: &str,
        params: &Value,
    ) -> Result<std::result::Result<Job, ParamError>> {
        let Some(hash) = package_hash(kernel) else {
            return Ok(Job::new(kernel, params.clone()));
        };
        let p = lock(&self.packages).get(&hash).cloned();
        Ok(match p {
            Some(p) if p.kernel() == kernel => Job::package(&p, params),
            _ => Err(ParamError::UnknownPackage(kernel.to_owned())),
        })
    }

    /// What an assignment of a package's unit carries (None for a built-in).
    fn package_run(
        &self,
        s: &mut dyn Sql,
        kernel: &str,
        params: &Value,
    ) -> Result<Option<protocol::package::PackageRun>> {
        if package_hash(kernel).is_none() {
            return Ok(None);
        }
        let job = self
            .job_in(s, kernel, params)?
            .map_err(|e| StoreError::Db(format!("stored params: {e}")))?;
        // Only approved packages' units are dispatched.
        Ok(job.as_package().map(|j| j.run(true)))
    }

    /// What a job of `kernel` with `params` carries for a client, if it is a package's.
    pub fn package_run_of(
        &self,
        kernel: &str,
        params: &Value,
    ) -> Result<Option<protocol::package::PackageRun>> {
        if package_hash(kernel).is_none() {
            return Ok(None);
        }
        self.read(|s| self.package_run(s, kernel, params))
    }

    /// Stores a package checked by the caller (pending until an operator approves it). Its
    /// status, and whether it is new (the same files again change nothing).
    pub fn put_package(
        &self,
        package: Package,
        key_id: Option<i64>,
        now: i64,
    ) -> Result<(protocol::status::PackageStatus, bool)> {
        let hash = package.hash;
        let bytes = package.files.canonical_bytes();
        let m = &package.manifest;
        let (row, new) = self.write(|s| {
            let new = pk::insert(s, &hash, &m.name, &m.author, &bytes, key_id, now)?;
            let row = pk::get(s, &hash)?.ok_or(StoreError::NotFound("kernel package"))?;
            Ok((row, new))
        })?;
        lock(&self.packages).insert(hash, Arc::new(package));
        Ok((row.status(), new))
    }

    /// Every package with its checked contents (for `/api/v1/kernels`), newest first.
    pub fn packages(&self) -> Result<Vec<(protocol::status::PackageStatus, Arc<Package>)>> {
        self.read(|s| {
            let mut out = Vec::new();
            for row in pk::list(s)? {
                if let Some(p) = self.package_in(s, &row.hash)? {
                    out.push((row.status(), p));
                }
            }
            Ok(out)
        })
    }

    /// The checked package with this hash, if it was uploaded here.
    pub fn package(&self, hash: &Digest) -> Result<Option<Arc<Package>>> {
        if let Some(p) = lock(&self.packages).get(hash) {
            return Ok(Some(p.clone()));
        }
        self.read(|s| self.package_in(s, hash))
    }

    pub fn package_status(&self, hash: &Digest) -> Result<Option<protocol::status::PackageStatus>> {
        Ok(self.read(|s| pk::get(s, hash))?.map(|r| r.status()))
    }

    /// A package's canonical bytes (what `GET /api/v1/kernels/{hash}` serves).
    pub fn package_files(&self, hash: &Digest) -> Result<Option<Vec<u8>>> {
        self.read(|s| pk::files(s, hash))
    }

    /// An operator approves a package (its units are dispatched from now on) or suspends it
    /// (they are held), saying why.
    pub fn set_package(
        &self,
        hash: &Digest,
        action: PackageAction,
        reason: &str,
        now: i64,
    ) -> Result<protocol::status::PackageStatus> {
        self.write(|s| {
            let row = pk::get(s, hash)?.ok_or(StoreError::NotFound("kernel package"))?;
            match action {
                PackageAction::Approve => {
                    pk::set_status(s, hash, "approved", Some(reason), now)?;
                    pk::hold_units(s, &row.kernel(), false)?;
                }
                PackageAction::Suspend => self.suspend(s, &row, reason, now)?,
            }
            pk::get(s, hash)?
                .map(|r| r.status())
                .ok_or(StoreError::NotFound("kernel package"))
        })
    }

    fn suspend(&self, s: &mut dyn Sql, row: &pk::PackageRow, reason: &str, now: i64) -> Result<()> {
        pk::set_status(s, &row.hash, "suspended", Some(reason), now)?;
        let held = pk::hold_units(s, &row.kernel(), true)?;
        tracing::warn!(package = %row.kernel(), held, reason, "kernel package suspended");
        Ok(())
    }

    /// Distinct volunteers (each with a record) whose errors suspend a package.
    pub fn set_package_error_volunteers(&self, n: u64) {
        self.package_error_volunteers
            .store(n.max(1), Ordering::Relaxed);
    }

    /// What a report says of its package: an error from a volunteer with a record counts
    /// toward suspending it; a digest package's result is compared with the unit's other
    /// results from the same adapter class, whose disagreement beyond chance suspends it as
    /// nondeterministic.
    #[allow(clippy::too_many_arguments)]
    fn package_evidence(
        &self,
        s: &mut dyn Sql,
        hash: &Digest,
        unit: &UnitRow,
        volunteer: i64,
        assignment: i64,
        body: &ReportBody,
        now: i64,
    ) -> Result<()> {
        let Some(row) = pk::get(s, hash)? else {
            return Ok(());
        };
        if row.status == "suspended" {
            return Ok(());
        }
        match body {
            ReportBody::Error(msg) => {
                let (valid, errors, _) = q::volunteer_load(s, volunteer)?;
                if !decide::has_record(valid, errors) {
                    return Ok(());
                }
                let n = pk::record_error(s, hash, volunteer, msg, now)?;
                let threshold = self.package_error_volunteers.load(Ordering::Relaxed);
                if decide::suspend_for_errors(n, threshold) {
                    let reason = format!(
                        "errors from {n} volunteers on their devices; the last said: {msg}"
                    );
                    self.suspend(s, &row, &reason, now)?;
                }
            }
            ReportBody::Output { .. } => {
                let by_digest = self
                    .job_in(s, &unit.kernel, &q::from_json(&unit.params)?)?
                    .is_ok_and(|j| j.by_digest());
                if !by_digest {
                    return Ok(());
                }
                let reported = pk::reported_replicas(s, unit.id)?;
                let view = pk::reported;
                let Some(new) = reported.iter().find(|r| r.0 == assignment) else {
                    return Ok(());
                };
                let earlier: Vec<_> = reported
                    .iter()
                    .filter(|r| r.0 != assignment)
                    .map(view)
                    .collect();
                let (pairs, disagree) = decide::same_class_pairs(&view(new), &earlier);
                if pairs == 0 {
                    return Ok(());
                }
                let (pairs, disagree) = pk::add_class_pairs(s, hash, pairs, disagree)?;
                if decide::nondeterministic(pairs, disagree, unit.unit.policy.saboteur_fraction) {
                    let reason = format!(
                        "nondeterministic: {disagree} of {pairs} pairs of results from one kind of \
                         device disagree (a race between invocations, or an out-of-bounds read, \
                         whose value WebGPU leaves to the implementation)"
                    );
                    self.suspend(s, &row, &reason, now)?;
                }
            }
        }
        Ok(())
    }

    /// Records a verifier worker's visit (at most once a minute per process).
    pub fn note_verifier(&self, now: i64) -> Result<()> {
        if now - self.verifier_noted.load(Ordering::Relaxed) < 60 {
            return Ok(());
        }
        self.write(|s| pk::set_verifier_seen(s, now))?;
        self.verifier_noted.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// Whether a verifier worker asked for work lately (so packages' units can be recomputed).
    fn verifiers_recent(&self, s: &mut dyn Sql, now: i64) -> Result<bool> {
        Ok(now - pk::verifier_seen(s)? <= VERIFIER_RECENT_S)
    }

    /// [`Engine::verifiers_recent`] in a transaction of its own.
    pub fn verifiers_available(&self, now: i64) -> Result<bool> {
        self.read(|s| self.verifiers_recent(s, now))
    }

    // ---- Read views ----

    /// `viewer`: None for an operator (sees all), Some(key) for a scientist.
    pub fn batch_status(&self, batch: i64, viewer: Option<i64>) -> Result<BatchStatus> {
        self.read(|s| {
            views::check_viewer(s, batch, viewer)?;
            views::batch_status(s, batch)
        })
    }

    /// The viewer's batches (all for an operator), newest first.
    pub fn list_batches(&self, viewer: Option<i64>) -> Result<Vec<BatchStatus>> {
        self.read(|s| views::list_batches(s, viewer))
    }

    pub fn batch_results(&self, batch: i64, viewer: Option<i64>) -> Result<Vec<UnitResult>> {
        self.read(|s| {
            views::check_viewer(s, batch, viewer)?;
            views::batch_results(s, batch)
        })
    }

    pub fn unit_provenance(&self, unit: i64, viewer: Option<i64>) -> Result<UnitProvenance> {
        self.read(|s| views::unit_provenance(s, unit, viewer))
    }

    pub fn status(&self) -> Result<Status> {
        self.read(views::status)
    }

    /// The dashboard around counters already read (the shared status snapshot), with the
    /// newest cosignature of each of `witnesses` (their names).
    pub fn dashboard(&self, status: &Status, witnesses: &[String], now: i64) -> Result<Dashboard> {
        self.read(|s| views::dashboard(s, status.clone(), witnesses, now))
    }

    pub fn volunteer_stats(&self, volunteer: i64) -> Result<VolunteerStats> {
        self.read(|s| views::volunteer_stats(s, volunteer))
    }

    pub fn leaderboard(&self, limit: usize) -> Result<Vec<LeaderboardRow>> {
        self.read(|s| views::leaderboard(s, limit))
    }

    pub fn output(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        self.read(|s| q::output(s, digest))
    }

    pub fn unit_count(&self) -> Result<u64> {
        self.read(views::unit_count)
    }

    /// Units not yet settled (neither canonical nor failed).
    pub fn open_units(&self) -> Result<u64> {
        self.read(views::open_units)
    }

    /// Challenges by status (open, ready, passed, failed, expired).
    pub fn challenge_counts(&self) -> Result<BTreeMap<String, u64>> {
        self.read(views::challenge_counts)
    }

    /// Spot-checks whose answer is still to be computed (claimed or not).
    pub fn queued_spot_checks(&self) -> Result<u64> {
        self.read(views::queued_spot_checks)
    }

    /// Ringer replicas issued so far.
    pub fn ringers_issued(&self) -> Result<u64> {
        self.read(views::ringers_issued)
    }

    /// The ids of blacklisted volunteers.
    pub fn blacklisted_volunteers(&self) -> Result<HashSet<i64>> {
        self.read(views::blacklisted_volunteers)
    }
}

/// Agreement by digest, or for float kernels by the kernel's tolerance on the stored outputs.
struct DbOracle<'a, 'b> {
    sql: RefCell<&'a mut (dyn Sql + 'b)>,
    digests: HashMap<ReplicaId, Digest>,
    spot: Option<Digest>,
    tolerance: Option<Job>,
    cache: RefCell<HashMap<Digest, Option<Vec<u8>>>>,
    /// A database error while comparing (reported after the transition).
    error: RefCell<Option<StoreError>>,
}

impl DbOracle<'_, '_> {
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
                let bytes = match q::output(&mut **self.sql.borrow_mut(), d) {
                    Ok(b) => b,
                    Err(e) => {
                        self.error.borrow_mut().get_or_insert(e);
                        None
                    }
                };
                cache.insert(*d, bytes);
            }
        }
        match (cache.get(a), cache.get(b)) {
            (Some(Some(x)), Some(Some(y))) => job.equivalent(x, y),
            _ => false,
        }
    }
}

impl Oracle for DbOracle<'_, '_> {
    fn agree(&self, a: ReplicaId, b: ReplicaId) -> bool {
        self.same(self.digests.get(&a), self.digests.get(&b))
    }
    fn matches_spot(&self, r: ReplicaId) -> bool {
        self.same(self.digests.get(&r), self.spot.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_choose_the_backend_and_hide_passwords() {
        assert_eq!(
            Database::parse("qg-data/coordinator.db"),
            Database::Sqlite("qg-data/coordinator.db".into())
        );
        let pg = Database::parse("postgres://qg:secret@db:5432/qg");
        assert!(matches!(pg, Database::Postgres(_)));
        assert_eq!(pg.to_string(), "postgres://qg:***@db:5432/qg");
        assert_eq!(
            Database::parse("postgresql://db/qg").to_string(),
            "postgresql://db/qg"
        );
    }

    #[test]
    fn adapter_classes_are_capped_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(&Database::Sqlite(dir.path().join("c.db"))).unwrap();
        let ensure = |c: &str, now| {
            e.write(|s| q::ensure_class(s, c, decide::OTHER_CLASS, 3, now))
                .unwrap()
        };
        assert_eq!(ensure("a", 10), "a");
        assert_eq!(ensure("b", 10), "b");
        assert_eq!(ensure("a", 20), "a", "known: seen again");
        // The third row is the last: then everything new is "other".
        assert_eq!(ensure("c", 30), "c");
        assert_eq!(ensure("d", 30), "other");
        assert_eq!(ensure("e", 30), "other");
        let n = |e: &Engine| {
            e.read(|s| s.row("SELECT count(*) FROM classes", &[])?.unwrap().int(0))
                .unwrap()
        };
        assert_eq!(n(&e), 4);
        // Unseen since before 25: a and b go ("other" is a row too), and a new class has
        // room again.
        assert_eq!(e.write(|s| q::expire_classes(s, 25)).unwrap(), 2);
        assert_eq!(ensure("f", 40), "f");
    }
}
