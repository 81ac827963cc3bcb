//! The data digest on the device: `protocol::Digest::of_data` (a SHA-256 tree over
//! [`protocol::DATA_CHUNK`]-byte chunks) computed in WGSL, one dispatch per level, so only the
//! 32-byte digest crosses to the host. The runner in `client-wasm` drives it at every
//! checkpoint; tests hold it byte-identical to the CPU definition on inputs of awkward sizes.
//!
//! Bindings (the kernels' convention): `@binding(0)` the dispatch words, `@binding(1)` the input
//! (read-only), `@binding(2)` the digests out (8 u32 words each).

use crate::program::{Entry, WORDS, words};
use protocol::DATA_CHUNK;

pub const WGSL: &str = concat!(
    crate::wgsl!("prelude.wgsl"),
    crate::wgsl!("digest/digest.wgsl")
);

pub const ENTRY: Entry = Entry {
    name: std::borrow::Cow::Borrowed("data_digest"),
    workgroup_size: 64,
};

/// One level of the tree: hash the `len` bytes of its input in `chunks` chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub len: u64,
    pub chunks: u32,
}

impl Level {
    /// The dispatch words of this level.
    pub fn words(&self) -> [u32; WORDS] {
        // Inputs are bounded by a storage binding (< 4 GiB), so the length fits a word.
        words(&[self.len as u32, self.chunks])
    }

    /// Bytes of digests this level writes.
    pub fn out_len(&self) -> u64 {
        32 * u64::from(self.chunks)
    }
}

/// The levels that reduce `len` bytes of data to one digest (at least one level).
pub fn levels(len: u64) -> Vec<Level> {
    let mut out = Vec::new();
    let mut len = len;
    loop {
        let chunks = len.div_ceil(DATA_CHUNK as u64).max(1) as u32;
        out.push(Level { len, chunks });
        if chunks == 1 {
            return out;
        }
        len = 32 * u64::from(chunks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_reduce_to_one_digest() {
        assert_eq!(levels(0), [Level { len: 0, chunks: 1 }]);
        assert_eq!(
            levels(4096),
            [Level {
                len: 4096,
                chunks: 1
            }]
        );
        assert_eq!(
            levels(4097),
            [
                Level {
                    len: 4097,
                    chunks: 2
                },
                Level { len: 64, chunks: 1 }
            ]
        );
        // 16 MiB: 4096 leaves, 32 groups, 1.
        let l = levels(16 << 20);
        assert_eq!(
            l.iter().map(|l| l.chunks).collect::<Vec<_>>(),
            [4096, 32, 1]
        );
        assert_eq!(l[1].len, l[0].out_len());
    }
}
