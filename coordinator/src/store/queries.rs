//! Every query the coordinator makes, written once for both backends (see [`super::sql`] for
//! the dialect rules). Functions here read rows into the lifecycle's types and write what a
//! decision produced; none of them decides anything.

use super::sql::{Row, Sql, p};
use super::*;
use crate::decide::{ChallengePlan, ClassDelta, VolunteerDelta};
use crate::lifecycle::{Policy, ReplicaState, UnitState};
use crate::lifecycle::{Replica, ReplicaId, Replication, Spot, Unit};
use std::collections::HashMap;

/// Decodes JSON the store itself wrote; a failure means a damaged database.
pub fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Db(format!("stored JSON: {e}")))
}

pub fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Db(format!("encoding JSON: {e}")))
}

pub(super) fn digest_of(blob: Option<&[u8]>) -> Option<Digest> {
    blob.and_then(|b| <[u8; 32]>::try_from(b).ok().map(Digest))
}

pub(super) fn state_of(s: &str) -> Result<UnitState> {
    UnitState::parse(s).ok_or_else(|| StoreError::Db(format!("bad unit state {s}")))
}

pub(super) fn rstate_of(s: &str) -> Result<ReplicaState> {
    ReplicaState::parse(s).ok_or_else(|| StoreError::Db(format!("bad replica state {s}")))
}

fn spot_of(s: &str) -> Spot {
    match s {
        "pending" => Spot::Pending,
        "ready" => Spot::Ready,
        _ => Spot::None,
    }
}

pub fn spot_str(s: Spot) -> &'static str {
    match s {
        Spot::None => "none",
        Spot::Pending => "pending",
        Spot::Ready => "ready",
    }
}

fn u32_of(v: i64) -> u32 {
    v.clamp(0, u32::MAX.into()) as u32
}

// ---- Meta ----

/// Creates the per-database salt that anonymises volunteer ids, if there is none yet.
pub fn ensure_salt(s: &mut dyn Sql, salt: &[u8]) -> Result<()> {
    s.exec(
        "INSERT INTO meta(key, value) VALUES ('anon_salt', ?1) ON CONFLICT DO NOTHING",
        p![salt],
    )?;
    Ok(())
}

pub fn anon_salt(s: &mut dyn Sql) -> Result<Vec<u8>> {
    s.one("SELECT value FROM meta WHERE key = 'anon_salt'", p![])?
        .blob(0)
}

/// An anonymised volunteer id: stable per volunteer, not the database id.
pub fn anon(salt: &[u8], volunteer: i64) -> String {
    let d = Digest::of_parts([salt, &volunteer.to_le_bytes()[..]]);
    format!("v-{}", &d.to_hex()[..12])
}

/// Whether a failed spot-check or challenge blacklists the volunteer (the default).
pub fn blacklisting(s: &mut dyn Sql) -> Result<bool> {
    let v = s.row(
        "SELECT value FROM meta WHERE key = 'blacklist_on_spot_failure'",
        p![],
    )?;
    Ok(match v {
        Some(r) => r.blob(0)? != b"0",
        None => true,
    })
}

pub fn set_blacklisting(s: &mut dyn Sql, on: bool) -> Result<()> {
    let v: &[u8] = if on { b"1" } else { b"0" };
    s.exec(
        "INSERT INTO meta(key, value) VALUES ('blacklist_on_spot_failure', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        p![v],
    )?;
    Ok(())
}

// ---- Volunteers and keys ----

pub fn register_volunteer(
    s: &mut dyn Sql,
    token_hash: &[u8],
    nickname: Option<&str>,
    now: i64,
) -> Result<i64> {
    s.insert(
        "INSERT INTO volunteers(token_hash, nickname, created_at, last_seen)
         VALUES (?1, ?2, ?3, ?3)",
        p![token_hash, nickname, now],
    )
}

pub fn volunteer_by_token(s: &mut dyn Sql, token_hash: &[u8]) -> Result<Option<VolunteerAuth>> {
    s.row(
        "SELECT id, blacklisted, last_seen FROM volunteers WHERE token_hash = ?1",
        p![token_hash],
    )?
    .map(|r| {
        Ok(VolunteerAuth {
            id: r.int(0)?,
            blacklisted: r.flag(1)?,
            last_seen: r.int(2)?,
        })
    })
    .transpose()
}

pub fn touch_volunteer(s: &mut dyn Sql, volunteer: i64, now: i64) -> Result<()> {
    s.exec(
        "UPDATE volunteers SET last_seen = ?2 WHERE id = ?1 AND last_seen < ?2",
        p![volunteer, now],
    )?;
    Ok(())
}

pub fn set_nickname(s: &mut dyn Sql, volunteer: i64, nickname: Option<&str>) -> Result<()> {
    let n = s.exec(
        "UPDATE volunteers SET nickname = ?2 WHERE id = ?1",
        p![volunteer, nickname],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound("volunteer"));
    }
    Ok(())
}

