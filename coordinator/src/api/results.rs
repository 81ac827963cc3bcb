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

/// Per swept point (every axis but `seed`): how many canonical units, and the mean and
/// standard error across them of every numeric summary observable. A point of one unit takes
/// the unit's own error estimate where `kernel` gives one ([`shaders::Observable::error`]).
pub fn aggregate(kernel: &str, axes: &[String], rows: &[crate::store::UnitResult]) -> Value {
    let own_error: Vec<(&str, &str)> = shaders::kernels()
        .into_iter()
        .filter(|k| k.name == kernel)
        .flat_map(|k| k.observables.iter())
        .filter_map(|o| Some((o.key, o.error?)))
        .collect();
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
                    let own = own_error
                        .iter()
                        .find(|(k, _)| k == key)
                        .and_then(|(_, e)| sums[0].get(*e)?.as_f64());
                    let e = if xs.len() > 1 {
                        json!(
                            (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) / n)
                                .sqrt()
                        )
                    } else {
                        own.map_or(Value::Null, |e| json!(e))
                    };
                    sem.insert(key.clone(), e);
                }
            }
            json!({ "values": values, "n": sums.len(), "mean": mean, "sem": sem })
        })
        .collect();
    json!({ "axes": group_axes, "points": points })
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
    let mut out = aggregate(&status.kernel, &status.axes, &rows);
    out["batch_id"] = json!(id);
    out["kernel"] = json!(status.kernel);
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::aggregate;
    use crate::lifecycle::UnitState;
    use crate::store::UnitResult;
    use serde_json::{Value, json};

    fn unit(beta: f64, seed: u64, abs_m: f64) -> UnitResult {
        UnitResult {
            unit_id: seed as i64,
            params: json!({"beta": beta, "seed": seed}),
            state: UnitState::Canonical,
            digest: None,
            summary: Some(json!({"abs_m": abs_m, "abs_m_err": 0.01, "binder": 0.5})),
            fail_reason: None,
            log_index: None,
        }
    }

    #[test]
    fn error_bars_are_the_spread_of_seeds_or_a_lone_units_own_estimate() {
        let axes = ["beta".to_owned(), "seed".to_owned()];
        let rows = [unit(0.3, 1, 0.2), unit(0.3, 2, 0.4), unit(0.5, 3, 0.9)];
        let agg = aggregate("ising2d", &axes, &rows);
        let p = &agg["points"];
        assert_eq!(agg["axes"], json!(["beta"]));
        assert_eq!((p[0]["n"].clone(), p[1]["n"].clone()), (json!(2), json!(1)));
        // Two seeds: the standard error of their mean, 0.1.
        assert!((p[0]["mean"]["abs_m"].as_f64().unwrap() - 0.3).abs() < 1e-12);
        assert!((p[0]["sem"]["abs_m"].as_f64().unwrap() - 0.1).abs() < 1e-12);
        // One unit: its own binned error where the kernel has one, none where it has not.
        assert_eq!(p[1]["sem"]["abs_m"], 0.01);
        assert_eq!(p[1]["sem"]["binder"], Value::Null);
    }
}
