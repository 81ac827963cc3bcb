//! What scientists read back: batch status, results (JSON, CSV), aggregates per swept point,
//! a unit's provenance.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

pub(super) async fn batch_status(
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
pub(super) struct ResultsQuery {
    #[serde(default)]
    format: Option<String>,
}

pub(super) async fn batch_results(
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
        protocol::status::results_csv(&rows),
    )
        .into_response())
}

pub(super) async fn unit(
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

pub(super) async fn list_batches(
    State(s): State<Shared>,
    sci: Scientist,
) -> Result<Json<protocol::status::BatchList>, ApiError> {
    let store = s.store.clone();
    let viewer = sci.viewer();
    let batches = blocking(move || store.list_batches(viewer)).await?;
    Ok(Json(protocol::status::BatchList { batches }))
}

pub(super) async fn batch_aggregate(
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
    let mut out = shaders::aggregate(&status.kernel, &status.axes, &rows);
    out["batch_id"] = json!(id);
    out["kernel"] = json!(status.kernel);
    Ok(Json(out))
}
