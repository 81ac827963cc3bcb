//! What a monitor checks of a log, entry by entry from entry 0: the rules a coordinator's own
//! signer could still break unseen by witnesses (a witness checks only that the tree grows).
//! Each unit's entries form one chain (`supersedes` names the unit's latest entry), a result is
//! replaced only after a revocation (an acceptance while one stands may only restate it, digest
//! and summary, as the coordinator does when a backtrack leaves it standing on other replicas),
//! a revocation withdraws the result that stands, and every receipt is of a batch committed
//! before it, which names no more units than committed.

use crate::{BatchCommitment, EntryKind, LogEntry};
use protocol::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A unit's latest entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitHead {
    pub batch: i64,
    pub index: u64,
    pub kind: EntryKind,
    pub digest: Digest,
    #[serde(default)]
    pub summary_sha256: Option<Digest>,
}

/// A committed batch, and the units its receipts have named so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSeen {
    pub index: u64,
    pub units: u64,
    pub named: BTreeSet<i64>,
}

/// Everything a monitor keeps between looks: entries checked so far and what they established.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorState {
    /// Entries checked: the next one to check is at this index.
    pub next: u64,
    pub units: BTreeMap<i64, UnitHead>,
    pub batches: BTreeMap<i64, BatchSeen>,
}

/// A rule broken, naming the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log entry #{index}: {what}")]
pub struct Anomaly {
    pub index: u64,
    pub what: String,
}

