//! Ed25519 keys in the signed-note encodings: the log's (signature type 0x01) and witnesses'
//! (C2SP tlog-cosignature, type 0x04).

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// An Ed25519 signature over a note's text (C2SP signed-note).
pub const ALG_ED25519: u8 = 0x01;
/// A timestamped Ed25519 cosignature (C2SP tlog-cosignature v1).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("malformed key: {0}")]
    Format(&'static str),
    #[error("key name {0:?} is not valid in a signed note (empty, or has spaces or '+')")]
    Name(String),
    #[error("unsupported key type {0:#04x}")]
    Alg(u8),
    #[error("key id does not match the key")]
    Id,
    #[error("signing failed")]
    Sign,
}

fn key_id(name: &str, alg: u8, public: &[u8; 32]) -> u32 {
    let mut k = Vec::with_capacity(33);
    k.push(alg);
    k.extend_from_slice(public);
    signed_note::key_id(name, &k)
}

/// The message a cosignature signs (C2SP tlog-cosignature v1).
fn cosigned_message(time: u64, text: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
    m.extend_from_slice(text);
    m
}

/// A private key: the log's (signs checkpoints) or a witness's (cosigns them).
pub struct NoteKey {
    name: String,
    alg: u8,
    id: u32,
    key: SigningKey,
}

impl NoteKey {
    /// A key from 32 random bytes (the caller's randomness: this crate does no I/O).
    pub fn from_seed(name: &str, alg: u8, seed: [u8; 32]) -> Result<Self, KeyError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(KeyError::Name(name.to_owned()));
        }
        if alg != ALG_ED25519 && alg != ALG_COSIGNATURE_V1 {
            return Err(KeyError::Alg(alg));
        }
        let key = SigningKey::from_bytes(&seed);
        Ok(Self {
            name: name.to_owned(),
            alg,
            id: key_id(name, alg, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64(type || seed)>` (Go's note encoding).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(KeyError::Format("does not start with PRIVATE+KEY+"))?;
        let (name, rest) = rest.split_once('+').ok_or(KeyError::Format("no id"))?;
        let (id, b64) = rest.split_once('+').ok_or(KeyError::Format("no key"))?;
        let bytes = BASE64_STANDARD
            .decode(b64)
            .map_err(|_| KeyError::Format("key is not base64"))?;
        let (&alg, seed) = bytes.split_first().ok_or(KeyError::Format("empty key"))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| KeyError::Format("an Ed25519 seed is 32 bytes"))?;
        let key = Self::from_seed(name, alg, seed)?;
        if id.len() != 8 || u32::from_str_radix(id, 16) != Ok(key.id) {
            return Err(KeyError::Id);
        }
        Ok(key)
    }

    /// The private encoding [`NoteKey::parse`] reads (keep it secret).
    pub fn to_private_text(&self) -> String {
        let mut b = vec![self.alg];
        b.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64_STANDARD.encode(b)
        )
    }

    /// The public verifier key, `<name>+<id>+<base64(type || public key)>`.
    pub fn verifier_key(&self) -> String {
        let mut b = vec![self.alg];
        b.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64_STANDARD.encode(b)
        )
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            alg: self.alg,
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A witness's cosignature line over a checkpoint's text, at `time` (Unix seconds).
    pub fn cosign(&self, text: &[u8], time: u64) -> Result<signed_note::Signature, KeyError> {
        if self.alg != ALG_COSIGNATURE_V1 {
            return Err(KeyError::Alg(self.alg));
        }
        let sig = self.key.sign(&cosigned_message(time, text));
        let mut bytes = time.to_be_bytes().to_vec();
        bytes.extend_from_slice(&sig.to_bytes());
        signed_note::Signature::new(self.name.clone(), self.id, bytes).map_err(|_| KeyError::Sign)
    }
}

/// The log's key signs a note's text directly.
impl signed_note::Signer for NoteKey {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        if self.alg != ALG_ED25519 {
            return Err(ed25519_dalek::SignatureError::new());
        }
        Ok(self.key.try_sign(msg)?.to_bytes().to_vec())
    }
}

/// A public key that checks signatures of either type.
#[derive(Clone, Debug)]
pub struct NoteVerifier {
    name: String,
    alg: u8,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<id>+<base64(type || public key)>`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, rest) = text
            .trim()
            .split_once('+')
            .ok_or(KeyError::Format("no id"))?;
        let (id, b64) = rest.split_once('+').ok_or(KeyError::Format("no key"))?;
        if !signed_note::is_key_name_valid(name) {
            return Err(KeyError::Name(name.to_owned()));
        }
        let bytes = BASE64_STANDARD
            .decode(b64)
            .map_err(|_| KeyError::Format("key is not base64"))?;
        let (&alg, public) = bytes.split_first().ok_or(KeyError::Format("empty key"))?;
        if alg != ALG_ED25519 && alg != ALG_COSIGNATURE_V1 {
            return Err(KeyError::Alg(alg));
        }
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| KeyError::Format("an Ed25519 public key is 32 bytes"))?;
        let key =
            VerifyingKey::from_bytes(&public).map_err(|_| KeyError::Format("not a curve point"))?;
        if id.len() != 8 || u32::from_str_radix(id, 16) != Ok(key_id(name, alg, &public)) {
            return Err(KeyError::Id);
        }
        Ok(Self {
            name: name.to_owned(),
            alg,
            id: key_id(name, alg, &public),
            key,
        })
    }

    /// The key's name (a witness's, in its cosignatures).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn alg(&self) -> u8 {
        self.alg
    }

    /// The encoding [`NoteVerifier::parse`] reads.
    pub fn to_text(&self) -> String {
        let mut b = vec![self.alg];
        b.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64_STANDARD.encode(b)
        )
    }
}

