//! Quorum Grid wire types and digests.
//!
//! No I/O lives here: this crate builds for wasm32 (the browser client) and natively (the
//! coordinator, the CLI, the native volunteer) so both sides agree on every byte.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
pub mod api;

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
