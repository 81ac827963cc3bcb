//! The read views: what the API, the pages and `qg` show. Plain reads, written once for both
//! backends.

use super::queries::{anon, anon_salt, digest_of, from_json, rstate_of, spot_str, state_of, unit};
use super::sql::{Sql, p};
use super::*;
use crate::credibility;
use crate::lifecycle::Spot;
use crate::lifecycle::{Policy, ReplicaState, UnitState};
use protocol::first_divergence;

/// Counts by state: every state named, 0 where there are none.
fn by_state(
    names: impl IntoIterator<Item = &'static str>,
    rows: Vec<super::sql::Row>,
) -> Result<BTreeMap<String, u64>> {
    let mut counts: BTreeMap<String, u64> = names.into_iter().map(|s| (s.to_owned(), 0)).collect();
    for r in rows {
        counts.insert(r.text(0)?, r.count(1)?);
    }
    Ok(counts)
}

/// Challenges by status: open, ready, passed, failed, expired.
pub fn challenge_counts(s: &mut dyn Sql) -> Result<BTreeMap<String, u64>> {
    let rows = s.query(
        "SELECT status, count(*) FROM challenges GROUP BY status",
        p![],
    )?;
    by_state(["open", "ready", "passed", "failed", "expired"], rows)
}

/// The adapter classes doubted now ([`credibility::class_doubt`] > 0), counted in SQL.
pub fn doubted_classes(s: &mut dyn Sql) -> Result<u64> {
    let f = Policy::default().saboteur_fraction;
    s.row(
        "SELECT count(*) FROM classes WHERE failed >= 3
         AND failed * (1.0 - CAST(?1 AS DOUBLE PRECISION)) > CAST(?1 AS DOUBLE PRECISION) * passed",
        p![f],
    )?
    .map_or(Ok(0), |r| r.count(0))
}

/// The first `limit` adapter classes with their checks and doubt, the most failed checks
/// first.
pub fn class_rows(s: &mut dyn Sql, limit: i64) -> Result<Vec<ClassRow>> {
    let f = Policy::default().saboteur_fraction;
    s.query(
        "SELECT name, passed, failed FROM classes ORDER BY failed DESC, passed DESC, name
         LIMIT ?1",
        p![limit],
    )?
    .iter()
    .map(|r| {
        let (passed, failed) = (r.count(1)?, r.count(2)?);
        Ok(ClassRow {
            class: r.text(0)?,
            passed,
            failed,
            doubt: credibility::class_doubt(passed, failed, f),
        })
    })
    .collect()
}

pub fn check_viewer(s: &mut dyn Sql, batch: i64, viewer: Option<i64>) -> Result<()> {
    let owner = s
        .row("SELECT key_id FROM batches WHERE id = ?1", p![batch])?
        .map(|r| r.opt_int(0))
        .transpose()?;
    match (owner, viewer) {
        (None, _) => Err(StoreError::NotFound("batch")),
        (Some(_), None) => Ok(()),
        // A scientist sees only their own batches; others' look absent.
        (Some(o), Some(v)) if o == Some(v) => Ok(()),
        _ => Err(StoreError::NotFound("batch")),
    }
}

pub fn batch_status(s: &mut dyn Sql, batch: i64) -> Result<BatchStatus> {
    let r = s
        .row(
            "SELECT name, kernel, policy, spot_rate, units, created_at, axes, kernel_version,
                    cancelled_at, description
             FROM batches WHERE id = ?1",
            p![batch],
        )?
        .ok_or(StoreError::NotFound("batch"))?;
    let rows = s.query(
        "SELECT state, count(*) FROM units WHERE batch_id = ?1 GROUP BY state",
        p![batch],
    )?;
    let by_state = by_state(UnitState::ALL.iter().map(|s| s.as_str()), rows)?;
    let units = r.count(4)?;
    let terminal = by_state["canonical"] + by_state["failed"];
    let w = s
        .row(
            "SELECT count(*), coalesce(sum(work), 0), min(done_at), max(done_at) FROM units
             WHERE batch_id = ?1 AND done_at >= (SELECT max(done_at) FROM units
                                                  WHERE batch_id = ?1) - ?2",
            p![batch, crate::decide::PACE_WINDOW_S],
        )?
        .ok_or(StoreError::NotFound("batch"))?;
    let pace = match (w.opt_int(2)?, w.opt_int(3)?) {
        (Some(from), Some(last)) => crate::decide::pace(
            r.int(5)?,
            w.count(0)?,
            w.real(1)?,
            from,
            last,
            units.saturating_sub(terminal),
        ),
        _ => None,
    };
    let kernel = r.text(1)?;
    let kernel_version = r.int(7)?.clamp(0, u32::MAX.into()) as u32;
    let package = match protocol::package::package_hash(&kernel) {
        Some(h) => super::packages::get(s, &h)?.map(|p| p.status()),
        None => None,
    };
    Ok(BatchStatus {
        package,
        batch_id: batch,
        name: r.text(0)?,
        description: r.opt_text(9)?,
        retired: kernel_version != shaders::kernel_version(&kernel),
        kernel,
        kernel_version,
        created_at: r.int(5)?,
        units,
        done: terminal == units,
        by_state,
        policy: from_json(r.str(2)?)?,
        spot_check_rate: r.real(3)?,
        axes: from_json(r.str(6)?)?,
        cancelled_at: r.opt_int(8)?,
        pace,
    })
}