pub fn create_key(
    s: &mut dyn Sql,
    name: &str,
    key_hash: &[u8],
    operator: bool,
    now: i64,
) -> Result<i64> {
    s.insert(
        "INSERT INTO api_keys(name, key_hash, operator, created_at) VALUES (?1, ?2, ?3, ?4)",
        p![name, key_hash, operator, now],
    )
}

pub fn key_by_hash(s: &mut dyn Sql, key_hash: &[u8]) -> Result<Option<KeyAuth>> {
    s.row(
        "SELECT id, name, operator FROM api_keys WHERE key_hash = ?1",
        p![key_hash],
    )?
    .map(|r| {
        Ok(KeyAuth {
            id: r.int(0)?,
            name: r.text(1)?,
            operator: r.flag(2)?,
        })
    })
    .transpose()
}

// ---- Batches ----

/// A unit ready to insert: the API checked it, the engine derived the rest.
pub struct UnitInsert<'a> {
    pub params: &'a Value,
    pub output_len: u64,
    pub work: u64,
    pub spot: Spot,
    pub version: u32,
    /// Not dispatched (a package not approved yet).
    pub held: bool,
    /// A unit of a kernel package.
    pub package: bool,
}

pub fn insert_batch(s: &mut dyn Sql, b: &NewBatch, version: u32, now: i64) -> Result<i64> {
    s.insert(
        "INSERT INTO batches(key_id, name, kernel, policy, spot_rate, units, created_at, axes,
             kernel_version, description)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        p![
            b.key_id,
            &b.name,
            &b.kernel,
            to_json(&b.policy)?,
            b.spot_check_rate,
            b.units.len(),
            now,
            to_json(&b.axes)?,
            version,
            b.description.as_deref()
        ],
    )
}

/// What volunteers are told of a batch.
pub fn batch_about(s: &mut dyn Sql, batch: i64) -> Result<protocol::api::BatchAbout> {
    let r = s
        .row(
            "SELECT name, description FROM batches WHERE id = ?1",
            p![batch],
        )?
        .ok_or(StoreError::NotFound("batch"))?;
    Ok(protocol::api::BatchAbout {
        id: batch,
        name: r.text(0)?,
        description: r.opt_text(1)?,
    })
}

/// `volunteer`'s open assignments (oldest first, at most `limit`), as they were handed out.
pub fn open_assignments(
    s: &mut dyn Sql,
    volunteer: i64,
    limit: u32,
) -> Result<Vec<protocol::api::Assignment>> {
    s.query(
        "SELECT r.id, r.deadline_at, u.id, u.params, u.kernel, u.output_len, u.kernel_version,
                b.id, b.name, b.description
         FROM replicas r JOIN units u ON u.id = r.unit_id JOIN batches b ON b.id = u.batch_id
         WHERE r.volunteer_id = ?1 AND r.state = 'in_progress' ORDER BY r.id LIMIT ?2",
        p![volunteer, limit],
    )?
    .iter()
    .map(|r| {
        Ok(protocol::api::Assignment {
            assignment_id: r.int(0)?,
            deadline: r.int(1)?,
            unit_id: r.int(2)?,
            params: from_json(r.str(3)?)?,
            kernel: r.text(4)?,
            output_len: r.count(5)?,
            kernel_version: r.int(6)? as u32,
            batch: Some(protocol::api::BatchAbout {
                id: r.int(7)?,
                name: r.text(8)?,
                description: r.opt_text(9)?,
            }),
            // The engine adds a package's plan.
            package: None,
        })
    })
    .collect()
}

/// Units of `key`'s batches not yet settled (neither canonical nor failed).
pub fn open_units_of_key(s: &mut dyn Sql, key: i64) -> Result<u64> {
    let r = s.one(
        "SELECT count(*) FROM units u JOIN batches b ON b.id = u.batch_id
         WHERE b.key_id = ?1 AND u.state <> 'canonical' AND u.state <> 'failed'",
        p![key],
    )?;
    r.count(0)
}

pub fn insert_unit(
    s: &mut dyn Sql,
    batch: i64,
    kernel: &str,
    policy: &Policy,
    u: &UnitInsert<'_>,
    now: i64,
) -> Result<i64> {
    let id = s.insert(
        "INSERT INTO units(batch_id, kernel, params, output_len, work, state, min_quorum,
                 target_results, max_error_results, max_total_results, deadline_s, target,
                 wanted, spot, created_at, replication, target_error, saboteur_fraction,
                 ringer_rate, distinct_prefixes, challenge_rate, kernel_version, held, package)
             VALUES (?1, ?2, ?3, ?4, ?5, 'unsent', ?6, ?7, ?8, ?9, ?10, ?13, ?13, ?11, ?12,
                 ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
        p![
            batch,
            kernel,
            u.params.to_string(),
            u.output_len,
            u.work as f64,
            policy.min_quorum,
            policy.target_results,
            policy.max_error_results,
            policy.max_total_results,
            policy.deadline_s,
            spot_str(u.spot),
            now,
            policy.initial_target(),
            policy.replication.as_str(),
            policy.target_error,
            policy.saboteur_fraction,
            policy.ringer_rate,
            policy.distinct_prefixes,
            policy.challenge_rate,
            u.version,
            u.held,
            u.package,
        ],
    )?;
    if u.spot == Spot::Pending {
        s.exec(
            "INSERT INTO spot_queue(unit_id, batch_id, package) VALUES (?1, ?2, ?3)",
            p![id, batch, u.package],
        )?;
    }
    Ok(id)
}

