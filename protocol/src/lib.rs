//! Quorum Grid wire types and digests.
//!
//! No I/O lives here: this crate builds for wasm32 (the browser client) and natively (the
//! coordinator, the CLI, the native volunteer) so both sides agree on every byte.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
pub mod api;
pub mod package;
pub mod policy;
pub mod status;

use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest, written on the wire as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// SHA-256 of several byte slices, as if they were concatenated.
    pub fn of_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Self(h.finalize().into())
    }

    /// The digest of kernel data (canonical outputs and checkpoint states), defined so that a
    /// GPU can compute it in parallel and only 32 bytes cross to the host: a SHA-256 tree.
    ///
    /// * Leaves: the bytes cut into [`DATA_CHUNK`]-byte chunks (the last may be shorter; empty
    ///   data is one empty chunk), each hashed with SHA-256.
    /// * Levels: while more than one digest remains, the digests of a level, concatenated, are
    ///   cut the same way (groups of 128 digests) and each group hashed with SHA-256.
    /// * The digest is the one that remains. Data of at most [`DATA_CHUNK`] bytes therefore has
    ///   its plain SHA-256 as its digest.
    ///
    /// The length of the data is fixed by the kernel and its parameters (both sides check it
    /// before hashing), so it is not hashed separately. `shaders::digest` computes the same
    /// bytes in WGSL; [`data_leaves`] gives the leaves, which say where two states differ.
    pub fn of_data(bytes: &[u8]) -> Self {
        Self::of_data_parts([bytes])
    }

    /// [`Digest::of_data`] of several byte slices, as if they were concatenated.
    pub fn of_data_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut level = data_leaves(parts);
        while level.len() > 1 {
            level = level
                .chunks(DATA_CHUNK / 32)
                .map(|group| Self::of_parts(group.iter().map(|d| d.0.as_slice())))
                .collect();
        }
        level[0]
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// Bytes per leaf (and per group of digests in the upper levels) of [`Digest::of_data`].
pub const DATA_CHUNK: usize = 4096;

