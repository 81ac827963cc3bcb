//! The HTTP API (`/api/v1`, JSON; documented at `/api/v1/openapi.json`). Bad input gets a JSON
//! error with the right 4xx status and changes nothing: every check happens before the store
//! is touched, and each store call is one transaction.

mod admission;
mod auth;
mod error;
mod log;
mod operator;
mod packages;
mod results;
mod snapshot;
mod verifier;
mod volunteers;

pub use admission::{
    Admission, DEFAULT_MAX_RECOMPUTE_WORK, new_batch, new_batch_of, policy_from, verification_note,
};
pub use auth::{
    Operator, Prefix, RateLimit, Scientist, Volunteer, hash_secret, network_prefix, new_secret,
};
pub(crate) use error::decode_output;
pub use error::{ApiError, Body};
pub use snapshot::Snapshots;

use crate::engine::Engine;
use crate::store::StoreError;
use admission::*;
use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use operator::*;
use results::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use volunteers::*;

/// Shared by every handler.
pub struct AppState {
    pub store: Arc<Engine>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Wakes the spot-check workers when a batch brings new work for them.
    pub spot_wake: Arc<Notify>,
    /// What a batch may ask for: its size, its spot-check rate, the recomputation cap.
    pub admission: Admission,
    /// Recomputation jobs (spot-checks, challenge segments) being done, by the built-in pool
    /// or a verifier worker, so no two take the same one.
    pub leases: verifier::Leases,
    /// How long a verifier worker holds a job before it may go to another.
    pub verifier_lease_s: i64,
    /// The transparency log's signing key (the sequencer signs checkpoints with it).
    pub log_key: Arc<transparency::NoteKey>,
    /// Witnesses whose cosignatures the log accepts.
    pub witnesses: Arc<Vec<transparency::NoteVerifier>>,
    /// The witnesses the log pushes its checkpoints to (those configured with a URL).
    pub pushers: Arc<Vec<Arc<crate::push::Pusher>>>,
    /// Tickets that open the dashboard's event stream.
    pub tickets: auth::Tickets,
    /// Registrations per network prefix.
    pub registrations: auth::RateLimit,
    /// Batch submissions per API key.
    pub submissions: auth::RateLimit,
    /// Units not yet finished one API key may have (its batches' together).
    pub key_open_units: u64,
    /// The status and dashboard snapshot all public readers share.
    pub snapshots: Snapshots,
}

pub type Shared = Arc<AppState>;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs a store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

/// The body limit of the routes whose requests are small (registration, work requests, a
/// cosignature, ...): whatever `max_body_bytes` is, such a body is parsed from at most this.
/// Reports, challenge answers, verifier results, batches and specs get `max_body_bytes`, and
/// kernel packages their own limit.
pub const SMALL_BODY_BYTES: usize = 64 << 10;

fn small() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(SMALL_BODY_BYTES)
}

pub fn router(state: Shared) -> Router {
    let metrics_layer =
        axum::middleware::from_fn_with_state(state.metrics.clone(), crate::metrics::track);
    Router::new()
        .route("/api/v1/volunteers", post(register).layer(small()))
        .route(
            "/api/v1/volunteers/me",
            get(me).post(update_me).layer(small()),
        )
        .route("/api/v1/leaderboard", get(leaderboard))
        .route("/api/v1/work", post(work).layer(small()))
        .route("/api/v1/results", post(post_results))
        .route("/api/v1/challenges/{id}", post(answer_challenge))
        .route("/api/v1/verifier/work", post(verifier::work).layer(small()))
        .route("/api/v1/verifier/results", post(verifier::results))
        .route("/api/v1/batches", post(create_batch).get(list_batches))
        .route("/api/v1/batches/{id}/aggregate", get(batch_aggregate))
        .route("/api/v1/specs", post(validate_spec))
        .route("/api/v1/dashboard", get(dashboard))
        .route("/api/v1/dashboard/events", get(dashboard_events))
        .route(
            "/api/v1/dashboard/ticket",
            post(dashboard_ticket).layer(small()),
        )
        .route("/metrics", get(metrics))
        .route("/api/v1/batches/{id}", get(batch_status))
        .route("/api/v1/batches/{id}/results", get(batch_results))
        .route("/api/v1/units/{id}", get(unit))
        .route("/api/v1/status", get(status))
        .route(
            "/api/v1/kernels",
            get(packages::list)
                .post(packages::push)
                .layer(axum::extract::DefaultBodyLimit::max(
                    packages::MAX_UPLOAD_BYTES,
                )),
        )
        .route("/api/v1/kernels/{hash}", get(packages::files))
        .route(
            "/api/v1/kernels/{hash}/approve",
            post(packages::approve).layer(small()),
        )
        .route(
            "/api/v1/kernels/{hash}/suspend",
            post(packages::suspend).layer(small()),
        )
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/log", get(log::info))
        .route("/api/v1/log/consistency", get(log::consistency))
        .route(
            "/api/v1/log/cosignatures",
            post(log::add_cosignature).layer(small()),
        )
        .route("/api/v1/batches/{id}/proofs", get(log::batch_proofs))
        .route(
            "/api/v1/batches/{id}/cancel",
            post(cancel_batch).layer(small()),
        )
        .route("/log/checkpoint", get(log::checkpoint))
        .route("/log/tile/{*path}", get(log::tile))
        // Anything else under the API's prefixes is a JSON 404, not the page server's.
        .route("/api/{*rest}", axum::routing::any(no_such_route))
        .route("/log/{*rest}", axum::routing::any(no_such_route))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(metrics_layer)
        .with_state(state)
}

async fn no_such_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} (see /api/v1/openapi.json)",
            uri.path()
        ),
    )
}

/// The OpenAPI document (kept in step with [`router`] by a test).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
