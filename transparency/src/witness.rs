//! What a witness accepts: a checkpoint of the log it follows that extends the last one it
//! cosigned, proven by a consistency proof. Two checkpoints of one size with different roots
//! are a fork; a smaller one is a rollback; both are refused, and the witness keeps its state.

use crate::{Checkpoint, Hash, hash_from_b64, hash_to_b64};
use serde::{Deserialize, Serialize};

/// The last checkpoint a witness cosigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessState {
    pub origin: String,
    pub size: u64,
    /// Base64 root hash.
    pub root: String,
}

impl WitnessState {
    pub fn of(cp: &Checkpoint) -> Self {
        Self {
            origin: cp.origin().to_owned(),
            size: cp.size(),
            root: hash_to_b64(cp.hash()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WitnessError {
    #[error("rollback: the log had {had} entries when last cosigned and now shows {got}")]
    Rollback { had: u64, got: u64 },
    #[error(
        "fork: two checkpoints of size {size} with different roots ({had} cosigned, {got} now)"
    )]
    Fork { size: u64, had: String, got: String },
    #[error(
        "fork: the checkpoint of size {got} does not extend the one of size {had} cosigned before ({why})"
    )]
    Inconsistent { had: u64, got: u64, why: String },
    #[error("the checkpoint's origin {found:?} is not the followed log's {expected:?}")]
    Origin { expected: String, found: String },
    #[error("the witness's state is corrupt: {0}")]
    State(String),
}

/// What to do with a checkpoint that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The checkpoint already cosigned (cosign again if the log lost the cosignature).
    Same,
    /// A consistent extension: cosign it and make it the new state.
    Extends,
}

/// Checks `cp` (whose log signature the caller verified) against the last cosigned state,
/// with `proof` the consistency proof from `state.size` to `cp.size()`.
pub fn check(
    state: Option<&WitnessState>,
    cp: &Checkpoint,
    proof: &[Hash],
) -> Result<Verdict, WitnessError> {
    let Some(state) = state else {
        return Ok(Verdict::Extends);
    };
    if cp.origin() != state.origin {
        return Err(WitnessError::Origin {
            expected: state.origin.clone(),
            found: cp.origin().to_owned(),
        });
    }
    let root = hash_from_b64(&state.root).map_err(|e| WitnessError::State(e.to_string()))?;
    if cp.size() < state.size {
        return Err(WitnessError::Rollback {
            had: state.size,
            got: cp.size(),
        });
    }
    if cp.size() == state.size {
        return if *cp.hash() == root {
            Ok(Verdict::Same)
        } else {
            Err(WitnessError::Fork {
                size: cp.size(),
                had: state.root.clone(),
                got: hash_to_b64(cp.hash()),
            })
        };
    }
    if state.size > 0 {
        tlog_tiles::check_tree(&proof.to_vec(), cp.size(), *cp.hash(), state.size, root).map_err(
            |e| WitnessError::Inconsistent {
                had: state.size,
                got: cp.size(),
                why: e.to_string(),
            },
        )?;
    }
    Ok(Verdict::Extends)
}

/// A witness's whole decision on a checkpoint whose log signature verified: check it against
/// the last cosigned state ([`check`]) and, if it passes, cosign it at `time`. Returns the
/// verdict, the state to save (before handing the line out, so a witness never cosigns two
/// trees of one size) and the cosignature line.
pub fn cosign(
    last: Option<&WitnessState>,
    trusted: &crate::TrustedCheckpoint,
    proof: &[Hash],
    key: &crate::NoteKey,
    time: u64,
) -> Result<(Verdict, WitnessState, String), WitnessError> {
    let verdict = check(last, &trusted.checkpoint, proof)?;
    let line = key
        .cosign(&trusted.text, time)
        .map_err(|e| WitnessError::State(format!("cosigning: {e}")))?;
    Ok((
        verdict,
        WitnessState::of(&trusted.checkpoint),
        String::from_utf8_lossy(&line.to_bytes()).into_owned(),
    ))
}

// ---- C2SP tlog-witness: the add-checkpoint call ----