/// The viewer's batches (all for an operator), newest first.
pub fn list_batches(s: &mut dyn Sql, viewer: Option<i64>) -> Result<Vec<BatchStatus>> {
    let ids = s.query(
        "SELECT id FROM batches WHERE CAST(?1 AS BIGINT) IS NULL OR key_id = ?1
         ORDER BY id DESC LIMIT 200",
        p![viewer],
    )?;
    ids.iter().map(|r| batch_status(s, r.int(0)?)).collect()
}

pub fn batch_results(s: &mut dyn Sql, batch: i64) -> Result<Vec<UnitResult>> {
    s.query(
        "SELECT id, params, state, canonical_digest, summary, fail_reason,
                (SELECT MAX(idx) FROM log_entries e WHERE e.unit_id = units.id)
         FROM units WHERE batch_id = ?1 ORDER BY id",
        p![batch],
    )?
    .iter()
    .map(|r| {
        Ok(UnitResult {
            unit_id: r.int(0)?,
            params: from_json(r.str(1)?)?,
            state: state_of(r.str(2)?)?,
            digest: digest_of(r.opt_bytes(3)?),
            summary: r.opt_text(4)?.and_then(|s| serde_json::from_str(&s).ok()),
            fail_reason: r.opt_text(5)?,
            log_index: r.opt_int(6)?.map(|i| i.max(0) as u64),
        })
    })
    .collect()
}

