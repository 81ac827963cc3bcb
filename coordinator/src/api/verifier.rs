//! Recomputation at GPU speed: trusted verifier workers (`qg-volunteer --verifier`, with an
//! operator key) take the coordinator's own recomputation jobs, spot-checks of whole units and
//! challenge segments, run them with the one GPU runner, and return what they computed; the
//! coordinator decides, as it does for its built-in CPU pool (`server.rs`). Both claim jobs in
//! the database (so no job is computed twice at once, even with several coordinators); a
//! worker's job is also held here under [`Leases`], with what its result is checked against.
//! A worker that vanishes loses its lease when it runs out, and the job goes to another (or to
//! the pool).
//!
//! An operator with a GPU on the coordinator's machine runs a worker there; `spot_workers = 0`
//! leaves all recomputation to workers.

use super::{ApiError, Body, Operator, Shared, blocking, decode_output, now};
use crate::store::{ChallengeJob, SpotJob};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use protocol::Digest;
use protocol::api::{VerifierWork, VerifierWorkRequest, VerifyJob, VerifyKind, VerifyResult};
use std::collections::HashMap;
use std::sync::Mutex;

/// A job as leased to a verifier worker (what its result is checked against).
#[derive(Debug, Clone)]
pub enum Leased {
    Spot(SpotJob),
    Challenge(ChallengeJob),
}

#[derive(Debug, Clone)]
struct Lease {
    /// Unix seconds.
    until: i64,
    /// The operator key of the worker that took it: only it may answer.
    holder: i64,
    job: Leased,
}

/// Recomputation jobs in progress, by key ([`spot_key`], [`challenge_key`]), and the
/// verifiers' records.
#[derive(Debug, Default)]
pub struct Leases(Mutex<HashMap<String, Lease>>, Mutex<Rechecks>);

/// Verifier answers held back for a second opinion, and each verifier key's record: a trusted
/// part earns its trust too. Kept in memory: after a restart a held-back spot-check is simply
/// computed again by whoever claims it.
#[derive(Debug, Default)]
struct Rechecks {
    /// Unit → the key whose answer contradicted its quorum, and that answer.
    held: HashMap<i64, (i64, Digest)>,
    /// Key → its answers confirmed by a second opinion, and those found wrong.
    records: HashMap<i64, VerifierRecord>,
}

/// A verifier key's record of second opinions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifierRecord {
    pub confirmed: u64,
    pub wrong: u64,
}

pub fn spot_key(unit: i64) -> String {
    format!("spot:{unit}")
}

pub fn challenge_key(replica: i64) -> String {
    format!("challenge:{replica}")
}

impl Leases {
    /// Takes `key` until `until` unless someone holds it; whether it was taken. Leases that
    /// ran out (a worker that vanished) are dropped here.
    pub fn take(&self, key: &str, holder: i64, until: i64, job: Leased, now: i64) -> bool {
        let mut m = crate::lock(&self.0);
        m.retain(|_, l| l.until > now);
        if m.contains_key(key) {
            return false;
        }
        m.insert(key.to_owned(), Lease { until, holder, job });
        true
    }

    /// Whether the verifier with key `holder` was found wrong before.
    fn was_wrong(&self, holder: i64) -> bool {
        let r = crate::lock(&self.1);
        r.records.get(&holder).is_some_and(|v| v.wrong > 0)
    }

    /// Whether `holder` answered `unit` with an answer held back: it does not get it again.
    fn held_from(&self, unit: i64, holder: i64) -> bool {
        let r = crate::lock(&self.1);
        r.held.get(&unit).is_some_and(|h| h.0 == holder)
    }

    /// How many answers of `holder` wait for a second opinion.
    fn held_from_count(&self, holder: i64) -> usize {
        let r = crate::lock(&self.1);
        r.held.values().filter(|h| h.0 == holder).count()
    }

    /// Holds back `holder`'s `answer` for `unit` until a second opinion comes.
    fn hold(&self, unit: i64, holder: i64, answer: Digest) {
        let mut r = crate::lock(&self.1);
        r.held.insert(unit, (holder, answer));
    }

    /// The answer held back for `unit`, if any (a second verifier that agrees with it makes
    /// two independent verifiers against the volunteers).
    fn held(&self, unit: i64) -> Option<(i64, Digest)> {
        let r = crate::lock(&self.1);
        r.held.get(&unit).copied()
    }

    /// A spot-check's answer for `unit` was taken (from the CPU pool or a verifier): the
    /// verifier held back on it is confirmed or found wrong.
    pub fn settled(&self, unit: i64, answer: Digest) {
        let mut r = crate::lock(&self.1);
        if let Some((holder, held)) = r.held.remove(&unit) {
            let rec = r.records.entry(holder).or_default();
            if held == answer {
                rec.confirmed += 1;
            } else {
                rec.wrong += 1;
                tracing::warn!(unit, verifier_key = holder, "a verifier's answer was wrong");
            }
        }
    }

