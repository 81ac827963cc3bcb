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

/// JSON with object keys sorted at every level and no insignificant whitespace, so equal
/// values give equal bytes whatever order they were written in.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The params hash a log entry carries.
pub fn params_hash(params: &Value) -> Digest {
    Digest::of(canonical_json(params).as_bytes())
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
    }
}
