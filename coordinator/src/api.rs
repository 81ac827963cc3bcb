//! The HTTP API (`/api/v1`, JSON; documented at `/api/v1/openapi.json`). Bad input gets a JSON
//! error with the right 4xx status and changes nothing: every check happens before the store
//! is touched, and each store call is one transaction.

use crate::lifecycle::{Policy, Replication};
use crate::engine::Engine;
use crate::store::{NewBatch, NewUnit, ReportBody, StoreError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use protocol::Digest;
use protocol::api::*;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use shaders::Job;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Shared by every handler.
pub struct AppState {
    pub store: Arc<Engine>,
    pub metrics: crate::metrics::Metrics,
    /// Wakes the spot-check workers when a batch brings new work for them.
    pub spot_wake: Arc<Notify>,
    pub max_units_per_batch: usize,
    pub default_spot_rate: f64,
    /// Recomputation jobs (spot-checks, challenge segments) being done, by the built-in pool
    /// or a verifier worker, so no two take the same one.
    pub leases: crate::verify::Leases,
    /// How long a verifier worker holds a job before it may go to another.
    pub verifier_lease_s: i64,
}

pub type Shared = Arc<AppState>;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A JSON error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
            },
        }
    }
    pub fn field(field: &str, error: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error: error.into(),
                field: Some(field.to_owned()),
            },
        }
    }
}

impl ApiError {
    /// The same error with another status (a field error that is a 404 or a 409).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

/// A report's canonical output: base64 of exactly the bytes `job` produces, or an error
/// naming `output` (shared by volunteers' reports and verifier workers' results).
pub(crate) fn decode_output(
    job: &Job,
    b64: Option<&str>,
    missing: &str,
) -> Result<Vec<u8>, ApiError> {
    let b64 = b64.ok_or_else(|| ApiError::field("output", missing))?;
    let output = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ApiError::field("output", format!("not base64: {e}")))?;
    let want = job.output_len();
    if output.len() as u64 != want {
        return Err(ApiError::field(
            "output",
            format!(
                "is {} bytes; {} with these params produces {want}",
                output.len(),
                job.kernel()
            ),
        ));
    }
    Ok(output)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            StoreError::Invalid { field, message } => ApiError::field(&field, message),
            StoreError::Db(m) | StoreError::Retry(m) => {
                tracing::error!("store: {m}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal storage error")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), r.body_text())
    }
}

/// `Json` whose rejections are JSON errors too.
#[derive(FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
pub struct Body<T>(pub T);

/// Runs a store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

/// SHA-256 of a secret, as stored.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Digest::of(secret.as_bytes()).0.to_vec()
}

