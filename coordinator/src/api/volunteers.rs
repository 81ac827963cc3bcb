//! The volunteer's side: registration, its record, work, reports, challenge answers.

use crate::store::ReportBody;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use protocol::Digest;
use protocol::api::*;
use serde_json::{Value, json};
use shaders::Job;

use super::*;

/// A nickname as shown on the leaderboard: NFKC-normalised, runs of white space made one
/// space, trimmed, 1..=40 characters; control, format (zero-width, bidi overrides), private-use
/// and unassigned characters refused; empty means none.
pub(super) fn clean_nickname(n: Option<&str>) -> Result<Option<String>, ApiError> {
    use unicode_normalization::UnicodeNormalization;
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    let Some(n) = n else { return Ok(None) };
    if let Some(c) = n
        .chars()
        .find(|c| c.general_category_group() == GeneralCategoryGroup::Other && !c.is_whitespace())
    {
        return Err(ApiError::field(
            "nickname",
            format!(
                "no invisible, control or direction-changing characters (U+{:04X})",
                c as u32
            ),
        ));
    }
    let n: String = n.nfkc().collect();
    let n = n.split_whitespace().collect::<Vec<_>>().join(" ");
    if n.chars().count() > 40 {
        return Err(ApiError::field("nickname", "at most 40 characters"));
    }
    Ok((!n.is_empty()).then_some(n))
}

pub(super) async fn me(
    State(s): State<Shared>,
    Volunteer(v): Volunteer,
) -> Result<Json<crate::store::VolunteerStats>, ApiError> {
    let store = s.store.clone();
    Ok(Json(blocking(move || store.volunteer_stats(v)).await?))
}

pub(super) async fn update_me(
    State(s): State<Shared>,
    Volunteer(v): Volunteer,
    Body(req): Body<RegisterRequest>,
) -> Result<Json<crate::store::VolunteerStats>, ApiError> {
    let nickname = clean_nickname(req.nickname.as_deref())?;
    let store = s.store.clone();
    Ok(Json(
        blocking(move || {
            store.set_nickname(v, nickname.as_deref())?;
            store.volunteer_stats(v)
        })
        .await?,
    ))
}

pub(super) async fn leaderboard(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let rows = blocking(move || store.leaderboard(20)).await?;
    Ok(Json(json!({ "leaders": rows })))
}

/// The body is optional: an empty one registers without a nickname.
pub(super) async fn register(
    State(s): State<Shared>,
    Prefix(prefix): Prefix,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if let Some(p) = &prefix
        && let Some(r) = s
            .registrations
            .refusal(p, &format!("too many registrations from {p}"))
    {
        return Ok(r);
    }
    let req: RegisterRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RegisterRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?
    };
    let nickname = clean_nickname(req.nickname.as_deref())?;
    let token = new_secret("qgv_");
    let hash = hash_secret(&token);
    let store = s.store.clone();
    let volunteer_id =
        blocking(move || store.register_volunteer(&hash, nickname.as_deref(), now())).await?;
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            volunteer_id,
            token,
        }),
    )
        .into_response())
}

pub(super) async fn work(
    State(s): State<Shared>,
    Volunteer(v): Volunteer,
    Prefix(prefix): Prefix,
    Body(req): Body<WorkRequest>,
) -> Result<Json<WorkResponse>, ApiError> {
    if !(1..=64).contains(&req.max_units) {
        return Err(ApiError::field(
            "max_units",
            format!("must be 1..=64, got {}", req.max_units),
        ));
    }
    check_adapter(&req.adapter)?;
    if req.holding.as_ref().is_some_and(|h| h.len() > 64) {
        return Err(ApiError::field(
            "holding",
            "at most 64 assignments (no volunteer holds more)",
        ));
    }
    let store = s.store.clone();
    let assignments = blocking(move || {
        let holding = req.holding.as_deref();
        store.request_work_holding(
            v,
            req.max_units,
            &req.adapter,
            prefix.as_deref(),
            holding,
            req.builtin_only,
            now(),
        )
    })
    .await?;
    let retry_after_s = if assignments.is_empty() { 5 } else { 0 };
    Ok(Json(WorkResponse {
        assignments,
        retry_after_s,
    }))
}

/// The longest adapter field taken: real names are under 100 characters ("NVIDIA GeForce RTX
/// 4090 Laptop GPU", "llvmpipe (LLVM 19.1.7, 256 bits)").
pub(super) const MAX_ADAPTER_FIELD: usize = 128;

