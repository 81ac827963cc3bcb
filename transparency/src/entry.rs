//! A log entry: the receipt for one decision about a unit's result.

use protocol::policy::Replication;
use protocol::{Checkpoint, Digest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The unit's result became canonical.
    Accepted,
    /// A canonical result was undone (backtracking after a volunteer was caught); the entry it
    /// supersedes no longer stands.
    Revoked,
}

/// One replica that agreed with the accepted result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreeing {
    /// The volunteer's anonymised id (as in provenance and the leaderboard).
    pub volunteer: String,
    pub digest: Digest,
}

/// Why the result was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub replication: Replication,
    /// Agreeing successes the policy asks for (quorum and adaptive modes).
    pub min_quorum: u32,
    /// Credibility mode: the batch's bound on the probability that a result is wrong.
    pub target_error: Option<f64>,
    /// Credibility mode, accepted by the volunteers' credibility: the probability that this
    /// result is wrong that the agreeing replicas reached (at most `target_error`).
    pub error_bound: Option<f64>,
    /// The coordinator's own recomputation: `none`, `pending`, `ready` (it matched, or the
    /// result would not be canonical).
    pub spot_check: String,
    /// Challenges of this unit's replicas, by outcome at the time of the entry.
    pub challenges_passed: u32,
    pub challenges_failed: u32,
}

/// A receipt. Serialised as JSON with its fields in this order (the bytes the log hashes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub kind: EntryKind,
    pub unit: i64,
    pub batch: i64,
    pub kernel: String,
    pub kernel_version: u32,
    /// SHA-256 of the unit's parameters as canonical JSON ([`canonical_json`]).
    pub params_sha256: Digest,
    /// The accepted (or, for `revoked`, the withdrawn) output digest.
    pub digest: Digest,
    /// SHA-256 of the result's summary (the observables scientists use: results, CSV,
    /// aggregates, plots) as canonical JSON ([`canonical_json`]); none when the result has no
    /// summary. A bundle presents the summary's exact bytes beside the receipt.
    #[serde(default)]
    pub summary_sha256: Option<Digest>,
    /// The canonical replica's checkpoint digests.
    pub checkpoints: Vec<Checkpoint>,
    /// The replicas that agreed.
    pub replicas: Vec<Agreeing>,
    pub evidence: Evidence,
    /// `revoked`: why.
    pub reason: Option<String>,
    /// The index of the unit's previous entry, which this one replaces.
    pub supersedes: Option<u64>,
    /// Unix seconds of the decision.
    pub time: i64,
}

impl LogEntry {
    /// The bytes the log stores and hashes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and lists: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The first entry about a batch, queued when it is submitted: what it asked for and which
/// units it has, so that a bundle that leaves a unit out, or presents other parameters, is
/// caught. Serialised like a receipt, its fields in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchCommitment {
    /// Always `"batch"` (a receipt's `kind` is `accepted` or `revoked`).
    pub kind: String,
    pub batch: i64,
    pub kernel: String,
    /// SHA-256 of the batch's spec (name, description, kernel, policy, axes, spot-check rate)
    /// as canonical JSON; a bundle carries the spec itself.
    pub spec_sha256: Digest,
    /// How many units the batch has.
    pub units: u64,
    /// [`units_hash`] of its units.
    pub units_sha256: Digest,
    /// Unix seconds of the submission.
    pub time: i64,
}

impl BatchCommitment {
    pub const KIND: &str = "batch";

    /// The commitment of a batch with these units: (unit id, params).
    pub fn new(batch: i64, kernel: &str, spec: &Value, units: &[(i64, Digest)], time: i64) -> Self {
        Self {
            kind: Self::KIND.to_owned(),
            batch,
            kernel: kernel.to_owned(),
            spec_sha256: Digest::of(canonical_json(spec).as_bytes()),
            units: units.len() as u64,
            units_sha256: units_hash(units),
            time,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A commitment, or None for anything else (a receipt, or not JSON).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|c| c.kind == Self::KIND)
    }
}

/// SHA-256 of a batch's units, (unit id, SHA-256 of its params) in the order of their ids,
/// as the canonical JSON `[[id,"hex"],...]`.
pub fn units_hash(units: &[(i64, Digest)]) -> Digest {
    use sha2::Digest as _;
    let mut sorted: Vec<&(i64, Digest)> = units.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    // Those bytes, streamed (a batch may have 10⁶ units).
    let mut h = sha2::Sha256::new();
    h.update(b"[");
    for (i, (id, d)) in sorted.into_iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        h.update(format!("[{id},\"{}\"]", d.to_hex()).as_bytes());
    }
    h.update(b"]");
    Digest(h.finalize().into())
}

