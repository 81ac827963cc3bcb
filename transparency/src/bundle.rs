//! A batch's results with their receipts, inclusion proofs and a cosigned checkpoint; checked
//! offline by [`verify_bundle`].

use crate::{
    BatchCommitment, EntryKind, LogEntry, NoteVerifier, TrustedCheckpoint, canonical_json,
    hash_from_b64, open_checkpoint, params_hash, record_hash, tlog_tiles::Hash,
};
use protocol::Digest;
use protocol::policy::UnitState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The `format` of a bundle this crate writes and reads.
pub const BUNDLE_FORMAT: &str = "quorum-grid-proofs/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofBundle {
    pub format: String,
    pub batch: i64,
    /// The log's public key as the coordinator states it (pin your own with
    /// `VerifyOptions::log_key`).
    pub log_key: String,
    /// The checkpoint every proof is against: a signed note with witnesses' cosignatures.
    pub checkpoint: String,
    /// The batch's commitment ([`BatchCommitment`]), logged when it was submitted: the bundle
    /// is complete against it.
    #[serde(default)]
    pub commitment: Option<BundleEntry>,
    /// The batch's spec as committed (its hash is the commitment's `spec_sha256`).
    #[serde(default)]
    pub spec: Option<Value>,
    pub units: Vec<BundleUnit>,
    /// The files of the kernel package the batch ran, if it is one: `qg verify --recompute`
    /// recomputes with them, once they hash to the name the receipts give.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<protocol::package::PackageFiles>,
}

/// One unit as the coordinator presents it, with every log entry about it that the
/// checkpoint's tree holds, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleUnit {
    pub unit: i64,
    pub kernel: String,
    pub params: Value,
    pub state: UnitState,
    /// The canonical digest the coordinator presents as the unit's result.
    pub digest: Option<Digest>,
    /// The result's summary, the exact JSON text its receipt's `summary_sha256` hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub entries: Vec<BundleEntry>,
}

impl BundleUnit {
    /// The summary as JSON (a verified unit's is the one its receipt binds).
    pub fn summary_value(&self) -> Option<Value> {
        serde_json::from_str(self.summary.as_deref()?).ok()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleEntry {
    pub index: u64,
    /// The entry's exact bytes (JSON).
    pub entry: String,
    /// The inclusion proof: base64 hashes.
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The log's verifier key, pinned: required (a bundle's own key proves nothing).
    pub log_key: Option<String>,
    /// Witnesses' verifier keys, pinned.
    pub witnesses: Vec<String>,
    /// Cosignatures needed from those witnesses; more than the keys pinned is an error, 0
    /// checks no witness (a log that shows each scientist its own fork would pass).
    pub min_witnesses: usize,
}

/// One thing wrong, for one unit or for the bundle as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub unit: Option<i64>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            Some(u) => write!(f, "unit {u}: {}", self.message),
            None => write!(f, "bundle: {}", self.message),
        }
    }
}

/// What [`verify_bundle`] found.
#[derive(Debug, Default)]
pub struct Report {
    pub checkpoint: Option<TrustedCheckpoint>,
    /// Units whose presented result is the current accepted entry, proven in the checkpoint.
    pub verified: Vec<i64>,
    pub problems: Vec<Problem>,
    /// Things to know that are not failures (a key taken from the bundle).
    pub notes: Vec<String>,
}

/// Whether an entry's bytes are at its index in the tree of `size` with root `root`.
fn included(e: &BundleEntry, size: u64, root: Hash) -> bool {
    let proof: Result<Vec<_>, _> = e.proof.iter().map(|h| hash_from_b64(h)).collect();
    proof.is_ok_and(|p| {
        tlog_tiles::check_record(&p, size, root, e.index, record_hash(e.entry.as_bytes())).is_ok()
    })
}

