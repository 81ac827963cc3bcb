//! A device self-test of `prelude.wgsl`: Philox4x32-10 on given (counter, key) cases and the
//! 16-bit-halves multiply on given pairs, run through the same runner as the kernels. Its
//! expected answers come from `philox.rs` (checked against Random123's vectors) and u64
//! multiplication.

use crate::program::{
    BufferSpec, Dispatch, Entry, Init, Plan, Program, Segment, le_bytes_u32, u32s_from_le, words,
};
use std::borrow::Cow;

pub const WGSL: &str = concat!(crate::wgsl!("prelude.wgsl"), crate::wgsl!("selftest.wgsl"));
const ENTRIES: &[Entry] = &[
    Entry {
        name: Cow::Borrowed("philox_kat"),
        workgroup_size: 64,
    },
    Entry {
        name: Cow::Borrowed("mulhilo_check"),
        workgroup_size: 64,
    },
];

pub struct SelfTest {
    pub philox_cases: Vec<([u32; 4], [u32; 2])>,
    pub mul_pairs: Vec<(u32, u32)>,
}

impl SelfTest {
    /// Splits the final state into (Philox outputs, (hi, lo) products).
    pub fn decode(state: &[Vec<u8>]) -> (Vec<[u32; 4]>, Vec<(u32, u32)>) {
        let p = u32s_from_le(&state[0])
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect();
        let m = u32s_from_le(&state[1])
            .chunks_exact(2)
            .map(|c| (c[0], c[1]))
            .collect();
        (p, m)
    }
}

impl Plan for SelfTest {
    fn program(&self) -> Program {
        let cases: Vec<u32> = self
            .philox_cases
            .iter()
            .flat_map(|(c, k)| c.iter().chain(k.iter()).copied())
            .collect();
        let pairs: Vec<u32> = self.mul_pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        let buf = |label: &'static str, init: Vec<u8>, state| BufferSpec {
            label: label.into(),
            init: Init::Bytes(init),
            state,
            size_field: "cases".into(),
        };
        Program {
            wgsl: WGSL.into(),
            entries: ENTRIES.into(),
            buffers: vec![
                buf("cases", le_bytes_u32(&cases), false),
                buf("pairs", le_bytes_u32(&pairs), false),
                buf("philox_out", vec![0; 16 * self.philox_cases.len()], true),
                buf("mul_out", vec![0; 8 * self.mul_pairs.len()], true),
            ],
            init_ops: Vec::new(),
            total_steps: 1,
            untrusted: false,
        }
    }

    fn segment_count(&self) -> usize {
        1
    }

    fn segment(&self, _index: usize) -> Segment {
        let w = words(&[self.philox_cases.len() as u32, self.mul_pairs.len() as u32]);
        Segment {
            ops: vec![
                Dispatch {
                    entry: 0,
                    threads: self.philox_cases.len() as u32,
                    words: w,
                },
                Dispatch {
                    entry: 1,
                    threads: self.mul_pairs.len() as u32,
                    words: w,
                },
            ],
            end_step: 1,
            checkpoint: false,
        }
    }
}