// ---- Units and replicas, for the lifecycle ----

/// A unit row with what the lifecycle and the API need.
pub struct UnitRow {
    pub id: i64,
    pub batch_id: i64,
    pub kernel: String,
    pub params: String,
    pub work: f64,
    pub unit: Unit,
    pub spot_digest: Option<Digest>,
    pub canonical_digest: Option<Digest>,
    pub summary: Option<String>,
    /// Bytes of a canonical output (what dispatch tells the volunteer).
    pub output_len: u64,
    /// The kernel version the unit was created for.
    pub kernel_version: u32,
}

/// A replica as the lifecycle sees it, with what its doubt is computed from.
pub struct ReplicaRow {
    pub replica: Replica,
    pub digest: Option<Digest>,
    /// Its volunteer's passed checks and its adapter class's record (credibility mode only).
    pub checks: u64,
    pub class_passed: u64,
    pub class_failed: u64,
}

fn unit_row(r: &Row) -> Result<UnitRow> {
    let policy = Policy {
        min_quorum: u32_of(r.int(6)?),
        target_results: u32_of(r.int(7)?),
        max_error_results: u32_of(r.int(8)?),
        max_total_results: u32_of(r.int(9)?),
        deadline_s: r.int(10)?.max(0) as u64,
        replication: Replication::parse(r.str(18)?).unwrap_or_default(),
        target_error: r.real(19)?,
        saboteur_fraction: r.real(20)?,
        ringer_rate: r.real(21)?,
        distinct_prefixes: r.flag(22)?,
        challenge_rate: r.real(23)?,
    };
    Ok(UnitRow {
        id: r.int(0)?,
        batch_id: r.int(1)?,
        kernel: r.text(2)?,
        params: r.text(3)?,
        work: r.real(4)?,
        unit: Unit {
            state: state_of(r.str(5)?)?,
            policy,
            target: u32_of(r.int(11)?),
            spot: spot_of(r.str(12)?),
            canonical: r.opt_int(14)?,
            fail_reason: r.opt_text(17)?,
        },
        spot_digest: digest_of(r.opt_bytes(13)?),
        canonical_digest: digest_of(r.opt_bytes(15)?),
        summary: r.opt_text(16)?,
        output_len: r.count(24)?,
        kernel_version: u32_of(r.int(25)?),
    })
}

/// The columns [`unit_row`] reads, in its order (a macro: queries are `&'static str`).
macro_rules! unit_columns {
    () => {
        "SELECT id, batch_id, kernel, params, work, state, min_quorum, target_results,
            max_error_results, max_total_results, deadline_s, target, spot, spot_digest,
            canonical_replica, canonical_digest, summary, fail_reason, replication,
            target_error, saboteur_fraction, ringer_rate, distinct_prefixes, challenge_rate,
            output_len, kernel_version
         FROM units WHERE id = ?1"
    };
}

/// A unit, read for a look (the API's views).
pub fn unit(s: &mut dyn Sql, id: i64) -> Result<UnitRow> {
    let r = s
        .row(unit_columns!(), p![id])?
        .ok_or(StoreError::NotFound("unit"))?;
    unit_row(&r)
}

/// A unit, locked until the transaction ends: its lifecycle runs on what this returns, so no
/// other coordinator may change it meanwhile. Lock a unit before writing its replicas.
pub fn lock_unit(s: &mut dyn Sql, id: i64) -> Result<UnitRow> {
    let r = s
        .row(concat!(unit_columns!(), " /*FOR UPDATE*/"), p![id])?
        .ok_or(StoreError::NotFound("unit"))?;
    unit_row(&r)
}

/// A unit's replicas in id order; with `records` (credibility mode), each with its
/// volunteer's checks and its class's record.
pub fn replicas(s: &mut dyn Sql, unit: i64, records: bool) -> Result<Vec<ReplicaRow>> {
    let rows = if records {
        s.query(
            "SELECT r.id, r.volunteer_id, r.state, r.digest, r.alone, v.checks,
                    coalesce(c.passed, 0), coalesce(c.failed, 0), v.valid, v.errors
             FROM replicas r JOIN volunteers v ON v.id = r.volunteer_id
             LEFT JOIN classes c ON c.name = r.class
             WHERE r.unit_id = ?1 ORDER BY r.id",
            p![unit],
        )?
    } else {
        s.query(
            "SELECT r.id, r.volunteer_id, r.state, r.digest, r.alone, 0, 0, 0, v.valid, v.errors
             FROM replicas r JOIN volunteers v ON v.id = r.volunteer_id
             WHERE r.unit_id = ?1 ORDER BY r.id",
            p![unit],
        )?
    };
    rows.iter()
        .map(|r| {
            Ok(ReplicaRow {
                replica: Replica {
                    id: r.int(0)?,
                    volunteer: r.int(1)?,
                    state: rstate_of(r.str(2)?)?,
                    doubt: 1.0,
                    alone: r.flag(4)?,
                    proven: crate::decide::has_record(r.count(8)?, r.count(9)?),
                },
                digest: digest_of(r.opt_bytes(3)?),
                checks: r.count(5)?,
                class_passed: r.count(6)?,
                class_failed: r.count(7)?,
            })
        })
        .collect()
}