/// At most this many consistency proof lines in a request (C2SP tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// The `Content-Type` of a 409 answer's body, the witness's size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// A C2SP tlog-witness `add-checkpoint` request: the size the client believes the witness
/// last cosigned, the consistency proof from it, and the signed checkpoint note.
#[derive(Debug, Clone, PartialEq)]
pub struct AddCheckpoint {
    pub old: u64,
    pub proof: Vec<Hash>,
    /// The checkpoint note, signatures included.
    pub checkpoint: Vec<u8>,
}

impl AddCheckpoint {
    /// The request body: `old N`, a proof hash per line, an empty line, the checkpoint.
    pub fn to_body(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(hash_to_b64(h).as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a request body; anything malformed is a [`Refusal::BadRequest`].
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        let bad = |m: &str| Refusal::BadRequest(m.to_owned());
        let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no empty line between the proof and the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or_else(|| bad("the first line must be `old <size>`"))?;
        if old.is_empty()
            || !old.bytes().all(|b| b.is_ascii_digit())
            || (old.len() > 1 && old.starts_with('0'))
        {
            return Err(bad("the old size is a decimal with no leading zeroes"));
        }
        let old = old
            .parse::<u64>()
            .map_err(|_| bad("the old size is too large"))?;
        let proof = lines
            .map(|l| hash_from_b64(l).map_err(|_| bad("a consistency proof line is not a hash")))
            .collect::<Result<Vec<_>, _>>()?;
        if proof.len() > MAX_PROOF_LINES {
            return Err(bad("more than 63 consistency proof lines"));
        }
        if old == 0 && !proof.is_empty() {
            return Err(bad(
                "the consistency proof must be empty when the old size is 0",
            ));
        }
        Ok(Self {
            old,
            proof,
            checkpoint: checkpoint.as_bytes().to_vec(),
        })
    }
}

/// Why a witness did not cosign, with the HTTP status C2SP tlog-witness gives each case.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// 400: a malformed request, or an old size beyond the checkpoint's.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403: no signature by a key the witness trusts for the origin verifies.
    #[error("the checkpoint carries no valid signature by a key trusted for {0:?}")]
    Forbidden(String),
    /// 404: the witness follows no log of this origin.
    #[error("this witness follows no log of origin {0:?}")]
    UnknownLog(String),
    /// 409: the old size is not the witness's (`size`, its latest cosigned), or the checkpoint
    /// is of that size with another root.
    #[error("conflict: {why}")]
    Conflict { size: u64, why: String },
    /// 422: the consistency proof does not verify.
    #[error("the consistency proof does not verify: {0}")]
    Unprocessable(String),
    /// 500: the witness's own state is broken; nothing was cosigned.
    #[error("the witness's state: {0}")]
    Internal(String),
}

impl Refusal {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Forbidden(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::Unprocessable(_) => 422,
            Refusal::Internal(_) => 500,
        }
    }
}