/// The leaves of [`Digest::of_data_parts`]: SHA-256 of each [`DATA_CHUNK`]-byte chunk of the
/// concatenated parts (at least one). Leaf `i` covers bytes `[i·DATA_CHUNK, (i+1)·DATA_CHUNK)`,
/// so comparing two replicas' leaves locates where their states differ.
pub fn data_leaves<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<Digest> {
    let mut leaves = Vec::new();
    let mut h = Sha256::new();
    let mut filled = 0usize;
    for mut part in parts {
        while !part.is_empty() {
            let take = (DATA_CHUNK - filled).min(part.len());
            h.update(&part[..take]);
            filled += take;
            part = &part[take..];
            if filled == DATA_CHUNK {
                leaves.push(Digest(h.finalize_reset().into()));
                filled = 0;
            }
        }
    }
    if filled > 0 || leaves.is_empty() {
        leaves.push(Digest(h.finalize().into()));
    }
    leaves
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestParseError {
    #[error("a digest is 64 hex characters, got {0}")]
    Length(usize),
    #[error("a digest is lowercase hex: {0}")]
    Hex(String),
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(DigestParseError::Length(s.len()));
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(DigestParseError::Hex("uppercase characters".into()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| DigestParseError::Hex(e.to_string()))?;
        Ok(Self(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The digest of the kernel's state after `step` steps (sweeps, samples, MD steps): lets two
/// disagreeing replicas be compared to find the first step where they diverged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub step: u64,
    pub digest: Digest,
}

/// The first checkpoint at which two replicas' checkpoint lists disagree, if any.
/// Checkpoints are compared at the steps both lists name.
pub fn first_divergence(a: &[Checkpoint], b: &[Checkpoint]) -> Option<u64> {
    let mut j = 0;
    for ca in a {
        while j < b.len() && b[j].step < ca.step {
            j += 1;
        }
        if j < b.len() && b[j].step == ca.step && b[j].digest != ca.digest {
            return Some(ca.step);
        }
    }
    None
}

/// Challenge spot-checks: after a report the coordinator may ask the volunteer for its state at
/// one of the checkpoints it reported, and recompute the next segment from it. A client keeps,
/// of a unit's checkpoint states before the last, the latest ones that fit in this many bytes
/// (the answer must also fit in a request body, base64-encoded); the coordinator asks only for
/// those, so an honest client can always answer.
pub const KEPT_STATE_BYTES: u64 = 16 << 20;

/// How many of a unit's `before_last` checkpoint states (each `state_bytes` long) before the
/// last one a client keeps to answer a challenge: the latest ones within [`KEPT_STATE_BYTES`].
pub fn kept_states(before_last: usize, state_bytes: u64) -> usize {
    match KEPT_STATE_BYTES.checked_div(state_bytes) {
        Some(n) => before_last.min(usize::try_from(n).unwrap_or(usize::MAX)),
        None => before_last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 example "abc".
        assert_eq!(
            Digest::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Digest::of_parts([b"a".as_slice(), b"bc".as_slice()]),
            Digest::of(b"abc")
        );
    }

    /// The tree spelled out level by level, independently of `of_data_parts`'s streaming.
    fn tree(data: &[u8]) -> Digest {
        let mut level: Vec<Vec<u8>> = if data.is_empty() {
            vec![Vec::new()]
        } else {
            data.chunks(DATA_CHUNK).map(<[u8]>::to_vec).collect()
        };
        loop {
            let digests: Vec<[u8; 32]> = level.iter().map(|c| Sha256::digest(c).into()).collect();
            if digests.len() == 1 {
                return Digest(digests[0]);
            }
            let flat: Vec<u8> = digests.concat();
            level = flat.chunks(DATA_CHUNK).map(<[u8]>::to_vec).collect();
        }
    }

    #[test]
    fn data_digest_is_a_sha256_tree() {
        // Small data: plain SHA-256.
        assert_eq!(Digest::of_data(b"abc"), Digest::of(b"abc"));
        assert_eq!(Digest::of_data(b""), Digest::of(b""));
        assert_eq!(
            Digest::of_data(&[7; DATA_CHUNK]),
            Digest::of(&[7; DATA_CHUNK])
        );
        // Two leaves: SHA-256 of the two leaf digests.
        let data: Vec<u8> = (0..DATA_CHUNK + 5).map(|i| (i * 31 % 251) as u8).collect();
        let a = Digest::of(&data[..DATA_CHUNK]);
        let b = Digest::of(&data[DATA_CHUNK..]);
        assert_eq!(
            Digest::of_data(&data),
            Digest::of_parts([&a.0[..], &b.0[..]])
        );
        // Three levels (more than 128 leaves), split across parts at awkward places.
        let big: Vec<u8> = (0..DATA_CHUNK * 130 + 77)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        for n in [0, 1, 2, 3, 4095, 4096, 4097, 8191, 8192, 9000, big.len()] {
            let d = &big[..n];
            assert_eq!(Digest::of_data(d), tree(d), "{n} bytes");
            for cut in [0, 1, n / 3, n.saturating_sub(1)] {
                let (x, y) = d.split_at(cut.min(n));
                assert_eq!(Digest::of_data_parts([x, y]), tree(d), "{n} cut at {cut}");
            }
        }
        assert_eq!(data_leaves([big.as_slice()]).len(), 131);
        // A one-byte change moves exactly one leaf.
        let mut other = big.clone();
        other[DATA_CHUNK * 77 + 3] ^= 1;
        let (la, lb) = (
            data_leaves([big.as_slice()]),
            data_leaves([other.as_slice()]),
        );
        let differ: Vec<usize> = (0..la.len()).filter(|&i| la[i] != lb[i]).collect();
        assert_eq!(differ, [77]);
        assert_ne!(Digest::of_data(&big), Digest::of_data(&other));
    }

    #[test]
    fn kept_states_are_the_latest_that_fit() {
        assert_eq!(kept_states(15, 1024), 15);
        assert_eq!(kept_states(15, KEPT_STATE_BYTES / 4), 4);
        assert_eq!(kept_states(15, KEPT_STATE_BYTES + 1), 0);
        assert_eq!(kept_states(3, 0), 3);
    }

    #[test]
    fn digest_round_trips_and_rejects_bad_text() {
        let d = Digest::of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert_eq!("ab".parse::<Digest>(), Err(DigestParseError::Length(2)));
        assert!("zz".repeat(32).parse::<Digest>().is_err());
        assert!(d.to_hex().to_uppercase().parse::<Digest>().is_err());
    }

    #[test]
    fn divergence_is_the_first_differing_common_step() {
        let x = Digest::of(b"x");
        let y = Digest::of(b"y");
        let a = [
            Checkpoint {
                step: 10,
                digest: x,
            },
            Checkpoint {
                step: 20,
                digest: x,
            },
            Checkpoint {
                step: 30,
                digest: y,
            },
        ];
        let b = [
            Checkpoint {
                step: 10,
                digest: x,
            },
            Checkpoint {
                step: 30,
                digest: x,
            },
        ];
        assert_eq!(first_divergence(&a, &b), Some(30));
        assert_eq!(first_divergence(&a, &a), None);
        assert_eq!(first_divergence(&a, &[]), None);
    }
}
