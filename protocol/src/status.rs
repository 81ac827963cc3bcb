//! What the coordinator's read endpoints answer: a batch's status and results, a unit's
//! provenance, a volunteer's record, the leaderboard, the operator's dashboard. Shared with
//! `qg` and the pages, which read them typed.

use crate::Checkpoint;
use crate::Digest;
use crate::api::AdapterInfo;
use crate::policy::{Policy, ReplicaState, UnitState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchStatus {
    pub batch_id: i64,
    pub name: String,
    /// The scientist's paragraph for volunteers.
    #[serde(default)]
    pub description: Option<String>,
    pub kernel: String,
    /// The kernel version the batch was submitted for.
    pub kernel_version: u32,
    /// This coordinator no longer runs that version: its open units are not handed out.
    pub retired: bool,
    pub created_at: i64,
    pub units: u64,
    pub by_state: BTreeMap<String, u64>,
    pub done: bool,
    pub policy: Policy,
    pub spot_check_rate: f64,
    pub axes: Vec<String>,
    /// When its owner cancelled it (its unsettled units failed; settled results stand).
    #[serde(default)]
    pub cancelled_at: Option<i64>,
    /// How fast its units settle lately, and when the rest should be done at that pace.
    #[serde(default)]
    pub pace: Option<Pace>,
    /// The batch's kernel package, if it is one: its status says whether its units are
    /// dispatched, and why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageStatus>,
}

/// A scientist's kernel package as this coordinator holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackageStatus {
    /// `name@hash`, as batches name it.
    pub kernel: String,
    pub hash: crate::Digest,
    pub name: String,
    pub author: String,
    /// `pending` (until an operator approves it), `approved` (dispatched) or `suspended`.
    pub status: String,
    /// Why it is suspended (or who changed its status last).
    #[serde(default)]
    pub reason: Option<String>,
    pub changed_at: i64,
    /// Distinct volunteers with a record that reported an error with it.
    #[serde(default)]
    pub error_volunteers: u64,
    /// Pairs of replicas from one adapter class compared, and how many disagreed (a digest
    /// package's nondeterminism).
    #[serde(default)]
    pub class_pairs: u64,
    #[serde(default)]
    pub class_disagreements: u64,
}

/// A batch's measured throughput (over its last ten minutes of settling units).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Pace {
    pub units_per_s: f64,
    /// The kernel's work units (spin updates, site visits, pair interactions) per second.
    pub work_per_s: f64,
    /// Unix seconds by which every unit should be settled at this pace (None: all are).
    pub eta_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnitResult {
    pub unit_id: i64,
    pub params: Value,
    pub state: UnitState,
    pub digest: Option<Digest>,
    pub summary: Option<Value>,
    pub fail_reason: Option<String>,
    /// The index of the unit's latest entry in the transparency log (its receipt), once the
    /// sequencer has appended it.
    #[serde(default)]
    pub log_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaProvenance {
    pub replica_id: i64,
    /// An anonymised volunteer id (stable per volunteer, not the database id).
    pub volunteer: String,
    pub state: ReplicaState,
    pub digest: Option<Digest>,
    pub checkpoints: Vec<Checkpoint>,
    pub adapter: Option<AdapterInfo>,
    pub sent_at: i64,
    pub reported_at: Option<i64>,
    pub late: bool,
    pub error: Option<String>,
    /// For a replica that disagrees with the canonical one: the first checkpoint step at
    /// which their state digests differ.
    pub diverged_at_step: Option<u64>,
    /// A ringer: a replica of this unit sent after it was settled, to check the volunteer.
    pub ringer: bool,
    /// A challenge of this replica: its status and the recomputed segment, e.g.
    /// "passed 8..12".
    pub challenge: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpotCheck {
    pub sampled: bool,
    /// "none", "pending" or "ready".
    pub state: String,
    pub expected_digest: Option<Digest>,
    /// Whether the canonical result matched the coordinator's own answer.
    pub passed: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnitProvenance {
    pub unit_id: i64,
    pub batch_id: i64,
    pub kernel: String,
    pub params: Value,
    pub state: UnitState,
    pub canonical_digest: Option<Digest>,
    pub canonical_replica: Option<i64>,
    pub summary: Option<Value>,
    pub fail_reason: Option<String>,
    pub policy: Policy,
    pub spot_check: SpotCheck,
    pub replicas: Vec<ReplicaProvenance>,
    /// The command that recomputes this unit locally with the CPU reference.
    pub reproduce: String,
}

/// A volunteer's own record, as the volunteer page shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolunteerStats {
    pub volunteer_id: i64,
    pub nickname: Option<String>,
    pub valid: u64,
    pub invalid: u64,
    pub errors: u64,
    pub in_progress: u64,
    /// Granted only for valid replicas, from the kernel's cost model.
    pub credit: f64,
    /// 1 = most credit.
    pub rank: u64,
    /// The volunteer's anonymised id: how provenance and log entries name it.
    #[serde(default)]
    pub anon_id: String,
    /// Its latest reported results, newest first.
    #[serde(default)]
    pub recent: Vec<RecentResult>,
}

/// One of a volunteer's reported results, as its page lists them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecentResult {
    pub unit_id: i64,
    pub batch_id: i64,
    pub kernel: String,
    pub state: ReplicaState,
    pub reported_at: Option<i64>,
    /// For a result that counted in its unit's accepted answer: the index of that receipt in
    /// the transparency log (it names this volunteer among the agreeing replicas).
    pub log_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaderboardRow {
    pub rank: u64,
    /// The nickname, or an anonymised id for volunteers without one.
    pub name: String,
    pub credit: f64,
    pub valid: u64,
}

/// A volunteer as operators see it (anonymised).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostRow {
    pub volunteer: String,
    pub nickname: Option<String>,
    pub valid: u64,
    pub invalid: u64,
    pub errors: u64,
    pub spot_failed: u64,
    /// valid / (valid + invalid + errors); None before any judged replica.
    pub reliability: Option<f64>,
    /// Checks passed since its last invalid result (spot-checks, ringers, confirmations).
    pub checks: u64,
    /// 1 − doubt: the probability its next result alone is right (Sarmenta's bound, with
    /// the default assumed saboteur fraction).
    pub credibility: f64,
    pub last_seen: i64,
    pub blacklisted: bool,
}

/// An adapter class (client version, backend, vendor, device type) as operators see it: a
/// driver or client bug makes every volunteer of a class wrong alike, which voting cannot see.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassRow {
    /// "client/backend/vendor/device type".
    pub class: String,
    /// Checks its volunteers passed and failed (spot-checks, ringers, challenges).
    pub passed: u64,
    pub failed: u64,
    /// The doubt each of its replicas carries besides its volunteer's: 0 unless the class
    /// fails more of its checks than saboteurs alone explain (with the default assumed
    /// saboteur fraction).
    pub doubt: f64,
}