impl MonitorState {
    /// Checks the entry at `index` (the next one) against the rules and what came before;
    /// on success it is part of the state. On an anomaly the state is unchanged.
    pub fn apply(&mut self, index: u64, bytes: &[u8]) -> Result<(), Anomaly> {
        let bad = |what: String| Anomaly { index, what };
        if index != self.next {
            return Err(bad(format!("expected entry #{} next", self.next)));
        }
        if let Some(c) = BatchCommitment::parse(bytes) {
            if let Some(b) = self.batches.get(&c.batch) {
                return Err(bad(format!(
                    "batch {} is committed again (first in #{})",
                    c.batch, b.index
                )));
            }
            self.batches.insert(
                c.batch,
                BatchSeen {
                    index,
                    units: c.units,
                    named: BTreeSet::new(),
                },
            );
            self.next += 1;
            return Ok(());
        }
        let e = LogEntry::parse(bytes)
            .map_err(|err| bad(format!("neither a receipt nor a batch's commitment: {err}")))?;
        let Some(batch) = self.batches.get(&e.batch) else {
            return Err(bad(format!(
                "a receipt for unit {} of batch {}, which no entry before it commits",
                e.unit, e.batch
            )));
        };
        let head = self.units.get(&e.unit);
        if let Some(h) = head
            && h.batch != e.batch
        {
            return Err(bad(format!(
                "unit {} is of batch {} (#{}), not of batch {}",
                e.unit, h.batch, h.index, e.batch
            )));
        }
        if e.supersedes != head.map(|h| h.index) {
            return Err(bad(match (e.supersedes, head) {
                (Some(s), Some(h)) => format!(
                    "supersedes #{s}, but unit {}'s latest entry is #{}",
                    e.unit, h.index
                ),
                (Some(s), None) => {
                    format!("supersedes #{s}, but unit {} has no entry before", e.unit)
                }
                (None, Some(h)) => format!(
                    "claims to be unit {}'s first entry, after #{}",
                    e.unit, h.index
                ),
                (None, None) => unreachable!("equal"),
            }));
        }
        match (e.kind, head) {
            (EntryKind::Accepted, Some(h))
                if h.kind == EntryKind::Accepted
                    && (h.digest != e.digest || h.summary_sha256 != e.summary_sha256) =>
            {
                return Err(bad(format!(
                    "unit {} is accepted again ({}) while #{} stands: a re-acceptance needs a \
                     revocation before it",
                    e.unit, e.digest, h.index
                )));
            }
            (EntryKind::Revoked, None) => {
                return Err(bad(format!("revokes unit {}, which has no result", e.unit)));
            }
            (EntryKind::Revoked, Some(h)) if h.kind == EntryKind::Revoked => {
                return Err(bad(format!(
                    "revokes unit {} again (revoked in #{})",
                    e.unit, h.index
                )));
            }
            (EntryKind::Revoked, Some(h)) if h.digest != e.digest => {
                return Err(bad(format!(
                    "revokes {} of unit {}, but #{} accepted {}",
                    e.digest, e.unit, h.index, h.digest
                )));
            }
            _ => {}
        }
        if !batch.named.contains(&e.unit) && batch.named.len() as u64 >= batch.units {
            return Err(bad(format!(
                "batch {} was committed with {} units (#{}); this receipt names one more, unit {}",
                e.batch, batch.units, batch.index, e.unit
            )));
        }
        if let Some(b) = self.batches.get_mut(&e.batch) {
            b.named.insert(e.unit);
        }
        self.units.insert(
            e.unit,
            UnitHead {
                batch: e.batch,
                index,
                kind: e.kind,
                digest: e.digest,
                summary_sha256: e.summary_sha256,
            },
        );
        self.next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params_hash;
    use serde_json::json;

    fn receipt(kind: EntryKind, unit: i64, d: u8, supersedes: Option<u64>) -> Vec<u8> {
        crate::entry::example(kind, unit, Digest([d; 32]), supersedes).to_bytes()
    }

    /// Batch 1 of two units; unit 10 accepted, revoked, accepted again; unit 11 accepted.
    fn honest() -> Vec<Vec<u8>> {
        let units = [10, 11].map(|u| (u, params_hash(&json!({"seed": u}))));
        vec![
            BatchCommitment::new(1, "ising2d", &json!({}), &units, 0).to_bytes(),
            receipt(EntryKind::Accepted, 10, 1, None),
            receipt(EntryKind::Accepted, 11, 2, None),
            receipt(EntryKind::Revoked, 10, 1, Some(1)),
            receipt(EntryKind::Accepted, 10, 3, Some(3)),
        ]
    }

    fn run(entries: &[Vec<u8>]) -> Result<MonitorState, Anomaly> {
        let mut m = MonitorState::default();
        for (i, e) in entries.iter().enumerate() {
            m.apply(i as u64, e)?;
        }
        Ok(m)
    }

    #[test]
    fn an_honest_log_passes() {
        let m = run(&honest()).unwrap();
        assert_eq!(m.next, 5);
        assert_eq!(m.units[&10].digest, Digest([3; 32]));
        assert_eq!(m.batches[&1].named.len(), 2);
    }

    #[test]
    fn each_broken_rule_is_named() {
        let anomaly = |mut log: Vec<Vec<u8>>, at: usize, entry: Vec<u8>| {
            log.truncate(at);
            log.push(entry);
            run(&log).unwrap_err().to_string()
        };
        // A forged re-acceptance through the log's own signer: a consistent extension, which
        // a witness cosigns, and which no sampled recomputation need cover.
        let e = anomaly(honest(), 5, receipt(EntryKind::Accepted, 11, 9, Some(2)));
        assert!(
            e.starts_with("log entry #5: unit 11 is accepted again")
                && e.contains("needs a revocation"),
            "{e}"
        );
        // Restating the standing result (a backtrack left it standing on other replicas) is
        // no re-acceptance; restating it with another summary is.
        let mut log = honest();
        log.push(receipt(EntryKind::Accepted, 11, 2, Some(2)));
        assert_eq!(run(&log).unwrap().units[&11].index, 5);
        let mut other = LogEntry::parse(&receipt(EntryKind::Accepted, 11, 2, Some(2))).unwrap();
        other.summary_sha256 = Some(Digest([7; 32]));
        let e = anomaly(honest(), 5, other.to_bytes());
        assert!(e.contains("unit 11 is accepted again"), "{e}");
        let e = anomaly(honest(), 5, receipt(EntryKind::Accepted, 12, 9, None));
        assert!(
            e.contains("committed with 2 units (#0); this receipt names one more"),
            "{e}"
        );
        let e = anomaly(honest(), 5, receipt(EntryKind::Revoked, 11, 9, Some(2)));
        assert!(e.contains("revokes 0909"), "{e}");
        let e = anomaly(honest(), 3, receipt(EntryKind::Revoked, 10, 1, Some(0)));
        assert!(
            e.contains("supersedes #0, but unit 10's latest entry is #1"),
            "{e}"
        );
        let e = anomaly(honest(), 3, receipt(EntryKind::Accepted, 10, 1, None));
        assert!(
            e.contains("claims to be unit 10's first entry, after #1"),
            "{e}"
        );
        let e = anomaly(honest(), 0, receipt(EntryKind::Accepted, 10, 1, None));
        assert!(e.contains("which no entry before it commits"), "{e}");
        let e = anomaly(honest(), 1, honest()[0].clone());
        assert!(e.contains("batch 1 is committed again"), "{e}");
        let e = anomaly(honest(), 1, b"{}".to_vec());
        assert!(e.contains("neither a receipt nor"), "{e}");
        // The state is unchanged by an anomaly.
        let mut m = run(&honest()).unwrap();
        let before = m.clone();
        assert!(
            m.apply(5, &receipt(EntryKind::Accepted, 11, 9, Some(2)))
                .is_err()
        );
        assert_eq!(m, before);
    }
}
