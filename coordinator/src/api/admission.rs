//! Admission: a scientist's batch (or spec) checked, field by field, before anything is
//! stored.

use crate::lifecycle::{Policy, Replication};
use crate::store::{NewBatch, NewUnit};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
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

/// Validates every unit's params (naming `units[i].field`) and samples spot-checks.
pub fn new_batch(
    req: BatchRequest,
    key_id: Option<i64>,
    max_units: usize,
    default_spot: f64,
) -> Result<NewBatch, ApiError> {
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
    for (i, params) in req.units.into_iter().enumerate() {
        let job = Job::new(&req.kernel, params).map_err(|e| match (&e, e.field()) {
            (shaders::ParamError::UnknownKernel(_), _) => ApiError::field("kernel", e.to_string()),
            (_, Some(f)) => ApiError::field(&format!("units[{i}].{f}"), e.to_string()),
            (_, None) => ApiError::field(&format!("units[{i}]"), e.to_string()),
        })?;
        units.push(NewUnit {
            params: job.params_json(),
            work: job.work(),
            spot_check: rate > 0.0 && rng.random_bool(rate),
        });
    }
    let name = req
        .name
        .map(|n| n.trim().chars().take(200).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("{} batch", req.kernel));
    Ok(NewBatch {
        key_id,
        name,
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
) -> Result<(StatusCode, Json<BatchCreated>), ApiError> {
    let batch = new_batch(
        req,
        Some(sci.0.id),
        s.max_units_per_batch,
        s.default_spot_rate,
    )?;
    let units = batch.units.len() as u64;
    let store = s.store.clone();
    let batch_id = blocking(move || store.create_batch(&batch, now())).await?;
    s.spot_wake.notify_waiters();
    Ok((StatusCode::CREATED, Json(BatchCreated { batch_id, units })))
}

/// Validates and expands a batch spec (TOML or JSON text), changing nothing: the units it
/// would create, or the field at fault.
pub(super) async fn validate_spec(_sci: Scientist, body: String) -> Result<Json<Value>, ApiError> {
    let e =
        shaders::spec::expand_text(&body).map_err(|e| ApiError::field(&e.field, e.to_string()))?;
    policy_from(&e.policy, 0.05)?;
    Ok(Json(json!({
        "name": e.name, "kernel": e.kernel, "axes": e.axes, "policy": e.policy,
        "count": e.units.len(), "units": e.units,
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
