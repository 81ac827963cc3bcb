//! The declarative description of a GPU computation that the one runner in `client-wasm`
//! executes on any adapter: buffers with their initial bytes, WGSL entry points, and a list of
//! segments of dispatches. Every kernel describes itself this way, so the host code is written
//! once for WebGPU and native.
//!
//! Binding convention (every kernel's WGSL follows it, see `prelude.wgsl`):
//! `@group(0) @binding(0)` is the per-dispatch uniform (16 u32 words at a dynamic offset);
//! `@binding(1 + i)` is `buffers[i]`, a read-write storage buffer.

use protocol::{Checkpoint, Digest};
use std::borrow::Cow;
use std::sync::Arc;

/// Per-dispatch parameter words.
pub const WORDS: usize = 16;

/// A compute entry point and its `@workgroup_size` (x only; kernels are one-dimensional).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Cow<'static, str>,
    pub workgroup_size: u32,
}

/// How a buffer starts on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// These bytes, uploaded from the host (small buffers: tables, initial particles).
    Bytes(Vec<u8>),
    /// This many zero bytes, allocated on the device with nothing uploaded; the program's
    /// `init_ops` fill what must not stay zero.
    Zeros(usize),
}

impl Init {
    pub fn len(&self) -> usize {
        match self {
            Init::Bytes(b) => b.len(),
            Init::Zeros(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes on the host (zeros built here: only for small buffers and the CPU side).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Init::Bytes(b) => b.clone(),
            Init::Zeros(n) => vec![0; *n],
        }
    }
}

/// A storage buffer: how it starts (its size is that length, a multiple of 4 for state
/// buffers, so they can be copied and hashed on the device).
#[derive(Clone, Debug)]
pub struct BufferSpec {
    pub label: Cow<'static, str>,
    pub init: Init,
    /// State buffers make up checkpoints and the final readback; the others are scratch that
    /// every segment re-derives.
    pub state: bool,
    /// The parameter whose value sets this buffer's size, named in "too large" errors.
    pub size_field: Cow<'static, str>,
}

/// One dispatch: `threads` invocations of `entries[entry]` with the given words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub entry: usize,
    pub threads: u32,
    pub words: [u32; WORDS],
}

/// A run of dispatches ending at step `end_step`; after it the runner reports progress and, where
/// `checkpoint` is set, hashes the state buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub ops: Vec<Dispatch>,
    pub end_step: u64,
    pub checkpoint: bool,
}

/// The whole program apart from its segments.
#[derive(Clone, Debug)]
pub struct Program {
    /// The source (shared: the runner knows a compiled program by its text).
    pub wgsl: Arc<str>,
    pub entries: Cow<'static, [Entry]>,
    pub buffers: Vec<BufferSpec>,
    /// Dispatches that build the initial state on the device, run once before step 0 (not on
    /// resume, which uploads a saved state instead): so they write state buffers only.
    pub init_ops: Vec<Dispatch>,
    pub total_steps: u64,
    /// Code nobody here wrote (a scientist's package): the runner splits its segments into
    /// submissions sized by their measured time and bounds how long it waits for one.
    pub untrusted: bool,
}

impl Program {
    /// Indices of the state buffers, in order.
    pub fn state_buffers(&self) -> Vec<usize> {
        (0..self.buffers.len())
            .filter(|&i| self.buffers[i].state)
            .collect()
    }

    /// Bytes in one state (the state buffers concatenated): what a checkpoint digest covers.
    pub fn state_len(&self) -> u64 {
        self.buffers
            .iter()
            .filter(|b| b.state)
            .map(|b| b.init.len() as u64)
            .sum()
    }
}