pub fn output(s: &mut dyn Sql, d: &Digest) -> Result<Option<Vec<u8>>> {
    s.row("SELECT bytes FROM outputs WHERE digest = ?1", p![d])?
        .map(|r| r.blob(0))
        .transpose()
}

pub fn put_output(s: &mut dyn Sql, d: &Digest, bytes: &[u8]) -> Result<()> {
    s.exec(
        "INSERT INTO outputs(digest, bytes) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        p![d, bytes],
    )?;
    Ok(())
}

/// A unit's columns after a transition.
pub struct UnitUpdate<'a> {
    pub unit: &'a Unit,
    pub wanted: u32,
    pub canonical_digest: Option<Digest>,
    pub summary: Option<&'a str>,
    pub done_at: Option<i64>,
}

/// Applies a transition: the unit (None: left as it is), its replicas' states, and the record
/// changes of its marks.
pub fn apply(
    s: &mut dyn Sql,
    unit_id: i64,
    up: Option<&UnitUpdate<'_>>,
    replicas: &[(ReplicaId, ReplicaState)],
    volunteers: &[VolunteerDelta],
    classes: &[ClassDelta],
) -> Result<()> {
    if let Some(up) = up {
        s.exec(
            "UPDATE units SET state = ?2, target = ?3, wanted = ?4, canonical_replica = ?5,
             canonical_digest = ?6, summary = ?7, fail_reason = ?8,
             done_at = COALESCE(done_at, ?9)
         WHERE id = ?1",
            p![
                unit_id,
                up.unit.state.as_str(),
                up.unit.target,
                up.wanted,
                up.unit.canonical,
                up.canonical_digest.as_ref(),
                up.summary,
                up.unit.fail_reason.as_deref(),
                up.done_at,
            ],
        )?;
    }
    for (id, st) in replicas {
        s.exec(
            "UPDATE replicas SET state = ?2 WHERE id = ?1",
            p![*id, st.as_str()],
        )?;
    }
    for d in volunteers {
        s.exec(
            "UPDATE volunteers SET valid = valid + ?2, invalid = invalid + ?3,
                 errors = errors + ?4, spot_failed = spot_failed + ?5, credit = credit + ?6,
                 checks = (CASE WHEN ?7 = 1 THEN 0 ELSE checks END) + ?8,
                 streak = (CASE WHEN ?9 = 1 THEN 0 ELSE streak END) + ?10
             WHERE id = ?1",
            p![
                d.volunteer,
                d.valid,
                d.invalid,
                d.errors,
                d.spot_failed,
                d.credit,
                d.checks.reset,
                d.checks.add,
                d.streak.reset,
                d.streak.add
            ],
        )?;
    }
    for c in classes {
        s.exec(
            "UPDATE classes SET passed = passed + ?2, failed = failed + ?3
             WHERE name = (SELECT class FROM replicas WHERE id = ?1)",
            p![c.replica, c.passed, c.failed],
        )?;
    }
    Ok(())
}

/// Marks a volunteer blacklisted; whether it was not already.
pub fn blacklist(s: &mut dyn Sql, volunteer: i64) -> Result<bool> {
    Ok(s.exec(
        "UPDATE volunteers SET blacklisted = 1 WHERE id = ?1 AND blacklisted = 0",
        p![volunteer],
    )? > 0)
}

/// Units other than `except` where a volunteer still counts (a result, a validated result,
/// work in hand).
pub fn units_counting(s: &mut dyn Sql, volunteer: i64, except: i64) -> Result<Vec<i64>> {
    s.query(
        "SELECT DISTINCT unit_id FROM replicas WHERE volunteer_id = ?1 AND unit_id != ?2
         AND state IN ('success', 'valid', 'in_progress') ORDER BY unit_id",
        p![volunteer, except],
    )?
    .iter()
    .map(|r| r.int(0))
    .collect()
}

// ---- Dispatch ----

/// Records that `class` was seen now, adding it if there are fewer than `max` classes;
/// the class the replica is counted in: `class`, or `other` when the table is full.
pub fn ensure_class(
    s: &mut dyn Sql,
    class: &str,
    other: &str,
    max: i64,
    now: i64,
) -> Result<String> {
    if s.exec(
        "UPDATE classes SET seen = ?2 WHERE name = ?1",
        p![class, now],
    )? > 0
    {
        return Ok(class.to_owned());
    }
    let n = s
        .row("SELECT count(*) FROM classes", p![])?
        .map_or(Ok(0), |r| r.int(0))?;
    let name = if n < max { class } else { other };
    s.exec(
        "INSERT INTO classes(name, seen) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET seen = excluded.seen",
        p![name, now],
    )?;
    Ok(name.to_owned())
}