/// The hash a receipt gives a summary (the JSON text the coordinator stored).
pub fn summary_hash(summary: &Value) -> Digest {
    Digest::of(&canonical_bytes(summary))
}

/// A receipt for tests: unit `unit` of batch 1 (params `{"seed": unit}`), accepted or revoked
/// with `digest` on the word of one volunteer, no summary.
#[cfg(test)]
pub(crate) fn example(
    kind: EntryKind,
    unit: i64,
    digest: Digest,
    supersedes: Option<u64>,
) -> LogEntry {
    LogEntry {
        kind,
        unit,
        batch: 1,
        kernel: "ising2d".into(),
        kernel_version: 1,
        params_sha256: params_hash(&serde_json::json!({"seed": unit})),
        digest,
        summary_sha256: None,
        checkpoints: vec![],
        replicas: vec![Agreeing {
            volunteer: "v".into(),
            digest,
        }],
        evidence: Evidence {
            replication: Replication::Quorum,
            min_quorum: 2,
            target_error: None,
            error_bound: None,
            spot_check: "none".into(),
            challenges_passed: 0,
            challenges_failed: 0,
        },
        reason: None,
        supersedes,
        time: 0,
    }
}

/// JSON with object keys sorted at every level and no insignificant whitespace, so equal
/// values give equal bytes whatever order they were written in.
pub fn canonical_json(v: &Value) -> String {
    // JSON is UTF-8: the conversion cannot fail.
    String::from_utf8(canonical_bytes(v)).unwrap_or_default()
}

fn canonical_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing a string or a number into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// The params hash a log entry carries.
pub fn params_hash(params: &Value) -> Digest {
    Digest::of(&canonical_bytes(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": 0.5}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":0.5,"y":[1,{"p":1,"q":2}]},"b":1}"#
        );
        let b: Value =
            serde_json::from_str(r#"{"a":{"y":[1,{"p":1,"q":2}],"x":0.5},"b":1}"#).unwrap();
        assert_eq!(params_hash(&a), params_hash(&b));
        assert_ne!(params_hash(&a), params_hash(&json!({"b": 2})));
    }

    #[test]
    fn an_entry_round_trips_through_its_bytes() {
        let e = LogEntry {
            kind: EntryKind::Accepted,
            unit: 7,
            batch: 1,
            kernel: "ising2d".into(),
            kernel_version: 2,
            params_sha256: params_hash(&json!({"L": 8})),
            digest: Digest::of(b"out"),
            summary_sha256: Some(summary_hash(&json!({"m": 0.5}))),
            checkpoints: vec![Checkpoint {
                step: 10,
                digest: Digest::of(b"s"),
            }],
            replicas: vec![Agreeing {
                volunteer: "v-1".into(),
                digest: Digest::of(b"out"),
            }],
            evidence: Evidence {
                replication: Replication::Quorum,
                min_quorum: 2,
                target_error: None,
                error_bound: None,
                spot_check: "none".into(),
                challenges_passed: 0,
                challenges_failed: 0,
            },
            reason: None,
            supersedes: None,
            time: 1,
        };
        let bytes = e.to_bytes();
        assert!(bytes.starts_with(br#"{"kind":"accepted","unit":7,"#));
        assert_eq!(LogEntry::parse(&bytes).unwrap(), e);
        assert_eq!(
            BatchCommitment::parse(&bytes),
            None,
            "a receipt is no commitment"
        );
    }

    #[test]
    fn a_commitment_binds_its_units_in_any_order() {
        let p = |s: u64| params_hash(&json!({"seed": s}));
        let spec = json!({"name": "sweep", "kernel": "ising2d"});
        let c = BatchCommitment::new(4, "ising2d", &spec, &[(11, p(1)), (10, p(0))], 9);
        let bytes = c.to_bytes();
        assert!(bytes.starts_with(br#"{"kind":"batch","batch":4,"#));
        assert_eq!(BatchCommitment::parse(&bytes), Some(c.clone()));
        assert!(
            LogEntry::parse(&bytes).is_err(),
            "a commitment is no receipt"
        );
        assert_eq!(c.units, 2);
        assert_eq!(c.units_sha256, units_hash(&[(10, p(0)), (11, p(1))]));
        assert_ne!(c.units_sha256, units_hash(&[(10, p(0))]));
        assert_ne!(c.units_sha256, units_hash(&[(10, p(0)), (11, p(2))]));
        assert_ne!(c.units_sha256, units_hash(&[(10, p(1)), (11, p(0))]));
        // Streamed, it is the hash of the canonical JSON it is defined as.
        let list = json!([[10, p(0).to_hex()], [11, p(1).to_hex()]]);
        assert_eq!(c.units_sha256, Digest::of(canonical_json(&list).as_bytes()));
    }
}
