//! Checkpoints as signed notes: signed by the log, cosigned by witnesses, opened by verifiers.

use crate::{Checkpoint, Hash, LogError, NoteKey, NoteVerifier};
use signed_note::{Note, NoteError, Verifier as _, VerifierList};

/// The log's signed checkpoint for a tree of `size` entries with root `root`; the origin is
/// the key's name.
pub fn sign_checkpoint(key: &NoteKey, size: u64, root: Hash) -> Result<String, LogError> {
    let cp = Checkpoint::new(key.name(), size, root, "")
        .map_err(|e| LogError::Malformed(e.to_string()))?;
    let mut note = Note::new(&cp.to_bytes(), &[]).map_err(note_error)?;
    note.add_sigs(&[key]).map_err(note_error)?;
    String::from_utf8(note.to_bytes()).map_err(|e| LogError::Malformed(e.to_string()))
}

fn note_error(e: NoteError) -> LogError {
    match e {
        NoteError::InvalidSignature { name, id } => {
            LogError::BadSignature(format!("{name}+{id:08x}"))
        }
        e => LogError::Malformed(e.to_string()),
    }
}

/// A checkpoint whose log signature verified, with the witnesses that validly cosigned it.
#[derive(Debug)]
pub struct TrustedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The note's text (what signatures cover).
    pub text: Vec<u8>,
    /// Names of the listed witnesses whose cosignatures verified.
    pub witnesses: Vec<String>,
}

/// Opens a checkpoint note: the log's signature must verify, its origin must be the log's
/// name, and at least `min_witnesses` of `witnesses` must have cosigned it. Any signature by a
/// listed key that does not verify is an error; signatures by unknown keys are ignored.
pub fn open_checkpoint(
    note: &[u8],
    log: &NoteVerifier,
    witnesses: &[NoteVerifier],
    min_witnesses: usize,
) -> Result<TrustedCheckpoint, LogError> {
    let parsed = Note::from_bytes(note).map_err(note_error)?;
    let mut list: Vec<Box<dyn signed_note::Verifier>> = vec![Box::new(log.clone())];
    for w in witnesses {
        if (w.name(), w.key_id()) != (log.name(), log.key_id()) {
            list.push(Box::new(w.clone()));
        }
    }
    let (verified, _unknown) = match parsed.verify(&VerifierList::new(list)) {
        Ok(v) => v,
        Err(NoteError::UnverifiedNote) => return Err(LogError::NotSignedByLog(log.to_text())),
        Err(e) => return Err(note_error(e)),
    };
    if !verified
        .iter()
        .any(|s| s.name() == log.name() && s.id() == log.key_id())
    {
        return Err(LogError::NotSignedByLog(log.to_text()));
    }
    let checkpoint =
        Checkpoint::from_bytes(parsed.text()).map_err(|e| LogError::Malformed(e.to_string()))?;
    if checkpoint.origin() != log.name() {
        return Err(LogError::WrongOrigin {
            expected: log.name().to_owned(),
            found: checkpoint.origin().to_owned(),
        });
    }
    let mut cosigned: Vec<String> = verified
        .iter()
        .filter(|s| {
            witnesses.iter().any(|w| {
                w.alg() == crate::ALG_COSIGNATURE_V1 && w.name() == s.name() && w.key_id() == s.id()
            })
        })
        .map(|s| s.name().to_owned())
        .collect();
    cosigned.sort();
    cosigned.dedup();
    if cosigned.len() < min_witnesses {
        return Err(LogError::NotEnoughWitnesses {
            needed: min_witnesses,
            found: cosigned.len(),
        });
    }
    Ok(TrustedCheckpoint {
        checkpoint,
        text: parsed.text().to_vec(),
        witnesses: cosigned,
    })
}