/// Forgets the classes not seen since `before`; how many.
pub fn expire_classes(s: &mut dyn Sql, before: i64) -> Result<usize> {
    Ok(s.exec("DELETE FROM classes WHERE seen < ?1", p![before])? as usize)
}

/// Up to `max` units that want replicas and that the volunteer holds none of (nor, where a
/// unit asks for distinct prefixes, anybody in its network `prefix`), locked; units another
/// transaction holds are skipped, not waited for.
pub fn candidates(
    s: &mut dyn Sql,
    volunteer: i64,
    max: u32,
    prefix: Option<&str>,
    builtin_only: bool,
) -> Result<Vec<i64>> {
    s.query(
        "SELECT id FROM units WHERE wanted > 0 AND held = 0 AND (?4 = 0 OR package = 0)
         AND NOT EXISTS (
             SELECT 1 FROM replicas r WHERE r.volunteer_id = ?1 AND r.unit_id = units.id)
         AND (CAST(?3 AS TEXT) IS NULL OR distinct_prefixes = 0 OR NOT EXISTS (
             SELECT 1 FROM replicas r WHERE r.unit_id = units.id AND r.prefix = ?3
             AND r.state NOT IN ('error', 'no_reply')))
         ORDER BY id LIMIT ?2 /*SKIP LOCKED*/",
        p![volunteer, max, prefix, builtin_only],
    )?
    .iter()
    .map(|r| r.int(0))
    .collect()
}

/// Stops handing a unit out (its kernel version is retired).
pub fn stop_dispatch(s: &mut dyn Sql, id: i64) -> Result<()> {
    s.exec("UPDATE units SET wanted = 0 WHERE id = ?1", p![id])?;
    Ok(())
}

/// The id range of `batch`'s settled units with a known answer (ringer candidates).
pub fn ringer_range(s: &mut dyn Sql, batch: i64) -> Result<Option<(i64, i64)>> {
    let r = s.one(
        "SELECT min(id), max(id) FROM units
         WHERE batch_id = ?1 AND spot = 'ready' AND state = 'canonical'",
        p![batch],
    )?;
    Ok(r.opt_int(0)?.zip(r.opt_int(1)?))
}

/// The first ringer candidate of `batch` from id `from` that `volunteer` never held.
pub fn ringer_from(s: &mut dyn Sql, batch: i64, from: i64, volunteer: i64) -> Result<Option<i64>> {
    s.row(
        "SELECT id FROM units WHERE batch_id = ?1 AND spot = 'ready' AND state = 'canonical'
         AND id >= ?2 AND NOT EXISTS (
             SELECT 1 FROM replicas r WHERE r.volunteer_id = ?3 AND r.unit_id = units.id)
         ORDER BY id LIMIT 1",
        p![batch, from, volunteer],
    )?
    .map(|r| r.int(0))
    .transpose()
}

pub fn streak(s: &mut dyn Sql, volunteer: i64) -> Result<i64> {
    s.one("SELECT streak FROM volunteers WHERE id = ?1", p![volunteer])?
        .int(0)
}

pub struct NewReplica<'a> {
    pub unit: i64,
    pub volunteer: i64,
    pub now: i64,
    pub deadline: i64,
    pub adapter_json: &'a str,
    pub alone: bool,
    pub prefix: Option<&'a str>,
    pub class: &'a str,
    pub ringer: bool,
}

pub fn insert_replica(s: &mut dyn Sql, r: &NewReplica<'_>) -> Result<i64> {
    s.insert(
        "INSERT INTO replicas(unit_id, volunteer_id, state, sent_at, deadline_at, adapter,
             alone, prefix, class, ringer)
         VALUES (?1, ?2, 'in_progress', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        p![
            r.unit,
            r.volunteer,
            r.now,
            r.deadline,
            r.adapter_json,
            r.alone,
            r.prefix,
            r.class,
            r.ringer
        ],
    )
}

// ---- Reports ----

/// Locks the units of these replicas in ascending id order (the order every transaction that
/// locks several units keeps, so two batches of reports never deadlock each other).
pub fn lock_units_of(s: &mut dyn Sql, replicas: &[i64]) -> Result<()> {
    let mut units = Vec::with_capacity(replicas.len());
    for &r in replicas {
        if let Some(row) = s.row("SELECT unit_id FROM replicas WHERE id = ?1", p![r])? {
            units.push(row.int(0)?);
        }
    }
    units.sort_unstable();
    units.dedup();
    for u in units {
        s.row("SELECT id FROM units WHERE id = ?1 /*FOR UPDATE*/", p![u])?;
    }
    Ok(())
}

