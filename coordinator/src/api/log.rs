//! The transparency log over HTTP: the newest checkpoint with its cosignatures and the tree as
//! C2SP `tlog-tiles` under `/log/` (static, cacheable paths), and under `/api/v1/log` what
//! witnesses and scientists need besides: the log's keys, consistency proofs, cosignatures
//! handed back, and a batch's proof bundle.

use super::Body as JsonBody;
use super::{ApiError, Scientist, Shared, blocking};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use transparency::hash_to_b64;

/// `GET /log/checkpoint`: the newest signed checkpoint, with the witnesses' cosignatures.
pub(super) async fn checkpoint(State(s): State<Shared>) -> Result<Response, ApiError> {
    let store = s.store.clone();
    match blocking(move || store.log_checkpoint()).await? {
        Some(note) => Ok((
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            note,
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "the log has no checkpoint yet (its sequencer signs an empty one within moments of the first start)",
        )),
    }
}

/// `GET /log/tile/<L>/<N>[.p/<W>]` and `/log/tile/entries/<N>[.p/<W>]` (C2SP tlog-tiles).
/// A tile's contents never change, so every one is cacheable for good.
pub(super) async fn tile(
    State(s): State<Shared>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such tile in this log");
    let t = transparency::tile_from_path(&path).ok_or_else(not_found)?;
    let store = s.store.clone();
    let data = blocking(move || {
        if t.is_data() {
            store.log_entry_bundle(t.level_index(), t.width())
        } else {
            store.log_tile(t.level(), t.level_index(), t.width())
        }
    })
    .await?
    .ok_or_else(not_found)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        data,
    )
        .into_response())
}

/// `GET /api/v1/log`: the log's origin, public key, witnesses and newest checkpoint's size.
pub(super) async fn info(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let (note, queued) =
        blocking(move || Ok((store.log_checkpoint()?, store.log_queue_len()?))).await?;
    let size = note
        .as_deref()
        .and_then(|n| n.lines().nth(1))
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Json(json!({
        "origin": s.log_key.name(),
        "key": s.log_key.verifier_key(),
        "witnesses": s.witnesses.iter().map(|w| w.to_text()).collect::<Vec<_>>(),
        "size": size,
        "queued": queued,
        "checkpoint": "/log/checkpoint",
        "tiles": "/log/tile/",
    })))
}

#[derive(Deserialize)]
pub(super) struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /api/v1/log/consistency?from=M&to=N`: the proof that the tree of N entries extends
/// the tree of M (RFC 6962), as base64 hashes.
pub(super) async fn consistency(
    State(s): State<Shared>,
    q: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::field("from", format!("from and to: {e}")))?;
    let store = s.store.clone();
    let proof = blocking(move || store.log_consistency(q.from, q.to)).await?;
    Ok(Json(json!({
        "from": q.from,
        "to": q.to,
        "proof": proof.iter().map(hash_to_b64).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CosignatureRequest {
    /// The size of the checkpoint cosigned.
    size: u64,
    /// The cosignature line, `— <witness name> <base64>`.
    cosignature: String,
}

/// `POST /api/v1/log/cosignatures`: a witness hands back its cosignature of a checkpoint. The
/// signature is the credential: only a configured witness's valid cosignature is kept.
pub(super) async fn add_cosignature(
    State(s): State<Shared>,
    JsonBody(req): JsonBody<CosignatureRequest>,
) -> Result<Json<Value>, ApiError> {
    if req.cosignature.len() > 1000 {
        return Err(ApiError::field("cosignature", "at most 1000 bytes"));
    }
    let state = s.clone();
    let witness = blocking(move || {
        state
            .store
            .add_cosignature(req.size, &req.cosignature, &state.witnesses, super::now())
    })
    .await?;
    Ok(Json(json!({ "witness": witness, "size": req.size })))
}

#[derive(Deserialize)]
pub(super) struct ProofsQuery {
    /// Cosignatures the checkpoint must carry (default: every configured witness's).
    witnesses: Option<usize>,
}

/// `GET /api/v1/batches/{id}/proofs`: the batch's results with their receipts and inclusion
/// proofs against the newest checkpoint with enough cosignatures (`qg results --proofs`).
pub(super) async fn batch_proofs(
    State(s): State<Shared>,
    sci: Scientist,
    Path(id): Path<i64>,
    q: Result<Query<ProofsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::field("witnesses", e.to_string()))?;
    let needed = q.witnesses.unwrap_or(s.witnesses.len());
    if needed > s.witnesses.len() {
        return Err(ApiError::field(
            "witnesses",
            format!(
                "this log has {} witness(es); cannot ask for {needed} cosignatures",
                s.witnesses.len()
            ),
        ));
    }
    let store = s.store.clone();
    let viewer = sci.viewer();
    let proofs = blocking(move || store.batch_proofs(id, viewer, needed)).await?;
    let mut body = serde_json::to_value(&proofs.bundle)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Value::Object(m) = &mut body {
        m.insert("pending".into(), json!(proofs.pending));
    }
    Ok(Json(body).into_response())
}
