//! Scientists' kernel packages: uploaded (checked with naga before anything is stored, every
//! refusal naming the file and its field or line), listed beside the built-ins, served by hash
//! to the volunteers who run them, and approved or suspended by an operator.

use super::*;
use crate::engine::PackageAction;
use axum::extract::{Path, State};
use protocol::Digest;
use protocol::package::PackageFiles;
use shaders::package::Package;

/// The largest upload (the files' limits are smaller: a larger shader is refused by name).
pub const MAX_UPLOAD_BYTES: usize = 16 << 20;

fn hash_of(text: &str) -> Result<Digest, ApiError> {
    text.parse().map_err(|_| {
        ApiError::field("hash", "a package's hash: 64 lowercase hex digits")
            .with_status(StatusCode::NOT_FOUND)
    })
}

/// `POST /api/v1/kernels`: a package's files as JSON (`kernel.toml`, `kernel.wgsl`, optionally
/// `view.wgsl`). 201 with its status when new (pending until an operator approves it), 200
/// when it was there already; 400 naming the file and the field or line at fault.
pub(super) async fn push(
    State(s): State<Shared>,
    sci: Scientist,
    Body(files): Body<PackageFiles>,
) -> Result<Response, ApiError> {
    let checked = tokio::task::spawn_blocking(move || Package::from_files(files))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let package = checked.map_err(|e| ApiError::field(&e.location(), e.message.clone()))?;
    let store = s.store.clone();
    let key = sci.0.id;
    let (status, new) = blocking(move || store.put_package(package, Some(key), now())).await?;
    if new {
        tracing::info!(package = %status.kernel, key, "kernel package uploaded, pending approval");
    }
    let code = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(status)).into_response())
}

/// `GET /api/v1/kernels`: the built-in kernels and every package (with its status).
pub(super) async fn list(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let packages = blocking(move || store.packages()).await?;
    let mut kernels: Vec<Value> = shaders::kernels()
        .into_iter()
        .map(|k| serde_json::to_value(k).unwrap_or(Value::Null))
        .collect();
    for (status, p) in &packages {
        let mut d = p.describe();
        d["status"] = json!(status.status);
        d["reason"] = json!(status.reason);
        kernels.push(d);
    }
    let statuses: Vec<_> = packages.into_iter().map(|(st, _)| st).collect();
    Ok(Json(json!({ "kernels": kernels, "packages": statuses })))
}

/// `GET /api/v1/kernels/{hash}`: the package's canonical bytes (their SHA-256 is the hash).
pub(super) async fn files(
    State(s): State<Shared>,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    let hash = hash_of(&hash)?;
    let store = s.store.clone();
    let bytes = blocking(move || store.package_files(&hash))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no kernel package with that hash"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            // Immutable: a package's bytes never change under its hash.
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response())
}

/// The body of an operator's approve or suspend: why (shown to the package's scientist).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Decision {
    #[serde(default)]
    reason: Option<String>,
}

async fn decide(
    s: Shared,
    op: Scientist,
    hash: String,
    body: axum::body::Bytes,
    action: PackageAction,
) -> Result<Json<protocol::status::PackageStatus>, ApiError> {
    let hash = hash_of(&hash)?;
    let d: Decision = if body.iter().all(u8::is_ascii_whitespace) {
        Decision::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::field("reason", e.to_string()))?
    };
    let reason = match d.reason.as_deref().map(str::trim) {
        Some(r) if r.chars().count() > 500 => {
            return Err(ApiError::field("reason", "at most 500 characters"));
        }
        Some(r) if !r.is_empty() => format!("{r} ({})", op.0.name),
        _ => match action {
            PackageAction::Approve => format!("approved by {}", op.0.name),
            PackageAction::Suspend => format!("suspended by {}", op.0.name),
        },
    };
    let store = s.store.clone();
    let status = blocking(move || store.set_package(&hash, action, &reason, now())).await?;
    tracing::info!(package = %status.kernel, status = %status.status, "kernel package status set");
    Ok(Json(status))
}

/// `POST /api/v1/kernels/{hash}/approve` (operator): its units are dispatched from now on.
pub(super) async fn approve(
    State(s): State<Shared>,
    _op: Operator,
    key: Scientist,
    Path(hash): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<protocol::status::PackageStatus>, ApiError> {
    decide(s, key, hash, body, PackageAction::Approve).await
}

/// `POST /api/v1/kernels/{hash}/suspend` (operator): its units are held.
pub(super) async fn suspend(
    State(s): State<Shared>,
    _op: Operator,
    key: Scientist,
    Path(hash): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<protocol::status::PackageStatus>, ApiError> {
    decide(s, key, hash, body, PackageAction::Suspend).await
}
