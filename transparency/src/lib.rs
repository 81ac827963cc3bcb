//! Quorum Grid's transparency log, as rules without I/O: what a log entry (a receipt) says,
//! how checkpoints are signed and cosigned, what a witness accepts, and how a scientist's proof
//! bundle is verified offline.
//!
//! The log is an RFC 6962/9162 Merkle tree of entries ([`LogEntry`], canonical JSON), one per
//! decision about a unit's result: accepted, or revoked when backtracking undoes it (a new
//! entry; the log is never rewritten). The coordinator signs checkpoints in the C2SP
//! `tlog-checkpoint` signed-note format with its Ed25519 key and serves the tree as C2SP
//! `tlog-tiles`; witnesses ([`witness`]) check each new checkpoint's consistency with the last
//! one they cosigned and add a C2SP `tlog-cosignature`. A [`ProofBundle`] carries a batch's
//! results with their entries, inclusion proofs and a cosigned checkpoint; [`verify_bundle`]
//! checks all of it. A [`monitor`] follows the log from entry 0 and checks the rules a
//! witness does not: each unit's chain, revocations before re-acceptances, batch commitments.
//!
//! The Merkle hashing, proofs and tile layout are `tlog_tiles`'s; signed notes are
//! `signed_note`'s; this crate adds the cosignature type and Quorum Grid's own rules.

mod bundle;
mod entry;
mod keys;
pub mod monitor;
mod note;
mod tiles;
mod tree;
pub mod witness;

pub use bundle::{
    BUNDLE_FORMAT, BundleEntry, BundleUnit, Problem, ProofBundle, Report, VerifyOptions,
    verify_bundle,
};
pub use entry::{
    Agreeing, BatchCommitment, EntryKind, Evidence, LogEntry, canonical_json, params_hash,
    summary_hash, units_hash,
};
pub use keys::{ALG_COSIGNATURE_V1, ALG_ED25519, KeyError, NoteKey, NoteVerifier};
pub use note::{
    TrustedCheckpoint, add_cosignatures, check_cosignature, note_text, open_checkpoint,
    sign_checkpoint,
};
pub use tiles::{split_entry_bundle, tile_from_path, tile_path};
pub use tlog_tiles::{self, Checkpoint, Hash, HashReader, record_hash};
pub use tree::MemoryLog;

/// Tiles are 2^8 hashes wide (C2SP tlog-tiles).
pub const TILE_HEIGHT: u8 = 8;

/// Everything that can be wrong with a checkpoint, a proof or a witness's view of the log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("the checkpoint is not signed by the log's key {0}")]
    NotSignedByLog(String),
    #[error("a signature on the checkpoint does not verify: {0}")]
    BadSignature(String),
    #[error("the checkpoint's origin {found:?} is not the log's {expected:?}")]
    WrongOrigin { expected: String, found: String },
    #[error("the checkpoint has {found} valid witness cosignature(s), {needed} needed")]
    NotEnoughWitnesses { needed: usize, found: usize },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("proof: {0}")]
    Proof(String),
}

impl From<tlog_tiles::Error> for LogError {
    fn from(e: tlog_tiles::Error) -> Self {
        LogError::Proof(e.to_string())
    }
}

/// A hash as the proofs and APIs carry it: standard base64.
pub fn hash_to_b64(h: &Hash) -> String {
    h.to_string()
}

/// Parses a base64 hash.
pub fn hash_from_b64(s: &str) -> Result<Hash, LogError> {
    Hash::parse_hash(s).map_err(|_| LogError::Proof(format!("malformed hash {s:?}")))
}