/// A fresh secret: `prefix` + 32 random bytes in hex.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{prefix}{}", hex::encode(bytes))
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <token>` header",
            )
        })
}

/// An authenticated volunteer.
pub struct Volunteer(pub i64);

impl FromRequestParts<Shared> for Volunteer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let hash = hash_secret(bearer(&parts.headers)?);
        let store = state.store.clone();
        let v = blocking(move || store.volunteer_by_token(&hash, now()))
            .await?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown volunteer token"))?;
        if v.blacklisted {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this volunteer is blocked after failed spot-checks",
            ));
        }
        Ok(Volunteer(v.id))
    }
}

/// The caller's network prefix (/24 for IPv4, /48 for IPv6), when the server knows the peer
/// address: replicas of a unit whose policy says `distinct_prefixes` go to distinct ones.
pub struct Prefix(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Prefix {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Prefix(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| network_prefix(c.0.ip())),
        ))
    }
}

/// `a.b.c.0/24` for IPv4 (and IPv4-mapped IPv6), the first 48 bits for IPv6.
pub fn network_prefix(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// An operator: an API key created with `--operator`, from the `Authorization` header or, for
/// EventSource (which cannot set headers), a `?key=` query parameter.
pub struct Operator;

impl FromRequestParts<Shared> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let from_query = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("key="))
                .map(str::to_owned)
        });
        let key = match bearer(&parts.headers) {
            Ok(k) => k.to_owned(),
            Err(e) => from_query.ok_or(e)?,
        };
        let hash = hash_secret(&key);
        let store = state.store.clone();
        match blocking(move || store.key_by_hash(&hash)).await? {
            Some(k) if k.operator => Ok(Operator),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "an operator key is needed",
            )),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unknown API key")),
        }
    }
}

/// An authenticated scientist (API key); `viewer()` is None for operators, who see all.
pub struct Scientist(pub crate::store::KeyAuth);

impl Scientist {
    pub fn viewer(&self) -> Option<i64> {
        (!self.0.operator).then_some(self.0.id)
    }
}

impl FromRequestParts<Shared> for Scientist {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let hash = hash_secret(bearer(&parts.headers)?);
        let store = state.store.clone();
        blocking(move || store.key_by_hash(&hash))
            .await?
            .map(Scientist)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown API key"))
    }
}

pub fn router(state: Shared) -> Router {
    let metrics_layer = axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track);
    Router::new()
        .route("/api/v1/volunteers", post(register))
        .route("/api/v1/volunteers/me", get(me).post(update_me))
        .route("/api/v1/leaderboard", get(leaderboard))
        .route("/api/v1/work", post(work))
        .route("/api/v1/results", post(results))
        .route("/api/v1/challenges/{id}", post(answer_challenge))
        .route("/api/v1/verifier/work", post(crate::verify::work))
        .route("/api/v1/verifier/results", post(crate::verify::results))
        .route("/api/v1/batches", post(create_batch).get(list_batches))
        .route("/api/v1/batches/{id}/aggregate", get(batch_aggregate))
        .route("/api/v1/specs", post(validate_spec))
        .route("/api/v1/dashboard", get(dashboard))
        .route("/api/v1/dashboard/events", get(dashboard_events))
        .route("/metrics", get(metrics))
        .route("/api/v1/batches/{id}", get(batch_status))
        .route("/api/v1/batches/{id}/results", get(batch_results))
        .route("/api/v1/units/{id}", get(unit))
        .route("/api/v1/status", get(status))
        .route("/api/v1/kernels", get(kernels))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(metrics_layer)
        .with_state(state)
}

/// The OpenAPI document (kept in step with [`router`] by a test).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn kernels() -> Json<Value> {
    Json(json!({ "kernels": shaders::kernels() }))
}

/// A nickname as shown on the leaderboard: trimmed, 1..=40 characters, no control characters;
/// empty means none.
fn clean_nickname(n: Option<&str>) -> Result<Option<String>, ApiError> {
    match n.map(str::trim) {
        Some(n) if n.chars().count() > 40 => {
            Err(ApiError::field("nickname", "at most 40 characters"))
        }
        Some(n) if n.chars().any(char::is_control) => {
            Err(ApiError::field("nickname", "no control characters"))
        }
        Some("") | None => Ok(None),
        Some(n) => Ok(Some(n.to_owned())),
    }
}

async fn me(
    State(s): State<Shared>,
    Volunteer(v): Volunteer,
) -> Result<Json<crate::store::VolunteerStats>, ApiError> {
    let store = s.store.clone();
    Ok(Json(blocking(move || store.volunteer_stats(v)).await?))
}

async fn update_me(
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

async fn leaderboard(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let rows = blocking(move || store.leaderboard(20)).await?;
    Ok(Json(json!({ "leaders": rows })))
}

/// The body is optional: an empty one registers without a nickname.
async fn register(
    State(s): State<Shared>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
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
    ))
}

async fn work(
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
    let store = s.store.clone();
    let assignments = blocking(move || {
        store.request_work(v, req.max_units, &req.adapter, prefix.as_deref(), now())
    })
    .await?;
    let retry_after_s = if assignments.is_empty() { 5 } else { 0 };
    Ok(Json(WorkResponse {
        assignments,
        retry_after_s,
    }))
}

/// Checks a report against its assignment's kernel: output length, the digest recomputed from
/// the bytes, checkpoints in order. Nothing is stored unless all of it holds.
fn check_report(job: &Job, r: &ResultReport) -> Result<ReportBody, ApiError> {
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
    let total = job.schedule().total;
    if r.checkpoints.len() as u64 > job.schedule().checkpoint_count()
        || r.checkpoints.windows(2).any(|w| w[0].step >= w[1].step)
        || r.checkpoints.iter().any(|c| c.step == 0 || c.step > total)
    {
        return Err(ApiError::field(
            "checkpoints",
            "must be in increasing step order, within the run, at most one per checkpoint",
        ));
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
async fn report_all(
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
    let jobs = blocking(move || store.assignment_jobs(v, &lookup_ids)).await?;
    let mut results: Vec<Result<ReportAck, ApiError>> = Vec::with_capacity(reports.len());
    let mut items = Vec::new();
    let mut slots = Vec::new();
    for (i, (report, job)) in reports.into_iter().zip(jobs).enumerate() {
        let checked = report.and_then(|r| {
            let (kernel, params, version) = job?;
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
            let job = Job::new(&kernel, params).map_err(|e| {
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
async fn results(
    State(s): State<Shared>,
    Volunteer(v): Volunteer,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    match body {
        Value::Array(items) => {
            if items.len() > 256 {
                return Err(ApiError::field("reports", "at most 256 reports at once"));
            }
            let ids: Vec<i64> = items
                .iter()
                .map(|x| x.get("assignment_id").and_then(Value::as_i64).unwrap_or(0))
                .collect();
            let parsed = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    serde_json::from_value::<ResultReport>(item)
                        .map_err(|e| ApiError::field(&format!("[{i}]"), e.to_string()))
                })
                .collect();
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
        item => {
            let r: ResultReport = serde_json::from_value(item)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
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
async fn answer_challenge(
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

async fn create_batch(
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

async fn batch_status(
    State(s): State<Shared>,
    sci: Scientist,
    Path(id): Path<i64>,
) -> Result<Json<crate::store::BatchStatus>, ApiError> {
    let store = s.store.clone();
    let viewer = sci.viewer();
    Ok(Json(
        blocking(move || store.batch_status(id, viewer)).await?,
    ))
}

#[derive(Deserialize)]
struct ResultsQuery {
    #[serde(default)]
    format: Option<String>,
}

async fn batch_results(
    State(s): State<Shared>,
    sci: Scientist,
    Path(id): Path<i64>,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, ApiError> {
    let format = q.format.unwrap_or_else(|| "json".into());
    if format != "json" && format != "csv" {
        return Err(ApiError::field("format", "json or csv"));
    }
    let store = s.store.clone();
    let viewer = sci.viewer();
    let rows = blocking(move || store.batch_results(id, viewer)).await?;
    if format == "json" {
        return Ok(Json(json!({ "batch_id": id, "units": rows })).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        results_csv(&rows),
    )
        .into_response())
}

/// One row per unit: id, state, digest, then every param and summary field (columns are the
/// union over units, sorted), then the failure reason.
pub fn results_csv(rows: &[crate::store::UnitResult]) -> String {
    use std::collections::BTreeSet;
    let keys = |f: &dyn Fn(&crate::store::UnitResult) -> Option<&Value>| -> Vec<String> {
        let mut set = BTreeSet::new();
        for r in rows {
            if let Some(Value::Object(m)) = f(r) {
                set.extend(m.keys().cloned());
            }
        }
        set.into_iter().collect()
    };
    let pkeys = keys(&|r| Some(&r.params));
    let skeys = keys(&|r| r.summary.as_ref());
    let esc = |s: String| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => esc(s.clone()),
        Some(v) => esc(v.to_string()),
    };
    let mut out = String::from("unit_id,state,digest");
    for k in &pkeys {
        out.push_str(&format!(",{}", esc(k.clone())));
    }
    for k in &skeys {
        out.push_str(&format!(",{}", esc(k.clone())));
    }
    out.push_str(",fail_reason\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{}",
            r.unit_id,
            r.state.as_str(),
            r.digest.map(|d| d.to_hex()).unwrap_or_default()
        ));
        for k in &pkeys {
            out.push(',');
            out.push_str(&cell(r.params.get(k)));
        }
        for k in &skeys {
            out.push(',');
            out.push_str(&cell(r.summary.as_ref().and_then(|s| s.get(k))));
        }
        out.push(',');
        out.push_str(&esc(r.fail_reason.clone().unwrap_or_default()));
        out.push('\n');
    }
    out
}

async fn unit(
    State(s): State<Shared>,
    sci: Scientist,
    Path(id): Path<i64>,
) -> Result<Json<crate::store::UnitProvenance>, ApiError> {
    let store = s.store.clone();
    let viewer = sci.viewer();
    Ok(Json(
        blocking(move || store.unit_provenance(id, viewer)).await?,
    ))
}

async fn status(State(s): State<Shared>) -> Result<Json<crate::store::Status>, ApiError> {
    let store = s.store.clone();
    Ok(Json(blocking(move || store.status()).await?))
}

async fn list_batches(State(s): State<Shared>, sci: Scientist) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let viewer = sci.viewer();
    let batches = blocking(move || store.list_batches(viewer)).await?;
    Ok(Json(json!({ "batches": batches })))
}

/// Per swept point (every axis but `seed`): how many canonical units, and the mean and
/// standard error across them of every numeric summary observable.
pub fn aggregate(axes: &[String], rows: &[crate::store::UnitResult]) -> Value {
    let group_axes: Vec<&String> = axes.iter().filter(|a| a.as_str() != "seed").collect();
    let mut order: Vec<String> = Vec::new();
    let mut groups: std::collections::HashMap<String, (Value, Vec<&Value>)> = Default::default();
    for r in rows {
        if r.state != crate::lifecycle::UnitState::Canonical {
            continue;
        }
        let Some(summary) = &r.summary else { continue };
        let values: serde_json::Map<String, Value> = group_axes
            .iter()
            .map(|a| {
                (
                    (*a).clone(),
                    r.params.get(a.as_str()).cloned().unwrap_or(Value::Null),
                )
            })
            .collect();
        let key = Value::Object(values.clone()).to_string();
        let entry = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            (Value::Object(values), Vec::new())
        });
        entry.1.push(summary);
    }
    let points: Vec<Value> = order
        .iter()
        .filter_map(|k| groups.get(k))
        .map(|(values, sums)| {
            let mut mean = serde_json::Map::new();
            let mut sem = serde_json::Map::new();
            if let Some(Value::Object(first)) = sums.first() {
                for key in first.keys() {
                    let xs: Vec<f64> = sums.iter().filter_map(|s| s.get(key)?.as_f64()).collect();
                    if xs.len() != sums.len() {
                        continue;
                    }
                    let n = xs.len() as f64;
                    let m = xs.iter().sum::<f64>() / n;
                    mean.insert(key.clone(), json!(m));
                    let e = if xs.len() > 1 {
                        json!(
                            (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) / n)
                                .sqrt()
                        )
                    } else {
                        Value::Null
                    };
                    sem.insert(key.clone(), e);
                }
            }
            json!({ "values": values, "n": sums.len(), "mean": mean, "sem": sem })
        })
        .collect();
    json!({ "axes": group_axes, "points": points })
}

async fn batch_aggregate(
    State(s): State<Shared>,
    sci: Scientist,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let viewer = sci.viewer();
    let (status, rows) = blocking(move || {
        Ok((
            store.batch_status(id, viewer)?,
            store.batch_results(id, viewer)?,
        ))
    })
    .await?;
    let mut out = aggregate(&status.axes, &rows);
    out["batch_id"] = json!(id);
    out["kernel"] = json!(status.kernel);
    Ok(Json(out))
}

/// Validates and expands a batch spec (TOML or JSON text), changing nothing: the units it
/// would create, or the field at fault.
async fn validate_spec(_sci: Scientist, body: String) -> Result<Json<Value>, ApiError> {
    let e =
        shaders::spec::expand_text(&body).map_err(|e| ApiError::field(&e.field, e.to_string()))?;
    policy_from(&e.policy, 0.05)?;
    Ok(Json(json!({
        "name": e.name, "kernel": e.kernel, "axes": e.axes, "policy": e.policy,
        "count": e.units.len(), "units": e.units,
    })))
}

async fn dashboard(
    State(s): State<Shared>,
    _op: Operator,
) -> Result<Json<crate::store::Dashboard>, ApiError> {
    let store = s.store.clone();
    Ok(Json(blocking(move || store.dashboard(now())).await?))
}

/// The dashboard as Server-Sent Events: a fresh snapshot every second.
async fn dashboard_events(
    State(s): State<Shared>,
    _op: Operator,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let stream = futures_util::stream::unfold((s, true), |(s, first)| async move {
        if !first {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let store = s.store.clone();
        let event = match blocking(move || store.dashboard(now())).await {
            Ok(d) => Event::default()
                .event("snapshot")
                .json_data(&d)
                .unwrap_or_default(),
            Err(e) => Event::default().event("error").data(e.body.error),
        };
        Some((Ok(event), (s, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(s): State<Shared>) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let status = blocking(move || store.status()).await?;
    let text = s.metrics.render(&status);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