/// How a kernel's state is drawn (the volunteer page's live view), by the same device from the
/// same buffers, with nothing read back. The runner binds the words as a uniform at
/// `@binding(0)` and program buffer `buffer` read-only at `@binding(1)`, and draws `vertices`
/// vertices × `instances` instances (a triangle list) with the entry points `view_vs` and
/// `view_fs` of `wgsl`, over a square target cleared to [`View::BACKGROUND`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub wgsl: Arc<str>,
    pub buffer: usize,
    pub words: [u32; WORDS],
    pub vertices: u32,
    pub instances: u32,
}

impl View {
    /// The background, linear RGBA.
    pub const BACKGROUND: [f64; 4] = [0.965, 0.969, 0.976, 1.0];
}

/// Something the runner can execute: a program and its segments, produced lazily so a
/// million-step run is not materialised at once.
pub trait Plan {
    fn program(&self) -> Program;
    fn segment_count(&self) -> usize;
    fn segment(&self, index: usize) -> Segment;
    /// How the state is drawn; None: not drawn.
    fn view(&self) -> Option<View> {
        None
    }
}

/// Segment boundaries shared by the CPU reference and the GPU plan: a segment ends at every
/// checkpoint step (multiples of `every`, and the last step) and at least every `chunk` steps.
/// Steps are 1-based: step `s` is the state after `s` steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub total: u64,
    pub every: u64,
    pub chunk: u64,
}

impl Schedule {
    pub fn new(total: u64, every: u64, chunk: u64) -> Self {
        let chunk = chunk.clamp(1, every.max(1));
        Self {
            total,
            every: every.max(1),
            chunk,
        }
    }

    pub fn is_checkpoint(&self, step: u64) -> bool {
        step == self.total || step.is_multiple_of(self.every)
    }

    /// Segments are aligned so that each checkpoint interval splits into whole chunks.
    pub fn segment_count(&self) -> usize {
        let full = self.total / self.every;
        let rest = self.total % self.every;
        (full * self.every.div_ceil(self.chunk) + rest.div_ceil(self.chunk)) as usize
    }

    /// Steps `[start, end)` of segment `i` (0-based steps: the segment runs steps start..end).
    pub fn bounds(&self, i: usize) -> (u64, u64) {
        let per = self.every.div_ceil(self.chunk);
        let i = i as u64;
        let interval = i / per;
        let within = i % per;
        let base = interval * self.every;
        let start = base + within * self.chunk;
        let end = (start + self.chunk).min(base + self.every).min(self.total);
        (start, end)
    }

    pub fn checkpoint_count(&self) -> u64 {
        self.total / self.every + u64::from(!self.total.is_multiple_of(self.every))
    }
}

/// Collects checkpoint digests on the CPU, at the same steps as the GPU plan.
pub struct CheckpointSink<'a> {
    schedule: Schedule,
    pub checkpoints: Vec<Checkpoint>,
    /// Keep checkpoint states in `states` (to answer challenges): the newest one, and before
    /// it the latest that fit in [`protocol::KEPT_STATE_BYTES`].
    pub keep_states: bool,
    pub states: Vec<(u64, Vec<Vec<u8>>)>,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<'a> CheckpointSink<'a> {
    pub fn new(schedule: Schedule, progress: &'a mut dyn FnMut(u64, u64)) -> Self {
        Self {
            schedule,
            checkpoints: Vec::new(),
            keep_states: false,
            states: Vec::new(),
            progress,
        }
    }

    /// Call after every step with a closure producing the state bytes (called only at
    /// checkpoints, so the conversion costs nothing in between).
    pub fn step(&mut self, step: u64, state: impl FnOnce() -> Vec<Vec<u8>>) {
        if self.schedule.is_checkpoint(step) {
            let parts = state();
            let digest = Digest::of_data_parts(parts.iter().map(Vec::as_slice));
            self.checkpoints.push(Checkpoint { step, digest });
            if self.keep_states {
                self.states.push((step, parts));
                drop_oldest_states(&mut self.states, 1);
            }
        }
        if step == self.schedule.total || step.is_multiple_of(self.schedule.chunk) {
            (self.progress)(step, self.schedule.total);
        }
    }
}

