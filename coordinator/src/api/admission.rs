//! Admission: a scientist's batch (or spec) checked, field by field, before anything is
//! stored.

use crate::lifecycle::{Policy, Replication};
use crate::store::{NewBatch, NewUnit};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::api::*;
use rand::Rng;
use serde_json::{Value, json};
use shaders::Job;

use super::*;

/// Applies a batch's overrides to the default policy, naming a bad field.
pub fn policy_from(spec: &PolicySpec, default_spot: f64) -> Result<(Policy, f64), ApiError> {
    let d = Policy::default();
    let mut p = Policy {
        min_quorum: spec.min_quorum.unwrap_or(d.min_quorum),
        target_results: spec.target_results.unwrap_or(d.target_results),
        max_error_results: spec.max_error_results.unwrap_or(d.max_error_results),
        max_total_results: spec.max_total_results.unwrap_or(d.max_total_results),
        deadline_s: spec.deadline_s.unwrap_or(d.deadline_s),
        replication: match spec.replication.as_deref() {
            None => d.replication,
            Some(r) => Replication::parse(r).ok_or_else(|| {
                ApiError::field(
                    "policy.replication",
                    format!("must be quorum, adaptive or credibility, got {r:?}"),
                )
            })?,
        },
        target_error: spec.target_error.unwrap_or(d.target_error),
        saboteur_fraction: spec.saboteur_fraction.unwrap_or(d.saboteur_fraction),
        ringer_rate: spec.ringer_rate.unwrap_or(d.ringer_rate),
        distinct_prefixes: spec.distinct_prefixes.unwrap_or(d.distinct_prefixes),
        challenge_rate: spec.challenge_rate.unwrap_or(d.challenge_rate),
    };
    // Raising the quorum alone raises what must be issued up front and may be issued at all.
    if spec.target_results.is_none() {
        p.target_results = p.target_results.max(p.min_quorum);
    }
    if spec.max_total_results.is_none() {
        p.max_total_results = p.max_total_results.max(p.target_results * 3);
    }
    p.validate()
        .map_err(|e| ApiError::field(&format!("policy.{}", e.field), e.to_string()))?;
    let rate = spec.spot_check_rate.unwrap_or(default_spot);
    if !(0.0..=1.0).contains(&rate) {
        return Err(ApiError::field(
            "policy.spot_check_rate",
            format!("must be between 0 and 1, got {rate}"),
        ));
    }
    Ok((p, rate))
}

/// What admission allows: the coordinator's side of a batch's terms.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub max_units: usize,
    /// The spot-check rate of a batch that names none.
    pub default_spot: f64,
    /// The most work (the kernel's estimate) the coordinator recomputes for one unit; a unit
    /// above it is verified by quorum (and challenges, where the batch asks for them) instead.
    pub max_recompute_work: u64,
    /// The largest output a report can carry (base64 in a body of at most the coordinator's
    /// body limit): a unit whose output is larger could never be reported.
    pub max_output_bytes: u64,
}

impl Admission {
    /// The largest output a report of at most `max_body_bytes` carries: base64 makes 3 bytes
    /// 4, and 64 KiB is left for the rest of the report (checkpoints, summary).
    pub fn output_limit(max_body_bytes: usize) -> u64 {
        (max_body_bytes as u64).saturating_sub(64 << 10) / 4 * 3
    }
}

/// See [`Admission::max_recompute_work`]: about half a minute of the CPU reference on one core.
pub const DEFAULT_MAX_RECOMPUTE_WORK: u64 = 5_000_000_000;

impl Default for Admission {
    fn default() -> Self {
        Self {
            max_units: usize::MAX,
            default_spot: 0.05,
            max_recompute_work: DEFAULT_MAX_RECOMPUTE_WORK,
            max_output_bytes: u64::MAX,
        }
    }
}