impl signed_note::Verifier for NoteVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self.alg {
            ALG_ED25519 => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| self.key.verify(msg, &s).is_ok()),
            ALG_COSIGNATURE_V1 => {
                let Some((time, sig)) = sig.split_first_chunk::<8>() else {
                    return false;
                };
                let time = u64::from_be_bytes(*time);
                ed25519_dalek::Signature::from_slice(sig)
                    .is_ok_and(|s| self.key.verify(&cosigned_message(time, msg), &s).is_ok())
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signed_note::Verifier as _;

    #[test]
    fn keys_round_trip_through_their_encodings() {
        let k = NoteKey::from_seed("example.org/log", ALG_ED25519, [7; 32]).unwrap();
        let again = NoteKey::parse(&k.to_private_text()).unwrap();
        assert_eq!(again.verifier_key(), k.verifier_key());
        let v = NoteVerifier::parse(&k.verifier_key()).unwrap();
        assert_eq!(v.to_text(), k.verifier_key());
        // Go's note package reads the same encoding.
        assert!(signed_note::StandardVerifier::new(&k.verifier_key()).is_ok());
        assert!(signed_note::StandardSigner::new(&k.to_private_text()).is_ok());
    }

    #[test]
    fn malformed_keys_are_refused() {
        let k = NoteKey::from_seed("w1", ALG_COSIGNATURE_V1, [1; 32]).unwrap();
        let text = k.verifier_key();
        let wrong_id = format!("w1+00000000+{}", text.rsplit('+').next().unwrap());
        assert_eq!(NoteVerifier::parse(&wrong_id).unwrap_err(), KeyError::Id);
        assert!(NoteVerifier::parse("w1+1234").is_err());
        assert!(NoteVerifier::parse("").is_err());
        assert!(NoteKey::from_seed("has space", ALG_ED25519, [1; 32]).is_err());
        assert!(NoteKey::parse("PRIVATE+KEY+x+00000000+AAAA").is_err());
    }

    #[test]
    fn a_cosignature_covers_its_time_and_the_text() {
        let k = NoteKey::from_seed("w1", ALG_COSIGNATURE_V1, [1; 32]).unwrap();
        let v = k.verifier();
        let sig = k.cosign(b"origin\n1\nabc=\n", 1_700_000_000).unwrap();
        assert!(v.verify(b"origin\n1\nabc=\n", sig.signature()));
        assert!(!v.verify(b"origin\n2\nabc=\n", sig.signature()));
        let mut later = sig.signature().to_vec();
        later[7] ^= 1;
        assert!(
            !v.verify(b"origin\n1\nabc=\n", &later),
            "the time is signed"
        );
        // A log key does not cosign.
        let log = NoteKey::from_seed("log", ALG_ED25519, [2; 32]).unwrap();
        assert!(log.cosign(b"x\n", 1).is_err());
    }
}