/// Drops the oldest of `states` until those before the newest `spare` fit in
/// [`protocol::KEPT_STATE_BYTES`] (as [`protocol::kept_states`] counts them).
pub fn drop_oldest_states(states: &mut Vec<(u64, Vec<Vec<u8>>)>, spare: usize) {
    let Some((_, newest)) = states.last() else {
        return;
    };
    let each: usize = newest.iter().map(Vec::len).sum();
    let older = states.len().saturating_sub(spare);
    let keep = protocol::kept_states(older, each as u64);
    states.drain(..older - keep);
}

/// How many invocations of a workgroup of `size` cover `threads`.
pub fn workgroups(threads: u32, size: u32) -> u32 {
    threads.div_ceil(size)
}

/// Words with the first few set.
pub fn words(first: &[u32]) -> [u32; WORDS] {
    let mut w = [0u32; WORDS];
    w[..first.len()].copy_from_slice(first);
    w
}

/// Little-endian bytes of a u32 slice (the canonical byte order on every device).
pub fn le_bytes_u32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn le_bytes_i32(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn le_bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reads little-endian words; a trailing partial word is ignored (callers check lengths).
pub fn u32s_from_le(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn i32s_from_le(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn f32s_from_le(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_bounds(s: &Schedule) -> Vec<(u64, u64)> {
        (0..s.segment_count()).map(|i| s.bounds(i)).collect()
    }

    #[test]
    fn schedule_covers_every_step_once_and_ends_at_checkpoints() {
        for (total, every, chunk) in [
            (10, 10, 3),
            (10, 4, 3),
            (100, 7, 50),
            (1, 1, 1),
            (17, 5, 5),
            (1000, 1000, 256),
        ] {
            let s = Schedule::new(total, every, chunk);
            let b = all_bounds(&s);
            assert_eq!(b.first().map(|x| x.0), Some(0));
            assert_eq!(b.last().map(|x| x.1), Some(total));
            for w in b.windows(2) {
                assert_eq!(w[0].1, w[1].0, "{total} {every} {chunk}: {b:?}");
            }
            for &(a, e) in &b {
                assert!(e > a && e - a <= s.chunk);
            }
            // Every checkpoint step is a segment end.
            let ends: Vec<u64> = b.iter().map(|x| x.1).collect();
            for step in 1..=total {
                if s.is_checkpoint(step) {
                    assert!(ends.contains(&step), "checkpoint {step} not a segment end");
                }
            }
            let cps = (1..=total).filter(|&x| s.is_checkpoint(x)).count() as u64;
            assert_eq!(cps, s.checkpoint_count());
        }
    }

    #[test]
    fn kept_states_are_the_latest_that_fit() {
        // Four states of a quarter of the budget, plus one byte: three fit.
        let big = (protocol::KEPT_STATE_BYTES / 4 + 1) as usize;
        let mut progress = |_, _| {};
        let mut sink = CheckpointSink::new(Schedule::new(6, 1, 1), &mut progress);
        sink.keep_states = true;
        for step in 1..=6 {
            sink.step(step, || vec![vec![step as u8; big]]);
        }
        assert_eq!(sink.checkpoints.len(), 6, "every digest is still reported");
        let steps: Vec<u64> = sink.states.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            steps,
            [3, 4, 5, 6],
            "the newest, and the three before it that fit"
        );
        // Without a spared newest state (the GPU path keeps only states before the last).
        drop_oldest_states(&mut sink.states, 0);
        assert_eq!(sink.states.len(), 3);
        assert_eq!(sink.states[0].0, 4);
        // Small states are all kept.
        let mut small = vec![(1, vec![vec![0u8; 8]]), (2, vec![vec![0u8; 8]])];
        drop_oldest_states(&mut small, 1);
        assert_eq!(small.len(), 2);
    }
}