/// Checks one witness's cosignature line (`— <name> <base64>`) over a checkpoint's text;
/// returns the witness's name.
pub fn check_cosignature(
    text: &[u8],
    line: &str,
    witnesses: &[NoteVerifier],
) -> Result<String, LogError> {
    let sig = signed_note::Signature::from_bytes(line.trim_end_matches('\n').as_bytes())
        .map_err(|_| LogError::Malformed("a cosignature line is `— <name> <base64>`".into()))?;
    let w = witnesses
        .iter()
        .find(|w| {
            w.alg() == crate::ALG_COSIGNATURE_V1 && w.name() == sig.name() && w.key_id() == sig.id()
        })
        .ok_or_else(|| LogError::BadSignature(format!("{} is not a known witness", sig.name())))?;
    if !w.verify(text, sig.signature()) {
        return Err(LogError::BadSignature(format!(
            "{}'s cosignature does not verify",
            sig.name()
        )));
    }
    Ok(sig.name().to_owned())
}

/// The text a signed note's signatures cover: the note up to the blank line before its
/// signature lines, with its final newline (empty, plus that newline, if there is none).
pub fn note_text(note: &str) -> String {
    note.split_once("\n\n").map_or("", |t| t.0).to_owned() + "\n"
}

/// A signed checkpoint note with witnesses' cosignature lines appended.
pub fn add_cosignatures(note: &str, lines: &[String]) -> String {
    let mut out = note.to_owned();
    for l in lines {
        out.push_str(l.trim_end_matches('\n'));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ALG_COSIGNATURE_V1, ALG_ED25519};

    fn keys() -> (NoteKey, NoteKey, NoteKey) {
        (
            NoteKey::from_seed("qg.example/log", ALG_ED25519, [1; 32]).unwrap(),
            NoteKey::from_seed("w1.example", ALG_COSIGNATURE_V1, [2; 32]).unwrap(),
            NoteKey::from_seed("w2.example", ALG_COSIGNATURE_V1, [3; 32]).unwrap(),
        )
    }

    #[test]
    fn a_cosigned_checkpoint_opens_with_its_witnesses() {
        let (log, w1, w2) = keys();
        let note = sign_checkpoint(&log, 5, Hash([9; 32])).unwrap();
        let text = note.split("\n\n").next().unwrap().to_owned() + "\n";
        let lines: Vec<String> = [&w1, &w2]
            .iter()
            .map(|w| String::from_utf8(w.cosign(text.as_bytes(), 100).unwrap().to_bytes()).unwrap())
            .collect();
        for l in &lines {
            check_cosignature(text.as_bytes(), l, &[w1.verifier(), w2.verifier()]).unwrap();
        }
        let full = add_cosignatures(&note, &lines);
        let ws = [w1.verifier(), w2.verifier()];
        let t = open_checkpoint(full.as_bytes(), &log.verifier(), &ws, 2).unwrap();
        assert_eq!(t.checkpoint.size(), 5);
        assert_eq!(t.witnesses, vec!["w1.example", "w2.example"]);
        // Without cosignatures, a checkpoint that needs them is refused.
        assert_eq!(
            open_checkpoint(note.as_bytes(), &log.verifier(), &ws, 1).unwrap_err(),
            LogError::NotEnoughWitnesses {
                needed: 1,
                found: 0
            }
        );
        // A cosignature over another checkpoint is refused by the coordinator.
        assert!(check_cosignature(b"other\n1\nAAAA\n", &lines[0], &ws).is_err());
    }

    #[test]
    fn a_checkpoint_signed_with_another_key_is_refused() {
        let (log, _, _) = keys();
        let impostor = NoteKey::from_seed("qg.example/log", ALG_ED25519, [8; 32]).unwrap();
        let note = sign_checkpoint(&impostor, 5, Hash([9; 32])).unwrap();
        assert!(matches!(
            open_checkpoint(note.as_bytes(), &log.verifier(), &[], 0),
            Err(LogError::NotSignedByLog(_))
        ));
        // The right key over an edited text: the signature fails.
        let good = sign_checkpoint(&log, 5, Hash([9; 32])).unwrap();
        let edited = good.replacen("\n5\n", "\n6\n", 1);
        assert!(matches!(
            open_checkpoint(edited.as_bytes(), &log.verifier(), &[], 0),
            Err(LogError::BadSignature(_))
        ));
    }
}