/// Checks that an assignment exists and belongs to `volunteer`; returns its unit and deadline.
pub fn owned_replica(s: &mut dyn Sql, volunteer: i64, assignment: i64) -> Result<(i64, i64)> {
    let r = s
        .row(
            "SELECT unit_id, volunteer_id, deadline_at FROM replicas WHERE id = ?1",
            p![assignment],
        )?
        .ok_or(StoreError::NotFound("assignment"))?;
    if r.int(1)? != volunteer {
        return Err(StoreError::Forbidden(format!(
            "assignment {assignment} belongs to another volunteer"
        )));
    }
    Ok((r.int(0)?, r.int(2)?))
}

pub fn record_output(
    s: &mut dyn Sql,
    replica: i64,
    digest: &Digest,
    checkpoints: &[Checkpoint],
    summary: &Value,
    now: i64,
    late: bool,
) -> Result<()> {
    s.exec(
        "UPDATE replicas SET digest = ?2, checkpoints = ?3, summary = ?4, reported_at = ?5,
             late = ?6 WHERE id = ?1",
        p![
            replica,
            digest,
            to_json(checkpoints)?,
            summary.to_string(),
            now,
            late
        ],
    )?;
    Ok(())
}

pub fn record_error(s: &mut dyn Sql, replica: i64, message: &str, now: i64) -> Result<()> {
    s.exec(
        "UPDATE replicas SET error = ?2, reported_at = ?3 WHERE id = ?1",
        p![replica, message, now],
    )?;
    Ok(())
}

pub fn replica_state(s: &mut dyn Sql, id: i64) -> Result<ReplicaState> {
    rstate_of(
        &s.one("SELECT state FROM replicas WHERE id = ?1", p![id])?
            .text(0)?,
    )
}

/// Each assignment's kernel, params and kernel version, checked to belong to `volunteer`.
pub fn assignment_jobs(
    s: &mut dyn Sql,
    volunteer: i64,
    assignments: &[i64],
) -> Result<Vec<Result<(String, Value, u32)>>> {
    let mut out = Vec::with_capacity(assignments.len());
    for &assignment in assignments {
        let row = s.row(
            "SELECT r.volunteer_id, u.kernel, u.params, u.kernel_version FROM replicas r
             JOIN units u ON u.id = r.unit_id WHERE r.id = ?1",
            p![assignment],
        )?;
        out.push(match row {
            None => Err(StoreError::NotFound("assignment")),
            Some(r) if r.int(0)? != volunteer => Err(StoreError::Forbidden(format!(
                "assignment {assignment} belongs to another volunteer"
            ))),
            Some(r) => {
                let params = from_json(r.str(2)?)?;
                Ok((r.text(1)?, params, u32_of(r.int(3)?)))
            }
        });
    }
    Ok(out)
}

// ---- Challenges ----

pub fn insert_challenge(
    s: &mut dyn Sql,
    replica: i64,
    plan: &ChallengePlan,
    output: Option<&Digest>,
    package: bool,
    now: i64,
) -> Result<()> {
    s.exec(
        "INSERT INTO challenges(replica_id, from_step, to_step, state_digest, end_digest,
             output_digest, status, created_at, deadline_at, package)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        p![
            replica,
            plan.from,
            plan.to,
            plan.state_digest.as_ref(),
            &plan.end_digest,
            output,
            // From the initial state the coordinator needs nothing from the volunteer.
            if plan.from == 0 { "ready" } else { "open" },
            now,
            now + crate::decide::CHALLENGE_DEADLINE_S,
            package,
        ],
    )?;
    Ok(())
}

/// A challenge's step, the state digest it expects, and its status.
pub fn challenge(s: &mut dyn Sql, replica: i64) -> Result<Option<(u64, Option<Digest>, String)>> {
    s.row(
        "SELECT from_step, state_digest, status FROM challenges WHERE replica_id = ?1",
        p![replica],
    )?
    .map(|r| Ok((r.count(0)?, digest_of(r.opt_bytes(1)?), r.text(2)?)))
    .transpose()
}

/// Stores a volunteer's answer (base64 state buffers as JSON): ready to verify.
pub fn challenge_answered(s: &mut dyn Sql, replica: i64, state_json: &str) -> Result<()> {
    s.exec(
        "UPDATE challenges SET state = ?2, status = 'ready' WHERE replica_id = ?1",
        p![replica, state_json],
    )?;
    Ok(())
}

/// Closes an open or ready challenge with `status`; whether it was open or ready.
pub fn close_challenge(s: &mut dyn Sql, replica: i64, status: &str) -> Result<bool> {
    Ok(s.exec(
        "UPDATE challenges SET status = ?2, state = NULL
         WHERE replica_id = ?1 AND status IN ('open', 'ready')",
        p![replica, status],
    )? > 0)
}

/// Open challenges past their deadline: (replica, unit, volunteer).
pub fn dodged_challenges(s: &mut dyn Sql, now: i64) -> Result<Vec<(i64, i64, i64)>> {
    s.query(
        "SELECT c.replica_id, r.unit_id, r.volunteer_id
         FROM challenges c JOIN replicas r ON r.id = c.replica_id
         WHERE c.status = 'open' AND c.deadline_at < ?1
         ORDER BY c.deadline_at LIMIT 5000",
        p![now],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.int(1)?, r.int(2)?)))
    .collect()
}