/// What is wrong with the batch's commitment, or with the units presented against it.
fn commitment_problems(b: &ProofBundle, size: u64, root: Hash) -> Vec<String> {
    let Some(e) = &b.commitment else {
        return vec![
            "the batch's commitment (its first log entry, made when it was submitted) is \
             missing, so whether every unit is here cannot be checked"
                .to_owned(),
        ];
    };
    if e.index >= size || !included(e, size, root) {
        return vec![format!(
            "the batch's commitment, log entry #{}, is not the one in the log",
            e.index
        )];
    }
    let Some(c) = BatchCommitment::parse(e.entry.as_bytes()) else {
        return vec![format!(
            "log entry #{}, presented as the batch's commitment, is not one",
            e.index
        )];
    };
    let mut out = Vec::new();
    // Made when the batch was submitted: before any receipt of its units (a commitment made
    // after seeing results could leave out the unwelcome ones).
    if let Some(first) = b
        .units
        .iter()
        .flat_map(|u| &u.entries)
        .map(|e| e.index)
        .min()
        && first < e.index
    {
        out.push(format!(
            "the batch's commitment, log entry #{}, comes after log entry #{first} about one of its units",
            e.index
        ));
    }
    if c.batch != b.batch {
        out.push(format!(
            "log entry #{} commits batch {}, not batch {}",
            e.index, c.batch, b.batch
        ));
    }
    match &b.spec {
        Some(spec) if Digest::of(canonical_json(spec).as_bytes()) == c.spec_sha256 => {}
        Some(_) => out.push(format!(
            "the spec presented is not the one committed in log entry #{}",
            e.index
        )),
        None => out.push("the batch's spec is missing".to_owned()),
    }
    if let Some(u) = b.units.iter().find(|u| u.kernel != c.kernel) {
        out.push(format!(
            "unit {} is presented as {}, but the batch was committed as {}",
            u.unit, u.kernel, c.kernel
        ));
    }
    let presented: Vec<(i64, Digest)> = b
        .units
        .iter()
        .map(|u| (u.unit, params_hash(&u.params)))
        .collect();
    if c.units != presented.len() as u64 {
        out.push(format!(
            "the batch was committed with {} units (log entry #{}), the bundle presents {}",
            c.units,
            e.index,
            presented.len()
        ));
    } else if crate::units_hash(&presented) != c.units_sha256 {
        out.push(format!(
            "the units presented (their ids and parameters) are not the ones committed in log \
             entry #{}",
            e.index
        ));
    }
    out
}

/// Whether the summary presented for a unit is the one its accepted entry `#i` binds.
fn summary_problem(u: &BundleUnit, i: u64, e: &LogEntry) -> Option<String> {
    match (e.summary_sha256, &u.summary) {
        (Some(h), Some(text)) => (Digest::of(text.as_bytes()) != h
            || serde_json::from_str::<Value>(text).is_err())
        .then(|| format!("the summary presented is not the one log entry #{i} accepted")),
        (Some(_), None) => Some(format!("the summary is missing (log entry #{i} binds one)")),
        (None, Some(_)) => Some(format!(
            "a summary is presented, but log entry #{i} binds none"
        )),
        (None, None) => None,
    }
}