/// An adapter's fields are bounded and printable at the edge: they name an adapter class,
/// stored and shown on the dashboard, so their size is no attacker's choice.
pub(super) fn check_adapter(a: &protocol::api::AdapterInfo) -> Result<(), ApiError> {
    for (field, v) in [
        ("adapter.name", &a.name),
        ("adapter.backend", &a.backend),
        ("adapter.vendor", &a.vendor),
        ("adapter.device_type", &a.device_type),
        ("adapter.client", &a.client),
    ] {
        if v.chars().count() > MAX_ADAPTER_FIELD {
            return Err(ApiError::field(
                field,
                format!("at most {MAX_ADAPTER_FIELD} characters"),
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(ApiError::field(field, "no control characters"));
        }
    }
    Ok(())
}

/// Checks a report against its assignment's kernel: output length, the digest recomputed from
/// the bytes, checkpoints in order. Nothing is stored unless all of it holds.
pub(super) fn check_report(job: &Job, r: &ResultReport) -> Result<ReportBody, ApiError> {
    if let Some(msg) = &r.error {
        if r.output.is_some() || r.digest.is_some() {
            return Err(ApiError::field(
                "error",
                "a report carries either an error or an output and digest, not both",
            ));
        }
        return Ok(ReportBody::Error(msg.chars().take(1000).collect()));
    }
    let output = decode_output(job, r.output.as_deref(), "missing (or set `error`)")?;
    let claimed = r
        .digest
        .ok_or_else(|| ApiError::field("digest", "missing"))?;
    let digest = Digest::of_data(&output);
    if digest != claimed {
        return Err(ApiError::field(
            "digest",
            format!("does not match the output (the output's data digest is {digest})"),
        ));
    }
    // The unit's own checkpoints, every one, or none: a challenge segment then spans one
    // checkpoint interval, never a run the report chose (a lone checkpoint at the last step
    // would make the challenge recompute the whole unit).
    let schedule = job.schedule();
    if !r.checkpoints.is_empty() {
        let expected = schedule.checkpoint_count();
        let wrong = r.checkpoints.len() as u64 != expected
            || r.checkpoints.iter().enumerate().any(|(i, c)| {
                let step = (i as u64 + 1)
                    .saturating_mul(schedule.every)
                    .min(schedule.total);
                c.step != step
            });
        if wrong {
            return Err(ApiError::field(
                "checkpoints",
                format!(
                    "must be the unit's {expected} checkpoints, at steps {}, {}, … and {} (or none)",
                    schedule.every,
                    2 * schedule.every,
                    schedule.total
                ),
            ));
        }
    }
    let summary = job
        .summarize(&output)
        .map_err(|e| ApiError::field("output", e.to_string()))?;
    Ok(ReportBody::Output {
        digest,
        output,
        checkpoints: r.checkpoints.clone(),
        summary,
    })
}

/// Judges reports: one read to find their assignments, checks in memory, one write
/// transaction for all that pass (each item on its own savepoint). One result per item.
pub(super) async fn report_all(
    s: &Shared,
    v: i64,
    reports: Vec<Result<ResultReport, ApiError>>,
) -> Result<Vec<Result<ReportAck, ApiError>>, ApiError> {
    let ids: Vec<i64> = reports
        .iter()
        .map(|r| r.as_ref().map_or(0, |r| r.assignment_id))
        .collect();
    let store = s.store.clone();
    let lookup_ids = ids.clone();
    let jobs = blocking(move || {
        // Each assignment's job (a package's from the engine's checked packages).
        store
            .assignment_jobs(v, &lookup_ids)?
            .into_iter()
            .map(|j| match j {
                Ok((kernel, params, version)) => {
                    Ok(Ok((store.job(&kernel, &params)?, kernel, version)))
                }
                Err(e) => Ok(Err(e)),
            })
            .collect::<Result<Vec<_>, StoreError>>()
    })
    .await?;
    let mut results: Vec<Result<ReportAck, ApiError>> = Vec::with_capacity(reports.len());
    let mut items = Vec::new();
    let mut slots = Vec::new();
    for (i, (report, job)) in reports.into_iter().zip(jobs).enumerate() {
        let checked = report.and_then(|r| {
            let (job, kernel, version) = job?;
            if r.kernel_version != version || version != shaders::kernel_version(&kernel) {
                return Err(ApiError::field(
                    "kernel_version",
                    format!(
                        "this unit is {kernel} version {version} (this coordinator runs version \
                         {}); a result computed with version {} cannot be compared with it",
                        shaders::kernel_version(&kernel),
                        r.kernel_version
                    ),
                )
                .with_status(StatusCode::CONFLICT));
            }
            let job = job.map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("stored params: {e}"),
                )
            })?;
            check_report(&job, &r)
        });
        match checked {
            Ok(body) => {
                items.push((ids[i], body));
                slots.push(i);
                results.push(Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "pending",
                )));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if !items.is_empty() {
        let store = s.store.clone();
        let outcomes = blocking(move || store.report_batch(v, &items, now())).await?;
        for (slot, outcome) in slots.into_iter().zip(outcomes) {
            results[slot] = outcome.map_err(ApiError::from).map(|o| ReportAck {
                assignment_id: ids[slot],
                replica_state: o.replica_state.as_str().to_owned(),
                unit_state: o.unit_state.as_str().to_owned(),
                challenge: o.challenge.map(|step| ChallengeRequest { step }),
            });
        }
    }
    Ok(results)
}