/// A witness's decision on an `add-checkpoint` request (pure): `logs` are the log keys it
/// trusts (a checkpoint's origin is its log key's name, as Quorum Grid's logs and Go's
/// `note` keys have it; a log whose origin differs from its key's name is not followed),
/// `last` its latest cosigned checkpoint of the
/// request's origin. Returns the new state of that origin, to persist before answering, and
/// the cosignature line (`— <name> <base64>\n`) to answer with.
pub fn add_checkpoint(
    logs: &[crate::NoteVerifier],
    last: impl FnOnce(&str) -> Option<WitnessState>,
    req: &AddCheckpoint,
    key: &crate::NoteKey,
    time: u64,
) -> Result<(WitnessState, String), Refusal> {
    let text = std::str::from_utf8(&req.checkpoint)
        .map_err(|_| Refusal::BadRequest("the checkpoint is not UTF-8".into()))?;
    let origin = text
        .split_once('\n')
        .map(|(o, _)| o)
        .filter(|o| !o.is_empty())
        .ok_or_else(|| Refusal::BadRequest("the checkpoint has no origin line".into()))?;
    let trusted: Vec<_> = logs.iter().filter(|l| l.name() == origin).collect();
    if trusted.is_empty() {
        return Err(Refusal::UnknownLog(origin.to_owned()));
    }
    let mut opened = None;
    for log in trusted {
        match crate::open_checkpoint(&req.checkpoint, log, &[], 0) {
            Ok(t) => {
                opened = Some(t);
                break;
            }
            Err(crate::LogError::Malformed(m)) => return Err(Refusal::BadRequest(m)),
            Err(_) => {}
        }
    }
    let trusted = opened.ok_or_else(|| Refusal::Forbidden(origin.to_owned()))?;
    let cp = &trusted.checkpoint;
    if req.old > cp.size() {
        return Err(Refusal::BadRequest(format!(
            "old size {} is beyond the checkpoint's size {}",
            req.old,
            cp.size()
        )));
    }
    // The spec's proof checks: none from size 0, and a size-0 tree is the empty one.
    if req.old == 0 && !req.proof.is_empty() {
        return Err(Refusal::Unprocessable(
            "a consistency proof from size 0 must be empty".into(),
        ));
    }
    if cp.size() == 0 && *cp.hash() != tlog_tiles::EMPTY_HASH {
        return Err(Refusal::Unprocessable(
            "a checkpoint of size 0 must have the empty tree's root".into(),
        ));
    }
    let last = last(origin);
    let had = last.as_ref().map_or(0, |l| l.size);
    if req.old != had {
        return Err(Refusal::Conflict {
            size: had,
            why: format!(
                "the latest checkpoint this witness cosigned is of size {had}, not {}",
                req.old
            ),
        });
    }
    let (_, next, line) =
        cosign(last.as_ref(), &trusted, &req.proof, key, time).map_err(|e| match e {
            WitnessError::Fork { .. } => Refusal::Conflict {
                size: had,
                why: e.to_string(),
            },
            WitnessError::Inconsistent { why, .. } => Refusal::Unprocessable(why),
            // The old size matched, so a rollback or another origin means a corrupt state.
            e => Refusal::Internal(e.to_string()),
        })?;
    // One line, ended by one newline (the response is signature lines, C2SP signed-note).
    Ok((next, line.trim_end_matches('\n').to_owned() + "\n"))
}