/// Checks a bundle: the checkpoint's signature and cosignatures, the batch's commitment and
/// that the bundle presents exactly the units it committed, each entry's inclusion in the
/// checkpoint, that each unit's entries form one unbroken chain, and that the result and the
/// summary presented for each unit are the ones its latest entry accepted.
pub fn verify_bundle(b: &ProofBundle, opts: &VerifyOptions) -> Report {
    let mut report = Report::default();
    let mut problem = |unit: Option<i64>, message: String| {
        report.problems.push(Problem { unit, message });
    };
    if b.format != BUNDLE_FORMAT {
        problem(None, format!("unknown format {:?}", b.format));
        return report;
    }
    let Some(key_text) = opts.log_key.clone() else {
        problem(
            None,
            format!(
                "the log's key is not pinned: a bundle's own key ({}) proves nothing; pin the \
                 key the log publishes (--log-key)",
                b.log_key
            ),
        );
        return report;
    };
    if opts.witnesses.len() < opts.min_witnesses {
        problem(
            None,
            format!(
                "{} witness key(s) pinned, {} cosignature(s) needed: pin the witnesses' keys \
                 (--witness), or ask for fewer (--min-witnesses)",
                opts.witnesses.len(),
                opts.min_witnesses
            ),
        );
        return report;
    }
    if opts.min_witnesses == 0 {
        report.notes.push(
            "no witness cosignature is checked: a log that shows you a fork of its own would \
             pass"
                .to_owned(),
        );
    }
    let log = match NoteVerifier::parse(&key_text) {
        Ok(k) => k,
        Err(e) => {
            problem(None, format!("log key: {e}"));
            return report;
        }
    };
    let mut witnesses = Vec::new();
    for w in &opts.witnesses {
        match NoteVerifier::parse(w) {
            Ok(v) => witnesses.push(v),
            Err(e) => problem(None, format!("witness key {w:?}: {e}")),
        }
    }
    let trusted = match open_checkpoint(
        b.checkpoint.as_bytes(),
        &log,
        &witnesses,
        opts.min_witnesses,
    ) {
        Ok(t) => t,
        Err(e) => {
            problem(None, format!("checkpoint: {e}"));
            return report;
        }
    };
    let size = trusted.checkpoint.size();
    let root = *trusted.checkpoint.hash();
    for m in commitment_problems(b, size, root) {
        report.problems.push(Problem {
            unit: None,
            message: m,
        });
    }
    // A unit presented twice is verified in neither copy: which one a reader takes would be
    // the coordinator's choice.
    let mut seen = std::collections::HashMap::new();
    for u in &b.units {
        *seen.entry(u.unit).or_insert(0usize) += 1;
    }
    let mut verified = Vec::new();
    for u in &b.units {
        let mut problem = |m: String| {
            report.problems.push(Problem {
                unit: Some(u.unit),
                message: m,
            })
        };
        let mut entries: Vec<(u64, LogEntry)> = Vec::new();
        let mut sound = true;
        if seen.get(&u.unit).copied().unwrap_or(0) > 1 {
            problem("the unit is presented more than once".into());
            sound = false;
        }
        for e in &u.entries {
            if e.index >= size {
                problem(format!(
                    "log entry #{} is beyond the checkpoint (size {size})",
                    e.index
                ));
                sound = false;
                continue;
            }
            if !included(e, size, root) {
                problem(format!(
                    "log entry #{} is not the one in the log (edited, or its proof is wrong)",
                    e.index
                ));
                sound = false;
                continue;
            }
            match LogEntry::parse(e.entry.as_bytes()) {
                Ok(parsed) if parsed.unit == u.unit && parsed.batch == b.batch => {
                    entries.push((e.index, parsed))
                }
                Ok(parsed) if parsed.unit == u.unit => {
                    problem(format!(
                        "log entry #{} is about batch {}, not this one",
                        e.index, parsed.batch
                    ));
                    sound = false;
                }
                Ok(parsed) => {
                    problem(format!(
                        "log entry #{} is about unit {}, not this one",
                        e.index, parsed.unit
                    ));
                    sound = false;
                }
                Err(err) => {
                    problem(format!("log entry #{} is not a receipt: {err}", e.index));
                    sound = false;
                }
            }
        }
        entries.sort_by_key(|(i, _)| *i);
        // One unbroken chain: each entry supersedes the one before it, and the first none.
        let mut before: Option<u64> = None;
        for (i, e) in &entries {
            if e.supersedes != before {
                match e.supersedes {
                    Some(s) => problem(format!(
                        "log entry #{s}, which #{i} supersedes, is missing from the bundle"
                    )),
                    None => problem(format!(
                        "log entry #{i} claims to be the first about this unit, after #{}",
                        before.unwrap_or_default()
                    )),
                }
                sound = false;
            }
            if e.kernel != u.kernel || e.params_sha256 != params_hash(&u.params) {
                problem(format!(
                    "log entry #{i} is for other parameters or another kernel than presented"
                ));
                sound = false;
            }
            before = Some(*i);
        }
        let latest = entries.last();
        match (u.state, u.digest, latest) {
            (UnitState::Canonical, Some(d), Some((i, e))) => match e.kind {
                EntryKind::Revoked => problem(format!(
                    "the result {d} is presented as current, but log entry #{i} revoked it"
                )),
                EntryKind::Accepted if e.digest != d => problem(format!(
                    "the result presented is {d}, but log entry #{i} accepted {}",
                    e.digest
                )),
                EntryKind::Accepted if sound => match summary_problem(u, *i, e) {
                    Some(m) => problem(m),
                    None => verified.push(u.unit),
                },
                EntryKind::Accepted => {}
            },
            (UnitState::Canonical, _, None) => {
                problem("presented as canonical, but no log entry accepts it".to_owned())
            }
            (UnitState::Canonical, None, Some(_)) => {
                problem("presented as canonical without a digest".to_owned())
            }
            (state, _, Some((i, e))) if e.kind == EntryKind::Accepted => problem(format!(
                "log entry #{i} accepted {}, but the unit is presented as {} with no revocation",
                e.digest,
                state.as_str()
            )),
            _ => {}
        }
    }
    report.verified = verified;
    report.checkpoint = Some(trusted);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ALG_COSIGNATURE_V1, ALG_ED25519, MemoryLog, NoteKey, add_cosignatures, hash_to_b64,
        sign_checkpoint,
    };
    use serde_json::json;

    fn entry(kind: EntryKind, unit: i64, digest: Digest, supersedes: Option<u64>) -> LogEntry {
        LogEntry {
            summary_sha256: Some(crate::summary_hash(&summary(digest))),
            ..crate::entry::example(kind, unit, digest, supersedes)
        }
    }

    /// The summary of a result with this digest.
    fn summary(d: Digest) -> Value {
        json!({"m": d.0[0], "m_err": 0.25})
    }

    fn spec() -> Value {
        json!({"name": "sweep", "kernel": "ising2d", "axes": ["seed"]})
    }

    struct Fixture {
        log: NoteKey,
        witness: NoteKey,
        bundle: ProofBundle,
        late: BundleEntry,
    }

    /// The batch's commitment; units 1 and 2 accepted; unit 3 accepted, then revoked and
    /// accepted again; then the same commitment made again, late (#6).
    fn fixture() -> Fixture {
        let log_key = NoteKey::from_seed("qg.example/log", ALG_ED25519, [1; 32]).unwrap();
        let witness = NoteKey::from_seed("w.example", ALG_COSIGNATURE_V1, [2; 32]).unwrap();
        let d = |b: u8| Digest([b; 32]);
        let entries = [
            entry(EntryKind::Accepted, 1, d(1), None),
            entry(EntryKind::Accepted, 3, d(3), None),
            entry(EntryKind::Accepted, 2, d(2), None),
            entry(EntryKind::Revoked, 3, d(3), Some(2)),
            entry(EntryKind::Accepted, 3, d(4), Some(4)),
        ];
        let mut mem = MemoryLog::default();
        let units: Vec<_> = (1..=3)
            .map(|u| (u, params_hash(&json!({"seed": u}))))
            .collect();
        let commitment = BatchCommitment::new(1, "ising2d", &spec(), &units, 0);
        let bytes: Vec<String> = [String::from_utf8(commitment.to_bytes()).unwrap()]
            .into_iter()
            .chain(
                entries
                    .iter()
                    .map(|e| String::from_utf8(e.to_bytes()).unwrap()),
            )
            .chain([String::from_utf8(commitment.to_bytes()).unwrap()])
            .collect();
        for b in &bytes {
            mem.append(b.as_bytes()).unwrap();
        }
        let note = sign_checkpoint(&log_key, mem.size(), mem.root().unwrap()).unwrap();
        let text = note.split("\n\n").next().unwrap().to_owned() + "\n";
        let cosig =
            String::from_utf8(witness.cosign(text.as_bytes(), 6).unwrap().to_bytes()).unwrap();
        let at = |i: u64| BundleEntry {
            index: i,
            entry: bytes[i as usize].clone(),
            proof: mem
                .prove(mem.size(), i)
                .unwrap()
                .iter()
                .map(hash_to_b64)
                .collect(),
        };
        let unit = |id: i64, digest: u8, idx: &[u64]| BundleUnit {
            unit: id,
            kernel: "ising2d".into(),
            params: json!({"seed": id}),
            state: UnitState::Canonical,
            digest: Some(d(digest)),
            summary: Some(crate::canonical_json(&summary(d(digest)))),
            entries: idx.iter().map(|&i| at(i)).collect(),
        };
        let bundle = ProofBundle {
            packages: Vec::new(),
            format: BUNDLE_FORMAT.into(),
            batch: 1,
            log_key: log_key.verifier_key(),
            checkpoint: add_cosignatures(&note, &[cosig]),
            commitment: Some(at(0)),
            spec: Some(spec()),
            units: vec![unit(1, 1, &[1]), unit(2, 2, &[3]), unit(3, 4, &[2, 4, 5])],
        };
        Fixture {
            log: log_key,
            witness,
            bundle,
            late: at(6),
        }
    }

    fn opts(f: &Fixture) -> VerifyOptions {
        VerifyOptions {
            log_key: Some(f.log.verifier_key()),
            witnesses: vec![f.witness.verifier_key()],
            min_witnesses: 1,
        }
    }

    fn problems(b: &ProofBundle, o: &VerifyOptions) -> Vec<String> {
        verify_bundle(b, o)
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn an_honest_bundle_verifies() {
        let f = fixture();
        let r = verify_bundle(&f.bundle, &opts(&f));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.verified, vec![1, 2, 3]);
        assert_eq!(r.checkpoint.unwrap().witnesses, vec!["w.example"]);
        // Two witnesses needed, one cosigned.
        let mut o = opts(&f);
        o.min_witnesses = 2;
        o.witnesses.push(
            NoteKey::from_seed("w2.example", ALG_COSIGNATURE_V1, [3; 32])
                .unwrap()
                .verifier_key(),
        );
        assert!(problems(&f.bundle, &o)[0].contains("1 valid witness cosignature(s), 2 needed"));
    }

    #[test]
    fn pins_are_required() {
        let f = fixture();
        let mut o = opts(&f);
        o.log_key = None;
        let p = problems(&f.bundle, &o);
        assert!(p[0].contains("the log's key is not pinned"), "{p:?}");
        let mut o = opts(&f);
        o.witnesses.clear();
        let p = problems(&f.bundle, &o);
        assert!(
            p[0].contains("0 witness key(s) pinned, 1 cosignature(s) needed"),
            "{p:?}"
        );
        // Asking for no witness is a choice, and said.
        o.min_witnesses = 0;
        let r = verify_bundle(&f.bundle, &o);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(r.notes[0].contains("no witness cosignature is checked"));
    }

    #[test]
    fn an_edited_result_digest_is_caught() {
        let mut f = fixture();
        f.bundle.units[0].digest = Some(Digest([9; 32]));
        let p = problems(&f.bundle, &opts(&f));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("unit 1: the result presented is"), "{p:?}");
    }

    #[test]
    fn an_edited_or_removed_entry_is_caught() {
        let mut f = fixture();
        let e = &mut f.bundle.units[1].entries[0].entry;
        *e = e.replace("0202", "0909");
        let p = problems(&f.bundle, &opts(&f));
        assert!(
            p.iter()
                .any(|p| p.starts_with("unit 2: log entry #3 is not the one in the log"))
        );

        let mut f = fixture();
        f.bundle.units[1].entries.clear();
        let p = problems(&f.bundle, &opts(&f));
        assert_eq!(
            p,
            vec!["unit 2: presented as canonical, but no log entry accepts it"]
        );

        // Dropping the revocation from unit 3's chain breaks it.
        let mut f = fixture();
        f.bundle.units[2].entries.remove(1);
        let p = problems(&f.bundle, &opts(&f));
        assert!(
            p.iter()
                .any(|p| p.contains("#4, which #5 supersedes, is missing")),
            "{p:?}"
        );
    }

    #[test]
    fn an_edited_summary_is_caught() {
        // The numbers scientists use: an edit the digests alone would not show.
        let mut f = fixture();
        f.bundle.units[1].summary = Some(r#"{"m":2,"m_err":0.01}"#.into());
        assert_eq!(
            problems(&f.bundle, &opts(&f)),
            vec!["unit 2: the summary presented is not the one log entry #3 accepted"]
        );
        assert_eq!(
            verify_bundle(&f.bundle, &opts(&f)).verified,
            vec![1, 3],
            "its result is not verified"
        );
        // The same value written otherwise is not the bytes the receipt hashes either.
        f.bundle.units[1].summary = Some(r#"{"m_err":0.25,"m":2}"#.into());
        assert_eq!(problems(&f.bundle, &opts(&f)).len(), 1);
        f.bundle.units[1].summary = None;
        assert_eq!(
            problems(&f.bundle, &opts(&f)),
            vec!["unit 2: the summary is missing (log entry #3 binds one)"]
        );
        let f = fixture();
        assert_eq!(
            f.bundle.units[2].summary_value(),
            Some(json!({"m": 4, "m_err": 0.25}))
        );
    }

    #[test]
    fn a_bundle_that_leaves_a_unit_out_or_changes_its_params_is_caught() {
        // A unit presented twice (a forged copy first): neither copy is verified.
        let mut f = fixture();
        let mut forged = f.bundle.units[0].clone();
        forged.params = json!({"seed": 9});
        f.bundle.units[1] = forged;
        let r = verify_bundle(&f.bundle, &opts(&f));
        assert!(!r.verified.contains(&1), "{:?}", r.verified);
        assert!(
            r.problems
                .iter()
                .any(|p| p.to_string() == "unit 1: the unit is presented more than once"),
            "{:?}",
            r.problems
        );
        let mut f = fixture();
        f.bundle.units.remove(1);
        assert_eq!(
            problems(&f.bundle, &opts(&f)),
            vec![
                "bundle: the batch was committed with 3 units (log entry #0), the bundle presents 2"
            ]
        );
        // Params edited (and the receipt's params hash with them would break its inclusion).
        let mut f = fixture();
        f.bundle.units[0].params = json!({"seed": 9});
        let p = problems(&f.bundle, &opts(&f));
        assert!(
            p.contains(&"bundle: the units presented (their ids and parameters) are not the ones committed in log entry #0".to_owned()),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("unit 1: log entry #1 is for other parameters")),
            "{p:?}"
        );
        // A commitment made after the results.
        let mut f = fixture();
        f.bundle.commitment = Some(f.late.clone());
        assert_eq!(
            problems(&f.bundle, &opts(&f)),
            vec![
                "bundle: the batch's commitment, log entry #6, comes after log entry #1 about one of its units"
            ]
        );
        // No commitment, or a receipt in its place, or another spec.
        let mut f = fixture();
        f.bundle.commitment = None;
        assert!(problems(&f.bundle, &opts(&f))[0].contains("commitment"));
        let mut f = fixture();
        f.bundle.commitment = Some(f.bundle.units[0].entries[0].clone());
        assert_eq!(
            problems(&f.bundle, &opts(&f)),
            vec!["bundle: log entry #1, presented as the batch's commitment, is not one"]
        );
        let mut f = fixture();
        f.bundle.spec = Some(json!({"name": "another"}));
        assert_eq!(
            problems(&f.bundle, &opts(&f)),
            vec!["bundle: the spec presented is not the one committed in log entry #0"]
        );
    }

    #[test]
    fn a_superseded_result_presented_as_current_is_caught() {
        let mut f = fixture();
        // The coordinator shows unit 3's first result, and hides the later entries.
        f.bundle.units[2].digest = Some(Digest([3; 32]));
        let p = problems(&f.bundle, &opts(&f));
        assert!(
            p.iter().any(|p| p.contains("log entry #5 accepted")),
            "{p:?}"
        );
        f.bundle.units[2].entries.truncate(2);
        let p = problems(&f.bundle, &opts(&f));
        assert!(
            p.iter().any(|p| p.contains("log entry #4 revoked it")),
            "{p:?}"
        );
    }

    #[test]
    fn a_checkpoint_under_another_key_is_caught() {
        let f = fixture();
        let mut o = opts(&f);
        o.log_key = Some(
            NoteKey::from_seed("qg.example/log", ALG_ED25519, [7; 32])
                .unwrap()
                .verifier_key(),
        );
        let p = problems(&f.bundle, &o);
        assert!(
            p[0].starts_with("bundle: checkpoint: the checkpoint is not signed"),
            "{p:?}"
        );
    }
}