/// Replicas in progress past their deadline: (replica, unit).
pub fn due_replicas(s: &mut dyn Sql, now: i64) -> Result<Vec<(i64, i64)>> {
    s.query(
        "SELECT id, unit_id FROM replicas WHERE state = 'in_progress' AND deadline_at < ?1
         ORDER BY deadline_at LIMIT 5000",
        p![now],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.int(1)?)))
    .collect()
}

/// Claims up to `limit` (`select`: `?1`) unclaimed rows (claimed until at most `?2`, now) until
/// `until` (`update`: `?1` the id, `?2` the time); other transactions' rows are skipped.
fn claim(
    s: &mut dyn Sql,
    select: &'static str,
    update: &'static str,
    (limit, now, until): (usize, i64, i64),
) -> Result<Vec<i64>> {
    let ids = s
        .query(select, p![limit, now])?
        .iter()
        .map(|r| r.int(0))
        .collect::<Result<Vec<i64>>>()?;
    for &id in &ids {
        s.exec(update, p![id, until])?;
    }
    Ok(ids)
}

/// Claims up to `limit` challenges ready to verify that nobody holds, until `until`.
/// `gpu`: the claimer can run packages (a verifier worker); the built-in CPU pool cannot.
pub fn claim_challenges(
    s: &mut dyn Sql,
    limit: usize,
    now: i64,
    until: i64,
    gpu: bool,
) -> Result<Vec<ChallengeJob>> {
    let select = if gpu {
        "SELECT c.replica_id FROM challenges c
         WHERE c.status = 'ready' AND c.claimed_until <= ?2
         ORDER BY c.replica_id LIMIT ?1 /*SKIP LOCKED*/"
    } else {
        "SELECT c.replica_id FROM challenges c
         WHERE c.status = 'ready' AND c.claimed_until <= ?2 AND c.package = 0
         ORDER BY c.replica_id LIMIT ?1 /*SKIP LOCKED*/"
    };
    let ids = claim(
        s,
        select,
        "UPDATE challenges SET claimed_until = ?2 WHERE replica_id = ?1",
        (limit, now, until),
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for replica in ids {
        let r = s.one(
            "SELECT c.replica_id, u.kernel, u.params, c.from_step, c.to_step, c.state,
                    c.end_digest, c.output_digest
             FROM challenges c JOIN replicas r ON r.id = c.replica_id
             JOIN units u ON u.id = r.unit_id WHERE c.replica_id = ?1",
            p![replica],
        )?;
        let state: Vec<String> = match r.opt_text(5)? {
            Some(s) => from_json(&s)?,
            None => Vec::new(),
        };
        use base64::Engine as _;
        let state = state
            .iter()
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| StoreError::Db(format!("challenge state: {e}")))?;
        out.push(ChallengeJob {
            replica_id: r.int(0)?,
            kernel: r.text(1)?,
            params: from_json(r.str(2)?)?,
            from: r.count(3)?,
            to: r.count(4)?,
            state,
            end_digest: digest_of(r.opt_bytes(6)?)
                .ok_or_else(|| StoreError::Db("challenge digest".into()))?,
            output_digest: digest_of(r.opt_bytes(7)?),
        });
    }
    Ok(out)
}

/// A replica's unit and volunteer.
pub fn replica_unit(s: &mut dyn Sql, replica: i64) -> Result<(i64, i64)> {
    let r = s
        .row(
            "SELECT unit_id, volunteer_id FROM replicas WHERE id = ?1",
            p![replica],
        )?
        .ok_or(StoreError::NotFound("assignment"))?;
    Ok((r.int(0)?, r.int(1)?))
}

// ---- Spot-checks ----