/// The witness size in a 409 answer's body (`<size>\n`).
pub fn parse_size_body(body: &str) -> Option<u64> {
    let s = body.strip_suffix('\n').unwrap_or(body);
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ALG_COSIGNATURE_V1, ALG_ED25519, MemoryLog, NoteKey, sign_checkpoint};

    struct Fixture {
        log: NoteKey,
        witness: NoteKey,
        tree: MemoryLog,
    }

    impl Fixture {
        fn new() -> Self {
            let mut tree = MemoryLog::default();
            for i in 0..40u32 {
                tree.append(&i.to_be_bytes()).unwrap();
            }
            Fixture {
                log: NoteKey::from_seed("log.test", ALG_ED25519, [1; 32]).unwrap(),
                witness: NoteKey::from_seed("w.test", ALG_COSIGNATURE_V1, [2; 32]).unwrap(),
                tree,
            }
        }
        fn root(&self, size: u64) -> Hash {
            let mut t = MemoryLog::default();
            for i in 0..size as u32 {
                t.append(&i.to_be_bytes()).unwrap();
            }
            t.root().unwrap()
        }
        fn request(&self, old: u64, size: u64) -> AddCheckpoint {
            let proof = if old == 0 || old == size {
                Vec::new()
            } else {
                self.tree.prove_consistency(size, old).unwrap()
            };
            AddCheckpoint {
                old,
                proof,
                checkpoint: sign_checkpoint(&self.log, size, self.root(size))
                    .unwrap()
                    .into_bytes(),
            }
        }
        fn add(
            &self,
            last: Option<&WitnessState>,
            req: &AddCheckpoint,
        ) -> Result<(WitnessState, String), Refusal> {
            add_checkpoint(
                &[self.log.verifier()],
                |o| {
                    assert_eq!(o, "log.test");
                    last.cloned()
                },
                req,
                &self.witness,
                7,
            )
        }
    }

    #[test]
    fn the_body_round_trips_and_malformed_bodies_are_400() {
        let f = Fixture::new();
        let req = f.request(10, 30);
        let body = req.to_body();
        assert!(body.starts_with(b"old 10\n"));
        assert_eq!(AddCheckpoint::parse(&body).unwrap(), req);
        for bad in [
            &b"old 01\n\nx\n"[..],
            b"old\n\nx\n",
            b"new 1\n\nx\n",
            b"old 1\nnot a hash\n\nx\n",
            b"old 1\n",
            b"\xff\n\n",
        ] {
            let e = AddCheckpoint::parse(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{bad:?}: {e}");
        }
        let many = format!(
            "old 1\n{}\nx\n",
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n".repeat(64)
        );
        assert_eq!(
            AddCheckpoint::parse(many.as_bytes()).unwrap_err().status(),
            400
        );
    }

    #[test]
    fn a_witness_cosigns_consistent_extensions_and_answers_each_case_as_c2sp_says() {
        let f = Fixture::new();
        // First contact: old 0, no proof, cosigned; the line verifies as the witness's.
        let req = f.request(0, 10);
        let (s10, line) = f.add(None, &req).unwrap();
        assert_eq!(s10.size, 10);
        assert!(line.starts_with("— w.test ") && line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        let text = std::str::from_utf8(&req.checkpoint).unwrap();
        let body = crate::note_text(text);
        crate::check_cosignature(body.as_bytes(), &line, &[f.witness.verifier()]).unwrap();
        // A consistent extension from the size it holds.
        let (s30, _) = f.add(Some(&s10), &f.request(10, 30)).unwrap();
        assert_eq!(s30.size, 30);
        // The same checkpoint again: cosigned again, state unchanged.
        assert_eq!(f.add(Some(&s30), &f.request(30, 30)).unwrap().0, s30);
        // A stale old size: 409 with the witness's size.
        let e = f.add(Some(&s30), &f.request(10, 40)).unwrap_err();
        assert_eq!(
            e,
            Refusal::Conflict {
                size: 30,
                why: e.to_string().replace("conflict: ", "")
            }
        );
        assert_eq!(e.status(), 409);
        // Old beyond the checkpoint: 400.
        let mut beyond = f.request(20, 20);
        beyond.old = 30;
        assert_eq!(f.add(Some(&s30), &beyond).unwrap_err().status(), 400);
        // A wrong proof: 422.
        let mut bad = f.request(30, 40);
        bad.proof[0] = f.root(3);
        assert_eq!(f.add(Some(&s30), &bad).unwrap_err().status(), 422);
        // Same size, another root: 409 (a fork), nothing cosigned.
        let forked = WitnessState {
            root: hash_to_b64(&f.root(5)),
            ..s30.clone()
        };
        assert_eq!(
            f.add(Some(&forked), &f.request(30, 30))
                .unwrap_err()
                .status(),
            409
        );
        // A checkpoint signed by another key of the same name: 403.
        let other = NoteKey::from_seed("log.test", ALG_ED25519, [9; 32]).unwrap();
        let mut req = f.request(30, 40);
        req.checkpoint = sign_checkpoint(&other, 40, f.root(40))
            .unwrap()
            .into_bytes();
        assert_eq!(f.add(Some(&s30), &req).unwrap_err().status(), 403);
        // A proof from size 0, or a size-0 tree with another root: 422.
        let mut from0 = f.request(0, 10);
        from0.proof = vec![f.root(1)];
        assert_eq!(f.add(None, &from0).unwrap_err().status(), 422);
        let mut empty = f.request(0, 0);
        empty.checkpoint = sign_checkpoint(&f.log, 0, f.root(3)).unwrap().into_bytes();
        assert_eq!(f.add(None, &empty).unwrap_err().status(), 422);
        assert_eq!(f.add(None, &f.request(0, 0)).unwrap().0.size, 0);
        assert_eq!(tlog_tiles::EMPTY_HASH.0, protocol::Digest::of(b"").0);
        // A log this witness does not follow: 404.
        let stranger = NoteKey::from_seed("other.test", ALG_ED25519, [9; 32]).unwrap();
        req.checkpoint = sign_checkpoint(&stranger, 40, f.root(40))
            .unwrap()
            .into_bytes();
        let e = add_checkpoint(&[f.log.verifier()], |_| None, &req, &f.witness, 7).unwrap_err();
        assert_eq!(e, Refusal::UnknownLog("other.test".into()));
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn a_409_body_is_a_size() {
        assert_eq!(parse_size_body("30\n"), Some(30));
        assert_eq!(parse_size_body("0"), Some(0));
        assert_eq!(parse_size_body(""), None);
        assert_eq!(parse_size_body("x\n"), None);
    }
}
