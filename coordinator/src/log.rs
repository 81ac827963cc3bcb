//! The transparency log, orchestrated: receipts built from a unit's decision (queued in its
//! transaction), the sequencer that moves them into the Merkle tree and signs a checkpoint,
//! and the reads the API serves (checkpoints with cosignatures, tiles, proofs, bundles). The
//! rules (entry format, signatures, what a witness accepts, how a bundle verifies) are the
//! `transparency` crate's; the rows are `store::log`'s.

use crate::engine::Engine;
use crate::lifecycle::{ReplicaState, Unit, UnitState, VolunteerId};
use crate::store::log as lg;
use crate::store::queries::{self as q, UnitRow, anon, anon_salt, spot_str};
use crate::store::sql::Sql;
use crate::store::{Result, StoreError};
use protocol::Digest;
use std::cell::RefCell;
use std::collections::HashMap;
use transparency::tlog_tiles::{
    HashReader, Tile, prove_record, prove_tree, stored_hash_index, stored_hashes, tree_hash,
};
use transparency::{
    Agreeing, BUNDLE_FORMAT, BundleEntry, BundleUnit, EntryKind, Evidence, Hash, LogEntry, NoteKey,
    NoteVerifier, ProofBundle, TILE_HEIGHT, add_cosignatures, canonical_json, check_cosignature,
    hash_to_b64, params_hash, sign_checkpoint, summary_hash,
};

/// Receipts the sequencer moves into the tree per transaction.
pub const SEQUENCE_BATCH: usize = 4096;

/// What the engine knows of a decision that calls for a receipt.
pub(crate) struct Decision<'a> {
    pub kind: EntryKind,
    /// The unit before the decision, and its canonical digest: what a revocation withdraws.
    pub before: &'a Unit,
    pub before_digest: Option<Digest>,
    /// The unit's replicas after the decision: (volunteer, state, digest).
    pub replicas: &'a [(VolunteerId, ReplicaState, Option<Digest>)],
    /// A backtrack's decision: the volunteer caught (the receipt says why).
    pub caught: Option<VolunteerId>,
    /// Credibility mode: the probability that the accepted result is wrong, by Sarmenta's
    /// formula over the replicas' doubts.
    pub error_bound: Option<f64>,
}

/// Builds the receipt for a decision about the unit `row` (as it is after the decision) and
/// queues it.
pub(crate) fn queue_receipt(
    s: &mut dyn Sql,
    row: &UnitRow,
    d: Decision<'_>,
    now: i64,
) -> Result<()> {
    let Decision {
        kind,
        before,
        before_digest,
        replicas,
        caught,
        error_bound,
    } = d;
    // An accepted entry describes the result now canonical; a revocation the one withdrawn.
    let (unit, digest) = match kind {
        EntryKind::Accepted => (&row.unit, row.canonical_digest),
        EntryKind::Revoked => (before, before_digest),
    };
    let Some(digest) = digest else {
        return Err(StoreError::Db(format!(
            "unit {}: a canonical result without a digest",
            row.id
        )));
    };
    let salt = anon_salt(s)?;
    let reason = caught.map(|v| {
        format!(
            "a volunteer who counted in it was caught failing a check ({})",
            anon(&salt, v)
        )
    });
    let checkpoints = match unit.canonical {
        Some(c) => lg::replica_checkpoints(s, c)?,
        None => Vec::new(),
    };
    let agreeing = replicas
        .iter()
        .filter(|(_, state, d)| *state == ReplicaState::Valid && *d == Some(digest))
        .map(|(volunteer, _, d)| Agreeing {
            volunteer: anon(&salt, *volunteer),
            digest: d.unwrap_or(digest),
        })
        .collect();
    let (passed, failed) = lg::challenge_outcomes(s, row.id)?;
    let policy = unit.policy;
    let params: serde_json::Value = q::from_json(&row.params)?;
    // The summary the results serve: an accepted entry's is the result's; a revocation's the
    // one withdrawn with it (a unit keeps its summary until another result is accepted).
    let summary_sha256 = match &row.summary {
        Some(text) => Some(summary_hash(&q::from_json(text)?)),
        None => None,
    };
    let entry = LogEntry {
        kind,
        unit: row.id,
        batch: row.batch_id,
        kernel: row.kernel.clone(),
        kernel_version: row.kernel_version,
        params_sha256: params_hash(&params),
        digest,
        summary_sha256,
        checkpoints,
        replicas: agreeing,
        evidence: Evidence {
            replication: policy.replication,
            min_quorum: policy.min_quorum,
            target_error: (policy.replication == crate::lifecycle::Replication::Credibility)
                .then_some(policy.target_error),
            error_bound: error_bound.filter(|_| kind == EntryKind::Accepted),
            spot_check: spot_str(unit.spot).to_owned(),
            challenges_passed: passed,
            challenges_failed: failed,
        },
        reason,
        // Set by the sequencer, which knows the unit's previous entry's index.
        supersedes: None,
        time: now,
    };
    lg::queue(s, row.id, row.batch_id, &entry.to_bytes())
}

