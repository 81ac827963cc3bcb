//! The science page's verifier: a batch's proof bundle checked in the browser by
//! [`transparency::verify_bundle`], the code `qg verify` runs, compiled to wasm (its own small
//! module, apart from the volunteer's). It checks the log's signature under the key the
//! scientist pinned, cosignatures from the witnesses pinned, each receipt's inclusion, that
//! each presented result is its unit's current receipt's, summaries against the receipts that
//! bind them and params and unit count against the batch's commitment. What it returns lists,
//! for each verified unit, the params and summary that were verified, and their aggregate per
//! swept point (`protocol::status::aggregate`, the coordinator's own): the page plots and
//! tabulates only those.

use protocol::policy::UnitState;
use protocol::status::{UnitResult, aggregate};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use transparency::{ProofBundle, VerifyOptions, verify_bundle};
use wasm_bindgen::prelude::*;

/// What the page is told.
#[derive(Debug, Serialize)]
pub struct PageReport {
    /// No problem at all.
    pub ok: bool,
    /// The checkpoint checked against (its origin and size), and the pinned witnesses that
    /// cosigned it, when its signature verified.
    pub origin: Option<String>,
    pub size: Option<u64>,
    pub witnesses: Vec<String>,
    /// Canonical units presented.
    pub canonical: usize,
    /// Each verified unit: what the receipts and the commitment bind.
    pub verified: BTreeMap<i64, VerifiedUnit>,
    pub problems: Vec<PageProblem>,
    pub notes: Vec<String>,
    /// The verified units' aggregate per swept point (mean and standard error of each
    /// observable), as the coordinator's `/aggregate` computes it from all of them.
    pub aggregate: Value,
}

#[derive(Debug, Serialize)]
pub struct VerifiedUnit {
    pub params: Value,
    pub summary: Option<Value>,
    pub digest: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PageProblem {
    pub unit: Option<i64>,
    pub message: String,
}

/// How to aggregate: the batch's swept axes, and which observables' errors a lone unit gives
/// (observable key, error key).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Axes {
    pub axes: Vec<String>,
    #[serde(default)]
    pub own_error: Vec<(String, String)>,
}

/// Verifies `bundle` (a proof bundle's JSON) with the pinned `log_key`, `witnesses` (keys, one
/// per line) and the cosignatures needed from them; aggregates the verified units along `axes`.
pub fn check(
    bundle: &str,
    log_key: &str,
    witnesses: &str,
    min_witnesses: usize,
    axes: &Axes,
) -> PageReport {
    let mut report = PageReport {
        ok: false,
        origin: None,
        size: None,
        witnesses: Vec::new(),
        canonical: 0,
        verified: BTreeMap::new(),
        problems: Vec::new(),
        notes: Vec::new(),
        aggregate: Value::Null,
    };
    let bundle: ProofBundle = match serde_json::from_str(bundle) {
        Ok(b) => b,
        Err(e) => {
            report.problems.push(PageProblem {
                unit: None,
                message: format!("not a proof bundle: {e}"),
            });
            return report;
        }
    };
    let log_key = log_key.trim();
    let opts = VerifyOptions {
        log_key: (!log_key.is_empty()).then(|| log_key.to_owned()),
        witnesses: witnesses
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        min_witnesses,
    };
    let r = verify_bundle(&bundle, &opts);
    report.canonical = bundle
        .units
        .iter()
        .filter(|u| u.state == UnitState::Canonical)
        .count();
    if let Some(cp) = &r.checkpoint {
        report.origin = Some(cp.checkpoint.origin().to_owned());
        report.size = Some(cp.checkpoint.size());
        report.witnesses = cp.witnesses.clone();
    }
    for id in &r.verified {
        if let Some(u) = bundle.units.iter().find(|u| u.unit == *id) {
            report.verified.insert(
                *id,
                VerifiedUnit {
                    params: u.params.clone(),
                    summary: u.summary_value(),
                    digest: u.digest.map(|d| d.to_string()),
                },
            );
        }
    }
    report.problems = r
        .problems
        .into_iter()
        .map(|p| PageProblem {
            unit: p.unit,
            message: p.message,
        })
        .collect();
    report.notes = r.notes;
    let rows: Vec<UnitResult> = report
        .verified
        .iter()
        .map(|(id, u)| UnitResult {
            unit_id: *id,
            params: u.params.clone(),
            state: UnitState::Canonical,
            digest: None,
            summary: u.summary.clone(),
            fail_reason: None,
            log_index: None,
        })
        .collect();
    let own_error: Vec<(&str, &str)> = axes
        .own_error
        .iter()
        .map(|(k, e)| (k.as_str(), e.as_str()))
        .collect();
    report.aggregate = aggregate(&own_error, &axes.axes, &rows);
    report.ok = report.problems.is_empty() && r.checkpoint.is_some();
    report
}

/// [`check`] for JavaScript: `axes` is [`Axes`] as JSON; the report as JSON.
#[wasm_bindgen]
pub fn verify(
    bundle: &str,
    log_key: &str,
    witnesses: &str,
    min_witnesses: u32,
    axes: &str,
) -> String {
    let axes: Axes = serde_json::from_str(axes).unwrap_or_default();
    let report = check(bundle, log_key, witnesses, min_witnesses as usize, &axes);
    serde_json::to_string(&report).unwrap_or_else(|e| {
        format!(r#"{{"ok":false,"problems":[{{"unit":null,"message":"{e}"}}]}}"#)
    })
}