/// One report (an object), or several at once (an array: each item is judged on its own and
/// gets the status it would have had alone).
pub(super) async fn post_results(
    State(s): State<Shared>,
    Volunteer(v): Volunteer,
    body: super::error::Reports,
) -> Result<Response, ApiError> {
    use super::error::Reports;
    match body {
        Reports::Many(items) => {
            let (ids, parsed): (Vec<i64>, Vec<_>) = items.into_iter().unzip();
            let out: Vec<ReportItemResult> = report_all(&s, v, parsed)
                .await?
                .into_iter()
                .zip(ids)
                .map(|(res, assignment_id)| match res {
                    Ok(ack) => ReportItemResult {
                        assignment_id,
                        status: 202,
                        ack: Some(ack),
                        error: None,
                    },
                    Err(e) => ReportItemResult {
                        assignment_id,
                        status: e.status.as_u16(),
                        ack: None,
                        error: Some(e.body),
                    },
                })
                .collect();
            Ok((StatusCode::ACCEPTED, Json(out)).into_response())
        }
        Reports::One(r) => {
            let ack = report_all(&s, v, vec![Ok(r)])
                .await?
                .pop()
                .unwrap_or_else(|| {
                    Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "no result",
                    ))
                })?;
            Ok((StatusCode::ACCEPTED, Json(ack)).into_response())
        }
    }
}

/// A volunteer's answer to a challenge: its state buffers at the checkpoint asked for.
pub(super) async fn answer_challenge(
    State(s): State<Shared>,
    Volunteer(v): Volunteer,
    Path(id): Path<i64>,
    Body(req): Body<ChallengeAnswer>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let state = req
        .state
        .iter()
        .enumerate()
        .map(|(i, b)| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| ApiError::field(&format!("state[{i}]"), format!("not base64: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let store = s.store.clone();
    blocking(move || store.answer_challenge(v, id, req.step, state, now())).await?;
    s.spot_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"assignment_id": id, "received": true})),
    ))
}

#[cfg(test)]
mod tests {
    use super::clean_nickname;

    #[test]
    fn nicknames_are_normalised_and_invisible_characters_refused() {
        let ok = |n: &str| clean_nickname(Some(n)).unwrap();
        assert_eq!(ok("  ada   lovelace "), Some("ada lovelace".into()));
        // Compatibility forms fold to what they look like: fullwidth letters, ligatures.
        assert_eq!(ok("\u{FF21}da"), Some("Ada".into()));
        assert_eq!(ok("\u{FB01}sh"), Some("fish".into()));
        assert_eq!(ok("Zoë"), Some("Zoë".into()));
        assert_eq!(ok("   "), None);
        assert_eq!(clean_nickname(None).unwrap(), None);
        for bad in [
            "evil\u{202E}gnp.exe", // right-to-left override
            "a\u{200B}b",          // zero-width space
            "a\u{2066}b",          // left-to-right isolate
            "a\u{FEFF}",           // zero-width no-break space
            "a\u{E000}",           // private use
            "tab\u{0007}",         // control
        ] {
            let e = clean_nickname(Some(bad)).unwrap_err();
            assert_eq!(e.body.field.as_deref(), Some("nickname"), "{bad:?}");
        }
        assert!(clean_nickname(Some(&"x".repeat(41))).is_err());
    }
}
