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