    /// Gives `key` back.
    pub fn release(&self, key: &str) {
        let mut m = crate::lock(&self.0);
        m.remove(key);
    }

    /// The job leased as `key` to the worker with operator key `holder`, if its lease still
    /// runs (another key's lease is as good as none).
    fn leased(&self, key: &str, holder: i64, now: i64) -> Option<Leased> {
        let m = crate::lock(&self.0);
        m.get(key)
            .filter(|l| l.until > now && l.holder == holder)
            .map(|l| l.job.clone())
    }
}

/// `POST /api/v1/verifier/work`: up to `max_jobs` recomputation jobs, challenge segments
/// first (a volunteer's credibility waits on them), then spot-checks.
pub async fn work(
    State(s): State<Shared>,
    Operator(worker): Operator,
    Body(req): Body<VerifierWorkRequest>,
) -> Result<Json<VerifierWork>, ApiError> {
    if !(1..=16).contains(&req.max_jobs) {
        return Err(ApiError::field(
            "max_jobs",
            format!("must be 1..=16, got {}", req.max_jobs),
        ));
    }
    super::volunteers::check_adapter(&req.adapter)?;
    let want = req.max_jobs as usize;
    let t = now();
    let hold = s.verifier_lease_s;
    let store = s.store.clone();
    // Claimed in the database for the lease's length: no other worker, pool or coordinator
    // gets them meanwhile.
    // Units whose answer from this key waits for a second opinion come back in its claims
    // (they are the oldest): claimed over and given back, so they never crowd out its work.
    let extra = s.leases.held_from_count(worker).min(16);
    let (challenges, spots, runs) = blocking(move || {
        // Packages' units are sampled for recomputation while verifiers come.
        store.note_verifier(t)?;
        let challenges = store.claim_challenges(want, t, hold, true)?;
        let spots = match want - challenges.len() {
            0 => Vec::new(),
            n => store.claim_spot_checks_for(
                n + extra,
                t,
                hold,
                &Default::default(),
                usize::MAX,
                true,
            )?,
        };
        // A package's plan for each (the worker fetches its files by hash).
        let mut runs = HashMap::new();
        for (k, p) in challenges
            .iter()
            .map(|c| (&c.kernel, &c.params))
            .chain(spots.iter().map(|j| (&j.kernel, &j.params)))
        {
            if let Some(run) = store.package_run_of(k, p)? {
                runs.insert((k.clone(), p.to_string()), run);
            }
        }
        Ok((challenges, spots, runs))
    })
    .await?;
    let run_of = |k: &String, p: &serde_json::Value| runs.get(&(k.clone(), p.to_string())).cloned();
    let until = t + s.verifier_lease_s;
    let mut jobs = Vec::new();
    for c in challenges {
        if jobs.len() == want {
            break;
        }
        let key = challenge_key(c.replica_id);
        if s.leases
            .take(&key, worker, until, Leased::Challenge(c.clone()), t)
        {
            jobs.push(VerifyJob {
                package: run_of(&c.kernel, &c.params),
                job_id: key,
                kind: VerifyKind::Challenge,
                kernel_version: shaders::kernel_version(&c.kernel),
                kernel: c.kernel,
                params: c.params,
                from: c.from,
                to: c.to,
                state: c
                    .state
                    .iter()
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                    .collect(),
                lease_until: until,
            });
        }
    }
    let mut given_back = Vec::new();
    for j in spots {
        if jobs.len() == want || s.leases.held_from(j.unit_id, worker) {
            // Over what was asked, or its answer here waits for a second opinion (from
            // someone else): given back.
            given_back.push(j.unit_id);
            continue;
        }
        let key = spot_key(j.unit_id);
        if s.leases
            .take(&key, worker, until, Leased::Spot(j.clone()), t)
        {
            jobs.push(VerifyJob {
                package: run_of(&j.kernel, &j.params),
                job_id: key,
                kind: VerifyKind::Spot,
                kernel_version: shaders::kernel_version(&j.kernel),
                kernel: j.kernel,
                params: j.params,
                from: 0,
                to: 0,
                state: Vec::new(),
                lease_until: until,
            });
        }
    }
    if !given_back.is_empty() {
        let store = s.store.clone();
        blocking(move || store.renew_spot_claims(&given_back, t, 0)).await?;
        s.spot_wake.notify_one();
    }
    let retry_after_s = if jobs.is_empty() { 5 } else { 0 };
    Ok(Json(VerifierWork {
        jobs,
        retry_after_s,
    }))
}