/// A unit an operator should look at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProblemUnit {
    pub unit_id: i64,
    pub batch_id: i64,
    pub state: UnitState,
    pub reason: Option<String>,
}

/// Everything the operator dashboard shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dashboard {
    pub status: Status,
    /// valid / (valid + invalid) over all judged replicas.
    pub agreement_rate: Option<f64>,
    pub spot_check_failures: u64,
    pub hosts: Vec<HostRow>,
    /// Adapter classes, the most failed checks first.
    pub classes: Vec<ClassRow>,
    pub problems: Vec<ProblemUnit>,
    /// The transparency log's size (its newest checkpoint's).
    #[serde(default)]
    pub log_size: u64,
    /// Each configured witness: the newest checkpoint it cosigned, and when.
    #[serde(default)]
    pub witnesses: Vec<WitnessRow>,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WitnessRow {
    pub name: String,
    /// None: it has cosigned nothing yet.
    pub size: Option<u64>,
    /// Unix seconds of that cosignature.
    pub cosigned_at: Option<i64>,
    /// Where the log pushes its checkpoints to it (C2SP tlog-witness); none for a witness that
    /// pulls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why the last push failed (the witness's status and words, or unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds since when pushes have been failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub units: BTreeMap<String, u64>,
    pub replicas: BTreeMap<String, u64>,
    pub volunteers: u64,
    pub batches: u64,
    /// Volunteers caught by a spot-check, ringer or challenge.
    pub blacklisted: u64,
    /// Ringer replicas ever issued.
    pub ringers: u64,
    /// Adapter classes doubted as a whole (failing more checks than saboteurs explain).
    pub doubted_classes: u64,
    /// Challenges by status: open, ready, passed, failed, expired.
    pub challenges: BTreeMap<String, u64>,
}

/// `GET /api/v1/batches`: the caller's batches (all, for an operator), newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchList {
    pub batches: Vec<BatchStatus>,
}

/// One row per unit: id, state, digest, then every param and summary field (columns are the
/// union over units, sorted), then the failure reason.
pub fn results_csv(rows: &[UnitResult]) -> String {
    use std::collections::BTreeSet;
    let keys = |f: &dyn Fn(&UnitResult) -> Option<&Value>| -> Vec<String> {
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

/// Per swept point (every axis but `seed`): how many canonical units, and the mean and
/// standard error across them of every numeric summary observable. A point of one unit takes
/// the unit's own error estimate where the kernel gives one: `own_error` pairs an observable's
/// key with its error's.
pub fn aggregate(own_error: &[(&str, &str)], axes: &[String], rows: &[UnitResult]) -> Value {
    let group_axes: Vec<&String> = axes.iter().filter(|a| a.as_str() != "seed").collect();
    let mut order: Vec<String> = Vec::new();
    let mut groups: std::collections::HashMap<String, (Value, Vec<&Value>)> = Default::default();
    for r in rows {
        if r.state != UnitState::Canonical {
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

#[cfg(test)]
mod tests {
    use super::{UnitResult, aggregate};
    use crate::policy::UnitState;
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
        let agg = aggregate(&[("abs_m", "abs_m_err")], &axes, &rows);
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
