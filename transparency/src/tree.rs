//! A log held in memory: for tests, benchmarks and tools that rebuild a tree from its entries.

use crate::{Hash, HashReader};
use tlog_tiles::{Error, record_hash, stored_hash_count, stored_hashes_for_record_hash};

/// The stored hashes of a tree (Go's sumdb layout: every complete subtree's hash, in the
/// order they are written), appended to one record at a time.
#[derive(Default, Clone)]
pub struct MemoryLog {
    hashes: Vec<Hash>,
    size: u64,
}

impl HashReader for MemoryLog {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.hashes.get(i).copied())
                    .ok_or(Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl MemoryLog {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one record; returns its index.
    pub fn append(&mut self, data: &[u8]) -> Result<u64, Error> {
        let n = self.size;
        let new = stored_hashes_for_record_hash(n, record_hash(data), self)?;
        debug_assert_eq!(self.hashes.len() as u64, stored_hash_count(n));
        self.hashes.extend(new);
        self.size += 1;
        Ok(n)
    }

    pub fn root(&self) -> Result<Hash, Error> {
        tlog_tiles::tree_hash(self.size, self)
    }

    /// The inclusion proof of record `n` in the tree of `size` records.
    pub fn prove(&self, size: u64, n: u64) -> Result<Vec<Hash>, Error> {
        tlog_tiles::prove_record(size, n, self)
    }

    /// The consistency proof from the tree of `old` records to the tree of `size`.
    pub fn prove_consistency(&self, size: u64, old: u64) -> Result<Vec<Hash>, Error> {
        tlog_tiles::prove_tree(size, old, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::witness::{Verdict, WitnessError, WitnessState, check};
    use crate::{ALG_ED25519, NoteKey, open_checkpoint, sign_checkpoint};

    #[test]
    fn proofs_from_the_memory_log_verify() {
        let mut log = MemoryLog::default();
        for i in 0..100u32 {
            log.append(&i.to_be_bytes()).unwrap();
        }
        let root = log.root().unwrap();
        for n in [0u64, 1, 50, 99] {
            let p = log.prove(100, n).unwrap();
            let h = record_hash(&(n as u32).to_be_bytes());
            tlog_tiles::check_record(&p, 100, root, n, h).unwrap();
            assert!(tlog_tiles::check_record(&p, 100, root, n, record_hash(b"x")).is_err());
        }
    }

    #[test]
    fn a_witness_follows_a_growing_log_and_refuses_forks_and_rollbacks() {
        let key = NoteKey::from_seed("qg.example/log", ALG_ED25519, [1; 32]).unwrap();
        let open = |log: &MemoryLog| {
            let note = sign_checkpoint(&key, log.size(), log.root().unwrap()).unwrap();
            open_checkpoint(note.as_bytes(), &key.verifier(), &[], 0)
                .unwrap()
                .checkpoint
        };
        let mut honest = MemoryLog::default();
        for i in 0..10u32 {
            honest.append(&i.to_be_bytes()).unwrap();
        }
        let first = open(&honest);
        assert_eq!(check(None, &first, &[]), Ok(Verdict::Extends));
        let state = WitnessState::of(&first);

        // A fork of the same size: one entry differs.
        let mut fork = MemoryLog::default();
        for i in 0..10u32 {
            fork.append(&(if i == 3 { 99 } else { i }).to_be_bytes())
                .unwrap();
        }
        assert!(matches!(
            check(Some(&state), &open(&fork), &[]),
            Err(WitnessError::Fork { size: 10, .. })
        ));
        // The fork grown further: its consistency proof does not lead back to what was cosigned.
        for i in 10..20u32 {
            fork.append(&i.to_be_bytes()).unwrap();
            honest.append(&i.to_be_bytes()).unwrap();
        }
        let proof = fork.prove_consistency(20, 10).unwrap();
        assert!(matches!(
            check(Some(&state), &open(&fork), &proof),
            Err(WitnessError::Inconsistent {
                had: 10,
                got: 20,
                ..
            })
        ));
        // The honest extension passes; the same checkpoint again is `Same`.
        let proof = honest.prove_consistency(20, 10).unwrap();
        let next = open(&honest);
        assert_eq!(check(Some(&state), &next, &proof), Ok(Verdict::Extends));
        let state = WitnessState::of(&next);
        assert_eq!(check(Some(&state), &next, &[]), Ok(Verdict::Same));
        // A rollback to the old checkpoint.
        assert_eq!(
            check(Some(&state), &first, &[]),
            Err(WitnessError::Rollback { had: 20, got: 10 })
        );
    }
}