/// A queued receipt (written by [`queue_receipt`], `"supersedes":null`) with the index of the
/// entry it supersedes filled in. The field is spliced rather than the entry re-encoded: the
/// receipt's bytes are ours, its fields in a fixed order with `time` last, and an unescaped
/// `,"supersedes":null,"time":` cannot occur inside a JSON string.
fn with_supersedes(body: &[u8], supersedes: Option<u64>) -> Result<Vec<u8>> {
    const FIELD: &[u8] = b",\"supersedes\":null,\"time\":";
    let Some(at) = body.windows(FIELD.len()).rposition(|w| w == FIELD) else {
        return Err(StoreError::Db(
            "a queued receipt without `supersedes`".into(),
        ));
    };
    let Some(index) = supersedes else {
        return Ok(body.to_vec());
    };
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(format!(",\"supersedes\":{index},\"time\":").as_bytes());
    out.extend_from_slice(&body[at + FIELD.len()..]);
    Ok(out)
}

/// The tree's stored hashes as `tlog_tiles` reads them: from the database, and from the hashes
/// this transaction has added but not yet read back.
struct DbHashes<'a, 'b> {
    sql: RefCell<&'a mut (dyn Sql + 'b)>,
    added: HashMap<u64, Hash>,
    /// Hashes read so far (a batch's proofs share most of their upper nodes).
    read: RefCell<HashMap<u64, Hash>>,
    error: RefCell<Option<StoreError>>,
}

impl<'a, 'b> DbHashes<'a, 'b> {
    fn new(s: &'a mut (dyn Sql + 'b)) -> Self {
        Self {
            sql: RefCell::new(s),
            added: HashMap::new(),
            read: RefCell::new(HashMap::new()),
            error: RefCell::new(None),
        }
    }

    /// The database error behind a failed read, or the tree error.
    fn fail(&self, e: transparency::tlog_tiles::Error) -> StoreError {
        self.error
            .borrow_mut()
            .take()
            .unwrap_or_else(|| StoreError::Db(format!("log tree: {e}")))
    }
}