/// How a batch's units will be verified, said when it is submitted (or, `expected`, when its
/// spec is checked and the sample is not drawn yet). `quorum_only`: a kernel package's batch
/// while no verifier worker is there to recompute it.
pub fn verification_note(
    units: u64,
    spot_checks: u64,
    too_costly: u64,
    policy: &Policy,
    rate: f64,
    expected: bool,
    quorum_only: bool,
) -> String {
    if quorum_only {
        return format!(
            "verified by quorum only: a kernel package has no CPU reference, and no verifier worker \
             (qg-volunteer --verifier, on a GPU) has asked this coordinator for work in the last \
             {} minutes to recompute its units",
            crate::engine::VERIFIER_RECENT_S / 60
        );
    }
    let sampled = if expected {
        "(expected) sampled"
    } else {
        "sampled"
    };
    let mut s = format!(
        "{spot_checks} of {units} units {sampled} for recomputation by the coordinator (rate {rate})"
    );
    if too_costly > 0 {
        s.push_str(&format!(
            "; {too_costly} units exceed the recomputation cap and are verified by {}",
            if policy.challenge_rate > 0.0 {
                "quorum and challenges"
            } else {
                "quorum alone"
            }
        ));
    }
    s
}

/// Validates every unit's params (naming `units[i].field`) and samples spot-checks among the
/// units cheap enough to recompute (a built-in kernel's batch).
pub fn new_batch(
    req: BatchRequest,
    key_id: Option<i64>,
    terms: &Admission,
) -> Result<NewBatch, ApiError> {
    new_batch_of(req, key_id, terms, None, false)
}

/// [`new_batch`] of a built-in kernel or of `package` (the batch's kernel names it): its units
/// are sampled for recomputation only where `verifiers` (workers that recompute on a GPU) are
/// there.
pub fn new_batch_of(
    req: BatchRequest,
    key_id: Option<i64>,
    terms: &Admission,
    package: Option<&std::sync::Arc<shaders::package::Package>>,
    verifiers: bool,
) -> Result<NewBatch, ApiError> {
    let (max_units, default_spot) = (terms.max_units, terms.default_spot);
    if req.units.is_empty() {
        return Err(ApiError::field("units", "at least one unit"));
    }
    if req.units.len() > max_units {
        return Err(ApiError::field(
            "units",
            format!(
                "at most {max_units} units per batch, got {}",
                req.units.len()
            ),
        ));
    }
    let (policy, rate) = policy_from(&req.policy, default_spot)?;
    if req.axes.len() > 16 {
        return Err(ApiError::field("axes", "at most 16 swept parameters"));
    }
    for (i, a) in req.axes.iter().enumerate() {
        if !req.units.iter().all(|u| u.get(a).is_some()) {
            return Err(ApiError::field(
                &format!("axes[{i}]"),
                format!("`{a}` is not a parameter of every unit"),
            ));
        }
    }
    let mut rng = rand::rng();
    let mut units = Vec::with_capacity(req.units.len());
    let rate = if package.is_some() && !verifiers {
        0.0
    } else {
        rate
    };
    for (i, params) in req.units.into_iter().enumerate() {
        let job = match package {
            Some(p) if p.kernel() == req.kernel => Job::package(p, &params),
            _ => Job::new(&req.kernel, params),
        };
        let job = job.map_err(|e| match (&e, e.field()) {
            (shaders::ParamError::UnknownKernel(_) | shaders::ParamError::UnknownPackage(_), _) => {
                ApiError::field("kernel", e.to_string())
            }
            (_, Some(f)) => ApiError::field(&format!("units[{i}].{f}"), e.to_string()),
            (_, None) => ApiError::field(&format!("units[{i}]"), e.to_string()),
        })?;
        check_output(i, &job, terms)?;
        let work = job.work();
        units.push(NewUnit {
            params: job.params_json(),
            work,
            spot_check: work <= terms.max_recompute_work && rate > 0.0 && rng.random_bool(rate),
        });
    }
    let description = match req.description.as_deref() {
        Some(d) => {
            shaders::spec::check_description(d).map_err(|e| ApiError::field(&e.field, e.message))?
        }
        None => None,
    };
    let name = req
        .name
        .map(|n| n.trim().chars().take(200).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("{} batch", req.kernel));
    Ok(NewBatch {
        key_id,
        name,
        description,
        kernel: req.kernel,
        policy,
        spot_check_rate: rate,
        units,
        axes: req.axes,
    })
}