pub fn unit_provenance(s: &mut dyn Sql, id: i64, viewer: Option<i64>) -> Result<UnitProvenance> {
    let row = unit(s, id)?;
    // Another tenant's unit looks exactly like one that does not exist.
    check_viewer(s, row.batch_id, viewer).map_err(|e| match e {
        StoreError::NotFound(_) => StoreError::NotFound("unit"),
        e => e,
    })?;
    let salt = anon_salt(s)?;
    let rows = s.query(
        "SELECT r.id, r.volunteer_id, r.state, r.digest, r.checkpoints, r.adapter, r.sent_at,
                r.reported_at, r.late, r.error, r.ringer,
                (SELECT status || ' ' || from_step || '..' || to_step FROM challenges c
                 WHERE c.replica_id = r.id)
         FROM replicas r WHERE r.unit_id = ?1 ORDER BY r.id",
        p![id],
    )?;
    let parse_cps = |s: Option<String>| -> Vec<Checkpoint> {
        s.and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    };
    let mut canonical_cps = Vec::new();
    for r in &rows {
        if Some(r.int(0)?) == row.unit.canonical {
            canonical_cps = parse_cps(r.opt_text(4)?);
        }
    }
    let mut replicas = Vec::new();
    for r in &rows {
        let digest = digest_of(r.opt_bytes(3)?);
        let checkpoints = parse_cps(r.opt_text(4)?);
        let diverged_at_step = match (digest, row.canonical_digest) {
            (Some(d), Some(c)) if d != c => first_divergence(&checkpoints, &canonical_cps),
            _ => None,
        };
        replicas.push(ReplicaProvenance {
            replica_id: r.int(0)?,
            volunteer: anon(&salt, r.int(1)?),
            state: rstate_of(r.str(2)?)?,
            digest,
            checkpoints,
            adapter: r.opt_text(5)?.and_then(|a| serde_json::from_str(&a).ok()),
            sent_at: r.int(6)?,
            reported_at: r.opt_int(7)?,
            late: r.flag(8)?,
            error: r.opt_text(9)?,
            diverged_at_step,
            ringer: r.flag(10)?,
            challenge: r.opt_text(11)?,
        });
    }
    let params: Value = from_json(&row.params)?;
    let passed = match (row.unit.spot, row.spot_digest, row.canonical_digest) {
        (Spot::Ready, Some(s), Some(c)) => Some(
            s == c
                || replicas
                    .iter()
                    .any(|r| r.digest == Some(c) && r.state == ReplicaState::Valid),
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
        summary: row
            .summary
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok()),
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
}

fn count(s: &mut dyn Sql, sql: &'static str) -> Result<u64> {
    s.one(sql, p![])?.count(0)
}

pub fn status(s: &mut dyn Sql) -> Result<Status> {
    let rows = s.query("SELECT state, count(*) FROM units GROUP BY state", p![])?;
    let units = by_state(UnitState::ALL.iter().map(|s| s.as_str()), rows)?;
    let rows = s.query("SELECT state, count(*) FROM replicas GROUP BY state", p![])?;
    let replicas = by_state(ReplicaState::ALL.iter().map(|s| s.as_str()), rows)?;
    Ok(Status {
        units,
        replicas,
        volunteers: count(s, "SELECT count(*) FROM volunteers")?,
        batches: count(s, "SELECT count(*) FROM batches")?,
        blacklisted: count(s, "SELECT count(*) FROM volunteers WHERE blacklisted = 1")?,
        ringers: count(s, "SELECT count(*) FROM replicas WHERE ringer = 1")?,
        doubted_classes: doubted_classes(s)?,
        challenges: challenge_counts(s)?,
    })
}

pub fn unit_count(s: &mut dyn Sql) -> Result<u64> {
    count(s, "SELECT count(*) FROM units")
}

/// Units not yet settled (neither canonical nor failed).
pub fn open_units(s: &mut dyn Sql) -> Result<u64> {
    count(
        s,
        "SELECT count(*) FROM units
         WHERE state IN ('unsent', 'in_progress', 'needs_validation', 'inconclusive')",
    )
}

/// Spot-checks queued (claimed or not).
pub fn queued_spot_checks(s: &mut dyn Sql) -> Result<u64> {
    count(s, "SELECT count(*) FROM spot_queue")
}

pub fn ringers_issued(s: &mut dyn Sql) -> Result<u64> {
    count(s, "SELECT count(*) FROM replicas WHERE ringer = 1")
}

pub fn blacklisted_volunteers(s: &mut dyn Sql) -> Result<std::collections::HashSet<i64>> {
    s.query("SELECT id FROM volunteers WHERE blacklisted = 1", p![])?
        .iter()
        .map(|r| r.int(0))
        .collect()
}

pub fn dashboard(
    s: &mut dyn Sql,
    status: Status,
    witnesses: &[String],
    now: i64,
) -> Result<Dashboard> {
    let salt = anon_salt(s)?;
    let f = Policy::default().saboteur_fraction;
    let hosts = s
        .query(
            "SELECT id, nickname, valid, invalid, errors, spot_failed, last_seen, blacklisted,
                    checks
             FROM volunteers ORDER BY last_seen DESC LIMIT 100",
            p![],
        )?
        .iter()
        .map(|r| {
            let (valid, invalid, errors) = (r.count(2)?, r.count(3)?, r.count(4)?);
            let judged = valid + invalid + errors;
            let checks = r.count(8)?;
            Ok(HostRow {
                volunteer: anon(&salt, r.int(0)?),
                nickname: r.opt_text(1)?,
                valid,
                invalid,
                errors,
                spot_failed: r.count(5)?,
                reliability: (judged > 0).then(|| valid as f64 / judged as f64),
                checks,
                credibility: 1.0 - credibility::volunteer_doubt(checks, f),
                last_seen: r.int(6)?,
                blacklisted: r.flag(7)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let problems = s
        .query(
            "SELECT id, batch_id, state, fail_reason FROM units
             WHERE state IN ('inconclusive', 'failed') ORDER BY id DESC LIMIT 50",
            p![],
        )?
        .iter()
        .map(|r| {
            let state = r.text(2)?;
            Ok(ProblemUnit {
                unit_id: r.int(0)?,
                batch_id: r.int(1)?,
                state: state_of(&state)?,
                reason: r.opt_text(3)?.or_else(|| {
                    (state == "inconclusive")
                        .then(|| "replicas disagree; another one was issued".into())
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let spot = count(
        s,
        "SELECT CAST(coalesce(sum(spot_failed), 0) AS BIGINT) FROM volunteers",
    )?;
    let valid = status.replicas["valid"] as f64;
    let invalid = status.replicas["invalid"] as f64;
    let classes = class_rows(s, 50)?;
    let log_size = super::log::latest_checkpoint(s)?.map_or(0, |c| c.0);
    let witnesses = witnesses
        .iter()
        .map(|w| {
            let head = super::log::witness_head(s, w)?;
            Ok(protocol::status::WitnessRow {
                name: w.clone(),
                size: head.map(|h| h.0),
                cosigned_at: head.map(|h| h.1),
                url: None,
                error: None,
                failing_since: None,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Dashboard {
        log_size,
        witnesses,
        classes,
        agreement_rate: (valid + invalid > 0.0).then(|| valid / (valid + invalid)),
        spot_check_failures: spot,
        hosts,
        problems,
        status,
        at: now,
    })
}

pub fn volunteer_stats(s: &mut dyn Sql, volunteer: i64) -> Result<VolunteerStats> {
    let r = s
        .row(
            "SELECT nickname, valid, invalid, errors, credit FROM volunteers WHERE id = ?1",
            p![volunteer],
        )?
        .ok_or(StoreError::NotFound("volunteer"))?;
    let credit = r.real(4)?;
    let in_progress = s
        .one(
            "SELECT count(*) FROM replicas WHERE volunteer_id = ?1 AND state = 'in_progress'",
            p![volunteer],
        )?
        .count(0)?;
    let ahead = s
        .one(
            "SELECT count(*) FROM volunteers WHERE credit > ?1 AND blacklisted = 0",
            p![credit],
        )?
        .count(0)?;
    // Newest units first: the (volunteer_id, unit_id) index read backwards, never a sort of
    // all of a volunteer's replicas.
    let recent = s
        .query(
            "SELECT r.unit_id, u.batch_id, u.kernel, r.state, r.reported_at,
                    CASE WHEN r.state = 'valid' AND u.state = 'canonical'
                         THEN (SELECT MAX(idx) FROM log_entries e WHERE e.unit_id = r.unit_id)
                    END
             FROM replicas r JOIN units u ON u.id = r.unit_id
             WHERE r.volunteer_id = ?1 AND r.reported_at IS NOT NULL
             ORDER BY r.unit_id DESC LIMIT 10",
            p![volunteer],
        )?
        .iter()
        .map(|x| {
            Ok(RecentResult {
                unit_id: x.int(0)?,
                batch_id: x.int(1)?,
                kernel: x.text(2)?,
                state: rstate_of(x.str(3)?)?,
                reported_at: x.opt_int(4)?,
                log_index: x.opt_int(5)?.map(|i| i.max(0) as u64),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(VolunteerStats {
        volunteer_id: volunteer,
        nickname: r.opt_text(0)?,
        valid: r.count(1)?,
        invalid: r.count(2)?,
        errors: r.count(3)?,
        in_progress,
        credit,
        rank: ahead + 1,
        anon_id: anon(&anon_salt(s)?, volunteer),
        recent,
    })
}

pub fn leaderboard(s: &mut dyn Sql, limit: usize) -> Result<Vec<LeaderboardRow>> {
    let salt = anon_salt(s)?;
    s.query(
        "SELECT id, nickname, credit, valid FROM volunteers
         WHERE credit > 0 AND blacklisted = 0
         ORDER BY credit DESC, id LIMIT ?1",
        p![limit],
    )?
    .iter()
    .enumerate()
    .map(|(i, r)| {
        let name = match r.opt_text(1)? {
            Some(n) => n,
            None => anon(&salt, r.int(0)?),
        };
        Ok(LeaderboardRow {
            rank: i as u64 + 1,
            name,
            credit: r.real(2)?,
            valid: r.count(3)?,
        })
    })
    .collect()
}