impl HashReader for DbHashes<'_, '_> {
    fn read_hashes(
        &self,
        indexes: &[u64],
    ) -> std::result::Result<Vec<Hash>, transparency::tlog_tiles::Error> {
        let mut s = self.sql.borrow_mut();
        let mut out = Vec::with_capacity(indexes.len());
        for &i in indexes {
            if let Some(h) = self.added.get(&i).or(self.read.borrow().get(&i)) {
                out.push(*h);
                continue;
            }
            match lg::hash(*s, i) {
                Ok(Some(h)) => {
                    self.read.borrow_mut().insert(i, h);
                    out.push(h)
                }
                Ok(None) => return Err(transparency::tlog_tiles::Error::IndexesNotInTree),
                Err(e) => {
                    *self.error.borrow_mut() = Some(e);
                    return Err(transparency::tlog_tiles::Error::InvalidInput(
                        "database".into(),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// A batch's proof bundle, with how many of its receipts the checkpoint does not cover yet.
pub struct Proofs {
    pub bundle: ProofBundle,
    /// Receipts still queued or newer than the bundle's checkpoint.
    pub pending: u64,
}

impl Engine {
    /// Moves up to `max` queued receipts into the tree, each superseding its unit's previous
    /// entry, and signs a checkpoint of the new tree with `key`; one transaction, so a crash
    /// loses nothing and a restart resumes the same tree. Returns the new size, or None when
    /// nothing was queued (a log with no checkpoint yet gets a signed one of size 0). Refuses to sign a log the database records under another key.
    pub fn sequence_log(&self, key: &NoteKey, max: usize, now: i64) -> Result<Option<u64>> {
        let public = key.verifier_key();
        self.write(|s| {
            lg::lock(s)?;
            match lg::public_key(s)? {
                Some(k) if k != public => {
                    return Err(StoreError::Conflict(format!(
                        "this database's log is signed by {k}, not by this coordinator's key \
                         {public}: give every coordinator the same log key"
                    )));
                }
                Some(_) => {}
                None => lg::set_public_key(s, &public)?,
            }
            let queued = lg::queued(s, max)?;
            if queued.is_empty() {
                // A new log is a signed empty tree (C2SP), so witnesses and monitors can start
                // from size 0; its root is RFC 6962's hash of no entries, SHA-256("").
                if lg::latest_checkpoint(s)?.is_some() {
                    return Ok(None);
                }
                let note = sign_checkpoint(key, 0, transparency::tlog_tiles::EMPTY_HASH)
                    .map_err(|e| StoreError::Db(format!("signing a checkpoint: {e}")))?;
                lg::put_checkpoint(s, 0, &note, now)?;
                return Ok(Some(0));
            }
            let mut n = lg::size(s)?;
            let mut tree = DbHashes::new(s);
            let mut latest: HashMap<i64, u64> = HashMap::new();
            for item in &queued {
                // A batch's commitment supersedes nothing.
                let commitment = item.unit == lg::COMMITMENT_UNIT;
                let supersedes = match latest.get(&item.unit) {
                    _ if commitment => None,
                    Some(i) => Some(*i),
                    None => lg::latest_for_unit(*tree.sql.get_mut(), item.unit)?,
                };
                let body = if commitment {
                    item.body.clone()
                } else {
                    with_supersedes(&item.body, supersedes)?
                };
                let hashes = stored_hashes(n, &body, &tree).map_err(|e| tree.fail(e))?;
                let first = stored_hash_index(0, n);
                lg::append(*tree.sql.get_mut(), item, n, &body, first, &hashes, now)?;
                for (i, h) in hashes.into_iter().enumerate() {
                    tree.added.insert(first + i as u64, h);
                }
                latest.insert(item.unit, n);
                n += 1;
            }
            let root = tree_hash(n, &tree).map_err(|e| tree.fail(e))?;
            let note = sign_checkpoint(key, n, root)
                .map_err(|e| StoreError::Db(format!("signing a checkpoint: {e}")))?;
            lg::put_checkpoint(*tree.sql.get_mut(), n, &note, now)?;
            Ok(Some(n))
        })
    }

    /// Queues ready-made receipts in one transaction (benchmarks and imports; the engine
    /// queues a unit's receipt itself, in the transaction of its decision).
    pub fn queue_receipts(&self, entries: &[LogEntry]) -> Result<()> {
        self.write(|s| {
            for e in entries {
                lg::queue(s, e.unit, e.batch, &e.to_bytes())?;
            }
            Ok(())
        })
    }

    /// Receipts waiting for the sequencer.
    pub fn log_queue_len(&self) -> Result<u64> {
        self.read(lg::queue_len)
    }

    /// The public key the log's checkpoints are signed with, once it has signed one.
    pub fn log_public_key(&self) -> Result<Option<String>> {
        self.read(lg::public_key)
    }

    /// The newest checkpoint with the witnesses' cosignatures it has.
    pub fn log_checkpoint(&self) -> Result<Option<String>> {
        self.read(|s| {
            let Some((size, note)) = lg::latest_checkpoint(s)? else {
                return Ok(None);
            };
            Ok(Some(add_cosignatures(&note, &lg::cosignatures(s, size)?)))
        })
    }

    /// What a witness push needs, in one read: the newest checkpoint's size and signed note
    /// (the log's signature only) and the size of the newest checkpoint `witness` cosigned.
    pub fn log_push_view(&self, witness: &str) -> Result<Option<(u64, String, Option<u64>)>> {
        self.read(|s| {
            let Some((size, note)) = lg::latest_checkpoint(s)? else {
                return Ok(None);
            };
            Ok(Some((
                size,
                note,
                lg::witness_head(s, witness)?.map(|h| h.0),
            )))
        })
    }

    /// The data of the C2SP tile at `level`, number `n`, `width` hashes (256 for a full one),
    /// if the newest checkpoint's tree holds it.
    pub fn log_tile(&self, level: u8, n: u64, width: u32) -> Result<Option<Vec<u8>>> {
        self.read(|s| {
            let size = lg::latest_checkpoint(s)?.map_or(0, |c| c.0);
            let shift = u32::from(level) * u32::from(TILE_HEIGHT);
            let nodes = size.checked_shr(shift).unwrap_or(0);
            let end = n
                .checked_mul(1 << TILE_HEIGHT)
                .and_then(|x| x.checked_add(width.into()));
            if width == 0 || width > 1 << TILE_HEIGHT || end.is_none_or(|e| e > nodes) {
                return Ok(None);
            }
            let tree = DbHashes::new(s);
            let tile = Tile::new(TILE_HEIGHT, level, n, width, false);
            tile.read_data(&tree).map(Some).map_err(|e| tree.fail(e))
        })
    }

    /// The entry bundle `n` (C2SP `tile/entries`): `width` entries, each as a big-endian
    /// 16-bit length and the entry's bytes.
    pub fn log_entry_bundle(&self, n: u64, width: u32) -> Result<Option<Vec<u8>>> {
        self.read(|s| {
            let size = lg::latest_checkpoint(s)?.map_or(0, |c| c.0);
            let lo = n.checked_mul(1 << TILE_HEIGHT);
            let hi = lo.and_then(|l| l.checked_add(width.into()));
            let (Some(lo), Some(hi)) = (lo, hi) else {
                return Ok(None);
            };
            if width == 0 || width > 1 << TILE_HEIGHT || hi > size {
                return Ok(None);
            }
            let mut out = Vec::new();
            for body in lg::bodies(s, lo, hi)? {
                let len = u16::try_from(body.len())
                    .map_err(|_| StoreError::Db("a log entry over 64 KiB".into()))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&body);
            }
            Ok(Some(out))
        })
    }

    /// The consistency proof from the tree of `old` entries to the tree of `new` (both sizes
    /// of checkpoints this log signed).
    pub fn log_consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.read(|s| {
            let size = lg::latest_checkpoint(s)?.map_or(0, |c| c.0);
            if old > new || new > size {
                return Err(StoreError::Invalid {
                    field: "to".into(),
                    message: format!(
                        "need from ≤ to ≤ {size} (the newest checkpoint), got {old}, {new}"
                    ),
                });
            }
            if old == 0 || old == new {
                return Ok(Vec::new());
            }
            let tree = DbHashes::new(s);
            prove_tree(new, old, &tree).map_err(|e| tree.fail(e))
        })
    }

    /// Records a witness's cosignature of the checkpoint of `size`; returns the witness's
    /// name. The line must verify under one of `witnesses` over that checkpoint's text.
    pub fn add_cosignature(
        &self,
        size: u64,
        line: &str,
        witnesses: &[NoteVerifier],
        now: i64,
    ) -> Result<String> {
        self.write(|s| {
            let note = lg::checkpoint(s, size)?.ok_or(StoreError::NotFound("checkpoint"))?;
            let text = transparency::note_text(&note);
            let name = check_cosignature(text.as_bytes(), line, witnesses).map_err(|e| {
                StoreError::Invalid {
                    field: "cosignature".into(),
                    message: e.to_string(),
                }
            })?;
            lg::put_cosignature(s, size, &name, line.trim_end_matches('\n'), now)?;
            Ok(name)
        })
    }

    /// A batch's results with their receipts, each with its inclusion proof in the newest
    /// checkpoint that `min_witnesses` witnesses cosigned.
    pub fn batch_proofs(
        &self,
        batch: i64,
        viewer: Option<i64>,
        min_witnesses: usize,
    ) -> Result<Proofs> {
        self.read(|s| {
            crate::store::views::check_viewer(s, batch, viewer)?;
            let found = if min_witnesses == 0 {
                lg::latest_checkpoint(s)?
            } else {
                lg::latest_cosigned(s, min_witnesses)?
            };
            let (size, note) = found.ok_or(StoreError::NotFound("checkpoint"))?;
            let checkpoint = add_cosignatures(&note, &lg::cosignatures(s, size)?);
            let log_key = lg::public_key(s)?.unwrap_or_default();
            let kernel = lg::batch_kernel(s, batch)?;
            let results = crate::store::views::batch_results(s, batch)?;
            let entries = lg::batch_entries(s, batch, size)?;
            let pending = lg::batch_pending(s, batch, size)?;
            let spec = lg::batch_spec(s, batch)?;
            let mut by_unit: HashMap<i64, Vec<BundleEntry>> = HashMap::new();
            let mut commitment = None;
            let tree = DbHashes::new(s);
            for (idx, unit, body) in entries {
                let proof = prove_record(size, idx, &tree).map_err(|e| tree.fail(e))?;
                let entry = BundleEntry {
                    index: idx,
                    entry: String::from_utf8_lossy(&body).into_owned(),
                    proof: proof.iter().map(hash_to_b64).collect(),
                };
                if unit == lg::COMMITMENT_UNIT {
                    commitment = Some(entry);
                } else {
                    by_unit.entry(unit).or_default().push(entry);
                }
            }
            let units = results
                .into_iter()
                .map(|r| BundleUnit {
                    unit: r.unit_id,
                    kernel: kernel.clone(),
                    params: r.params,
                    state: r.state,
                    digest: r.digest.filter(|_| r.state == UnitState::Canonical),
                    // The exact bytes its receipt hashes.
                    summary: r.summary.as_ref().map(canonical_json),
                    entries: by_unit.remove(&r.unit_id).unwrap_or_default(),
                })
                .collect();
            // A package's files travel with its results: a scientist recomputes offline.
            let packages = match protocol::package::package_hash(&kernel) {
                Some(h) => crate::store::packages::files(s, &h)?
                    .and_then(|b| protocol::package::PackageFiles::from_canonical(&b, &h))
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            };
            Ok(Proofs {
                bundle: ProofBundle {
                    format: BUNDLE_FORMAT.to_owned(),
                    batch,
                    log_key,
                    checkpoint,
                    commitment,
                    spec,
                    units,
                    packages,
                },
                pending,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supersedes_is_spliced_into_the_receipt_as_if_encoded() {
        let mut e: LogEntry = serde_json::from_value(serde_json::json!({
            "kind": "revoked", "unit": 3, "batch": 1, "kernel": "ising2d", "kernel_version": 2,
            "params_sha256": "00".repeat(32), "digest": "11".repeat(32), "checkpoints": [],
            "replicas": [], "evidence": {"replication": "quorum", "min_quorum": 2,
            "target_error": null, "error_bound": null, "spot_check": "none", "challenges_passed": 0,
            "challenges_failed": 0}, "reason": ",\"supersedes\":null,\"time\":", "supersedes": null,
            "time": 5
        }))
        .unwrap();
        let queued = e.to_bytes();
        assert_eq!(with_supersedes(&queued, None).unwrap(), queued);
        e.supersedes = Some(41);
        assert_eq!(with_supersedes(&queued, Some(41)).unwrap(), e.to_bytes());
        assert!(with_supersedes(b"{}", Some(1)).is_err());
    }
}