/// `POST /api/v1/verifier/results`: a worker's recomputation. A spot-check's output becomes the
/// coordinator's answer for the unit; a challenge's digests are judged against the
/// volunteer's report. 404 for a job not leased to this worker's key (or whose lease ran out):
/// ask for work again.
pub async fn results(
    State(s): State<Shared>,
    Operator(worker): Operator,
    Body(r): Body<VerifyResult>,
) -> Result<StatusCode, ApiError> {
    if r.adapter
        .as_ref()
        .is_some_and(|a| a.chars().count() > super::volunteers::MAX_ADAPTER_FIELD * 4)
    {
        return Err(ApiError::field(
            "adapter",
            format!(
                "at most {} characters",
                super::volunteers::MAX_ADAPTER_FIELD * 4
            ),
        ));
    }
    let t = now();
    let leased = s.leases.leased(&r.job_id, worker, t).ok_or_else(|| {
        ApiError::field(
            "job_id",
            format!(
                "{} is not a job leased to this key now: ask for work again",
                r.job_id
            ),
        )
        .with_status(StatusCode::NOT_FOUND)
    })?;
    let (kernel, params) = match &leased {
        Leased::Spot(j) => (&j.kernel, &j.params),
        Leased::Challenge(c) => (&c.kernel, &c.params),
    };
    if r.kernel_version != shaders::kernel_version(kernel) {
        return Err(ApiError::field(
            "kernel_version",
            format!(
                "the worker ran {kernel} version {}, this coordinator runs version {}",
                r.kernel_version,
                shaders::kernel_version(kernel)
            ),
        )
        .with_status(StatusCode::CONFLICT));
    }
    let store = s.store.clone();
    let (k, p) = (kernel.clone(), params.clone());
    let lookup = store.clone();
    let job = blocking(move || lookup.job(&k, &p)).await?.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stored params: {e}"),
        )
    })?;
    match leased {
        Leased::Spot(j) => {
            let output = decode_output(&job, r.output.as_deref(), "missing")?;
            let digest = Digest::of_data(&output);
            let unit = j.unit_id;
            // Taken at once unless it contradicts a credible quorum (or this verifier was
            // wrong before); then it waits for the CPU pool or another verifier, and two
            // verifiers of different keys that agree are taken.
            let seconded = s
                .leases
                .held(unit)
                .is_some_and(|(k, d)| k != worker && d == digest);
            let was_wrong = s.leases.was_wrong(worker);
            let stored = blocking(move || {
                store.spot_check_done_unless(unit, &digest, &output, t, |reported| {
                    !seconded && crate::decide::verifier_needs_recheck(reported, digest, was_wrong)
                })
            })
            .await?;
            if stored {
                s.leases.settled(unit, digest);
                tracing::info!(unit, %digest, adapter = ?r.adapter, "spot-check computed by a verifier");
            } else {
                s.leases.hold(unit, worker, digest);
                let store = s.store.clone();
                blocking(move || store.renew_spot_claims(&[unit], t, 0)).await?;
                tracing::warn!(unit, %digest, verifier_key = worker, "a verifier contradicts the volunteers' quorum: computed again elsewhere");
            }
        }
        Leased::Challenge(c) => {
            let state_digest = r
                .state_digest
                .ok_or_else(|| ApiError::field("state_digest", "missing"))?;
            let output = match c.output_digest {
                Some(_) => Some(Digest::of_data(&decode_output(
                    &job,
                    r.output.as_deref(),
                    "missing (the segment ends at the last step)",
                )?)),
                None => None,
            };
            let passed = c.judge(state_digest, output);
            let replica = c.replica_id;
            blocking(move || store.challenge_done(replica, passed, t)).await?;
            tracing::info!(replica, passed, adapter = ?r.adapter, "challenge judged from a verifier");
        }
    }
    s.leases.release(&r.job_id);
    s.spot_wake.notify_one();
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(unit: i64) -> Leased {
        Leased::Spot(SpotJob {
            unit_id: unit,
            batch_id: 1,
            kernel: "ising2d".into(),
            params: serde_json::json!({}),
        })
    }

    #[test]
    fn a_lease_is_exclusive_until_it_runs_out_then_dropped() {
        let leases = Leases::default();
        assert!(leases.take("spot:1", 7, 10, job(1), 0));
        assert!(
            !leases.take("spot:1", 8, 20, job(1), 5),
            "held by the first worker"
        );
        assert!(leases.leased("spot:1", 7, 5).is_some());
        assert!(
            leases.leased("spot:1", 8, 5).is_none(),
            "another key cannot answer it"
        );
        assert!(leases.leased("spot:1", 7, 10).is_none(), "ran out");
        // A vanished worker's lease goes when another job is taken, and its job is free again.
        assert!(leases.take("spot:2", 7, 30, job(2), 11));
        assert_eq!(leases.0.lock().unwrap().len(), 1);
        assert!(leases.take("spot:1", 8, 40, job(1), 12));
        leases.release("spot:1");
        assert!(leases.leased("spot:1", 8, 13).is_none());
    }
}