pub(super) async fn create_batch(
    State(s): State<Shared>,
    sci: Scientist,
    Body(req): Body<BatchRequest>,
) -> Result<Response, ApiError> {
    let key = sci.0.id;
    if let Some(r) = s.submissions.refusal(
        &format!("key {key}"),
        "too many batches submitted with this key",
    ) {
        return Ok(r);
    }
    let (package, verifiers) = package_of(&s, &req.kernel).await?;
    let batch = new_batch_of(req, Some(key), &s.admission, package.as_ref(), verifiers)?;
    let (units, spot_checks, too_costly) = batch.verification(s.admission.max_recompute_work);
    let verification = verification_note(
        units,
        spot_checks,
        too_costly,
        &batch.policy,
        batch.spot_check_rate,
        false,
        package.is_some() && !verifiers,
    );
    let store = s.store.clone();
    let quota = Some(s.key_open_units);
    let batch_id = blocking(move || store.create_batch_within(&batch, now(), quota)).await?;
    s.spot_wake.notify_waiters();
    Ok((
        StatusCode::CREATED,
        Json(BatchCreated {
            batch_id,
            units,
            spot_checks,
            too_costly_to_recompute: too_costly,
            verification,
        }),
    )
        .into_response())
}

/// The package a batch's kernel names (400 naming `kernel` if there is none), and whether
/// verifier workers are there to recompute its units.
async fn package_of(
    s: &Shared,
    kernel: &str,
) -> Result<(Option<std::sync::Arc<shaders::package::Package>>, bool), ApiError> {
    let Some(hash) = protocol::package::package_hash(kernel) else {
        return Ok((None, false));
    };
    let store = s.store.clone();
    let (package, verifiers) =
        blocking(move || Ok((store.package(&hash)?, store.verifiers_available(now())?))).await?;
    match package {
        Some(p) if p.kernel() == kernel => Ok((Some(p), verifiers)),
        _ => Err(ApiError::field(
            "kernel",
            format!("no kernel package {kernel} here (upload it with `qg kernel push DIR`)"),
        )),
    }
}

/// Validates and expands a batch spec (TOML or JSON text), changing nothing: the units it
/// would create, or the field at fault.
/// A unit whose output no report could carry is refused at submission, naming it.
fn check_output(i: usize, job: &Job, terms: &Admission) -> Result<(), ApiError> {
    let out = job.output_len();
    if out > terms.max_output_bytes {
        return Err(ApiError::field(
            &format!("units[{i}]"),
            format!(
                "its output would be {} MiB, and a report carries at most {} MiB (the \
                 coordinator's body limit): make the unit smaller (fewer measurements, a \
                 smaller lattice)",
                out.div_ceil(1 << 20),
                terms.max_output_bytes >> 20
            ),
        ));
    }
    Ok(())
}

pub(super) async fn validate_spec(
    State(s): State<Shared>,
    _sci: Scientist,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let (package, verifiers) = match shaders::spec::kernel_of(&body) {
        Some(k) => package_of(&s, &k).await?,
        None => (None, false),
    };
    let e = shaders::spec::expand_text_with(&body, package.as_ref())
        .map_err(|e| ApiError::field(&e.field, e.to_string()))?;
    let (policy, rate) = policy_from(&e.policy, s.admission.default_spot)?;
    let jobs: Vec<Job> = e
        .units
        .iter()
        .filter_map(|u| match &package {
            Some(p) => Job::package(p, u).ok(),
            None => Job::new(&e.kernel, u.clone()).ok(),
        })
        .collect();
    for (i, j) in jobs.iter().enumerate() {
        check_output(i, j, &s.admission)?;
    }
    let too_costly = jobs
        .iter()
        .filter(|j| j.work() > s.admission.max_recompute_work)
        .count() as u64;
    let n = e.units.len() as u64;
    let quorum_only = package.is_some() && !verifiers;
    let rate = if quorum_only { 0.0 } else { rate };
    let expected = ((n - too_costly) as f64 * rate).round() as u64;
    Ok(Json(json!({
        "name": e.name, "description": e.description, "kernel": e.kernel, "axes": e.axes,
        "policy": e.policy,
        "count": e.units.len(), "units": e.units,
        "too_costly_to_recompute": too_costly,
        "verification": verification_note(n, expected, too_costly, &policy, rate, true, quorum_only),
    })))
}

/// `POST /api/v1/batches/{id}/cancel`: the owner (or an operator) stops a batch. Its unsettled
/// units fail with a reason that says so, its queued checks are dropped, settled results stand;
/// the batch's status comes back. Cancelling again is harmless.
pub(super) async fn cancel_batch(
    State(s): State<Shared>,
    sci: Scientist,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Result<Json<crate::store::BatchStatus>, ApiError> {
    let store = s.store.clone();
    let viewer = sci.viewer();
    let status = blocking(move || store.cancel_batch(id, viewer, now())).await?;
    tracing::info!(batch = id, "batch cancelled");
    Ok(Json(status))
}