/// Claims up to `limit` queued spot-checks that nobody holds, until `until`.
/// `gpu`: the claimer can run packages (a verifier worker); the built-in CPU pool cannot.
pub fn claim_spot_checks(
    s: &mut dyn Sql,
    limit: usize,
    (now, until): (i64, i64),
    running: &HashMap<i64, usize>,
    per_batch: usize,
    gpu: bool,
) -> Result<Vec<SpotJob>> {
    // Each batch's oldest, with the batch's key (0: none); the choice is decide's.
    let candidates = s
        .query(
            "SELECT t.unit_id, t.batch_id, coalesce(b.key_id, 0) FROM (
                 SELECT unit_id, batch_id,
                        ROW_NUMBER() OVER (PARTITION BY batch_id ORDER BY unit_id) AS k
                 FROM spot_queue WHERE claimed_until <= ?2 AND (?3 = 1 OR package = 0)) t
             JOIN batches b ON b.id = t.batch_id
             WHERE t.k <= ?1 ORDER BY t.k, t.unit_id",
            p![limit, now, gpu],
        )?
        .iter()
        .map(|r| Ok((r.int(0)?, r.int(1)?, r.int(2)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut running_keys = HashMap::new();
    for &batch in running.keys() {
        if let Some(r) = s.row(
            "SELECT coalesce(key_id, 0) FROM batches WHERE id = ?1",
            p![batch],
        )? {
            running_keys.insert(batch, r.int(0)?);
        }
    }
    let mut picked =
        crate::decide::pick_spot_checks(&candidates, running, &running_keys, limit, per_batch);
    // Claimed only if still unclaimed (another coordinator may have taken it since), in id
    // order so two coordinators' claims never wait on each other in a cycle.
    picked.sort_unstable();
    let mut out = Vec::with_capacity(picked.len());
    for unit in picked {
        let claimed = s.exec(
            "UPDATE spot_queue SET claimed_until = ?2 WHERE unit_id = ?1 AND claimed_until <= ?3",
            p![unit, until, now],
        )?;
        if claimed == 0 {
            continue;
        }
        let u = s.one(
            "SELECT kernel, params, batch_id FROM units WHERE id = ?1",
            p![unit],
        )?;
        out.push(SpotJob {
            unit_id: unit,
            kernel: u.text(0)?,
            params: from_json(u.str(1)?)?,
            batch_id: u.int(2)?,
        });
    }
    Ok(out)
}

/// Extends the claims on spot-checks still being computed.
pub fn renew_spot_claims(s: &mut dyn Sql, units: &[i64], until: i64) -> Result<()> {
    for &u in units {
        s.exec(
            "UPDATE spot_queue SET claimed_until = ?2 WHERE unit_id = ?1",
            p![u, until],
        )?;
    }
    Ok(())
}

/// Records the coordinator's own answer for a unit and takes it off the queue; whether it
/// was still queued.
pub fn spot_ready(s: &mut dyn Sql, unit: i64, digest: &Digest) -> Result<bool> {
    s.exec(
        "UPDATE units SET spot = 'ready', spot_digest = ?2 WHERE id = ?1",
        p![unit, digest],
    )?;
    Ok(s.exec("DELETE FROM spot_queue WHERE unit_id = ?1", p![unit])? > 0)
}

// ---- Cancelling a batch ----

/// Records that `batch` was cancelled (the first time only).
pub fn cancel_batch(s: &mut dyn Sql, batch: i64, now: i64) -> Result<()> {
    s.exec(
        "UPDATE batches SET cancelled_at = ?2 WHERE id = ?1 AND cancelled_at IS NULL",
        p![batch, now],
    )?;
    Ok(())
}

/// The batch's units not yet settled, in id order (the order units are locked in).
pub fn unsettled_units(s: &mut dyn Sql, batch: i64) -> Result<Vec<i64>> {
    s.query(
        "SELECT id FROM units WHERE batch_id = ?1 AND state <> 'canonical' AND state <> 'failed'
         ORDER BY id",
        p![batch],
    )?
    .iter()
    .map(|r| r.int(0))
    .collect()
}

/// Drops the batch's queued recomputation: spot-checks not yet computed, and challenges not
/// yet judged (marked `cancelled`).
pub fn drop_batch_checks(s: &mut dyn Sql, batch: i64) -> Result<()> {
    s.exec(
        "DELETE FROM spot_queue WHERE unit_id IN (SELECT id FROM units WHERE batch_id = ?1)",
        p![batch],
    )?;
    s.exec(
        "UPDATE challenges SET status = 'cancelled'
         WHERE (status = 'open' OR status = 'ready') AND replica_id IN
               (SELECT r.id FROM replicas r JOIN units u ON u.id = r.unit_id
                WHERE u.batch_id = ?1)",
        p![batch],
    )?;
    Ok(())
}

/// What a volunteer's work allowance is decided from: (valid, errors, replicas in flight).
pub fn volunteer_load(s: &mut dyn Sql, volunteer: i64) -> Result<(u64, u64, u64)> {
    let r = s
        .row(
            "SELECT valid, errors FROM volunteers WHERE id = ?1",
            p![volunteer],
        )?
        .ok_or(StoreError::NotFound("volunteer"))?;
    let in_flight = s
        .one(
            "SELECT count(*) FROM replicas WHERE volunteer_id = ?1 AND state = 'in_progress'",
            p![volunteer],
        )?
        .count(0)?;
    Ok((r.count(0)?, r.count(1)?, in_flight))
}

/// A volunteer's measured speed: work per second over its latest valid replicas (None before
/// it has any with a measurable time).
pub fn volunteer_speed(s: &mut dyn Sql, volunteer: i64) -> Result<Option<f64>> {
    let r = s.one(
        "SELECT CAST(SUM(w) AS DOUBLE PRECISION), CAST(SUM(t) AS BIGINT) FROM
           (SELECT u.work AS w, r.reported_at - r.sent_at AS t
            FROM replicas r JOIN units u ON u.id = r.unit_id
            WHERE r.volunteer_id = ?1 AND r.state = 'valid' AND r.reported_at IS NOT NULL
            ORDER BY r.unit_id DESC LIMIT 20) recent",
        p![volunteer],
    )?;
    let work = match r.0.first() {
        Some(super::sql::V::Null) | None => return Ok(None),
        _ => r.real(0)?,
    };
    let secs = r.opt_int(1)?.unwrap_or(0);
    Ok((secs > 0).then(|| work / secs as f64))
}
