//! `percolation2d`: site percolation on an open L×L lattice (no wrap-around), several
//! independent samples per unit. Bit-exact on every device.
//!
//! * Steps are samples. Site i of sample s is occupied iff
//!   `Philox(i / 4, s, 3, 0; seed)[i % 4] < floor(p·2³²)` (p = 1: always): one Philox call
//!   gives four consecutive sites their draws (version 2).
//! * Clusters: 4-neighbour connectivity. Every occupied site is labelled with the smallest site
//!   index of its cluster (unique, whatever algorithm or order computed it); empty sites are
//!   0xFFFFFFFF.
//! * Output layout: per sample three little-endian u32: spans (1 if one cluster touches both
//!   row 0 and row L−1), size of the largest cluster, number of clusters.
//! * State buffers (checkpoints after samples): the labels of the last sample, then the stats.

use crate::philox::{self, accept, key_of, philox4x32_10};
use crate::program::{
    BufferSpec, CheckpointSink, Dispatch, Entry, Init, Program, Schedule, View, le_bytes_u32,
    u32s_from_le, words,
};
use crate::{
    Comparison, Kernel, KernelInfo, ParamError, check_finite, check_range,
    normalize_checkpoint_every,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::borrow::Cow;

/// The live view (see [`crate::program::View`]).
const VIEW_WGSL: &str = concat!(
    crate::wgsl!("view.wgsl"),
    crate::wgsl!("lattice_view.wgsl"),
    crate::wgsl!("percolation2d/view.wgsl")
);
pub const WGSL: &str = concat!(
    crate::wgsl!("prelude.wgsl"),
    crate::wgsl!("percolation2d/percolation2d.wgsl")
);
const fn entry(name: &'static str) -> Entry {
    Entry {
        name: Cow::Borrowed(name),
        workgroup_size: 256,
    }
}
const ENTRIES: &[Entry] = &[
    entry("perc_init"),
    entry("perc_merge"),
    entry("perc_compress"),
    entry("perc_sizes"),
    entry("perc_stats"),
];
const INIT: usize = 0;
const MERGE: usize = 1;
const COMPRESS: usize = 2;
const SIZES: usize = 3;
const STATS: usize = 4;
const STREAM_SITES: u32 = 3;
pub const EMPTY: u32 = u32::MAX;
/// Samples per submission.
const CHUNK: u64 = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Lattice side, 4..=4096.
    #[serde(rename = "L")]
    pub l: u32,
    /// Occupation probability, 0..=1.
    pub p: f64,
    /// Independent samples, 1..=100000.
    pub samples: u64,
    pub seed: u64,
    /// Samples between checkpoint digests (0 or absent: at most 16 checkpoints).
    #[serde(default)]
    pub checkpoint_every: u64,
}

impl Params {
    fn sites(&self) -> usize {
        (self.l as usize) * (self.l as usize)
    }
    /// Occupation of sites `4q..4q + 4` of sample `sample`.
    fn occupied4(&self, q: u32, sample: u32, key: [u32; 2], thr: u32) -> [bool; 4] {
        philox4x32_10([q, sample, STREAM_SITES, 0], key).map(|u| accept(u, thr))
    }
}

pub struct Percolation2d;

impl Kernel for Percolation2d {
    type Params = Params;
    const INFO: KernelInfo = KernelInfo {
        name: "percolation2d",
        version: 2,
        description: "2D site percolation, open LxL, spanning/largest/cluster count per sample; bit-exact",
        plain: "2D percolation: when scattered sites join into one path across, like water through coffee grounds",
        observables: &[
            crate::obs(
                "spanning_fraction",
                "fraction of samples spanning",
                Some("spanning_fraction_err"),
            ),
            crate::obs(
                "largest_fraction",
                "largest cluster / sites",
                Some("largest_fraction_err"),
            ),
            crate::obs("clusters_per_site", "clusters per site", None),
        ],
        step_unit: "sample",
        work_unit: "site visits",
        comparison: Comparison::Digest,
    };

    fn normalize(mut p: Params) -> Result<Params, ParamError> {
        check_range("L", p.l, 4, 4096)?;
        check_finite("p", p.p, 0.0, 1.0)?;
        check_range("samples", p.samples, 1, 100_000)?;
        p.checkpoint_every = normalize_checkpoint_every(p.samples, p.checkpoint_every)?;
        Ok(p)
    }

    fn schedule(p: &Params) -> Schedule {
        Schedule::new(p.samples, p.checkpoint_every, CHUNK)
    }

    fn program(p: &Params) -> Program {
        let n = p.sites();
        Program {
            wgsl: WGSL.into(),
            entries: ENTRIES.into(),
            buffers: vec![
                BufferSpec {
                    label: "labels".into(),
                    init: Init::Zeros(4 * n),
                    state: true,
                    size_field: "L".into(),
                },
                BufferSpec {
                    label: "stats".into(),
                    init: Init::Zeros(12 * p.samples as usize),
                    state: true,
                    size_field: "samples".into(),
                },
                BufferSpec {
                    label: "sizes".into(),
                    init: Init::Zeros(4 * n),
                    state: false,
                    size_field: "L".into(),
                },
                BufferSpec {
                    label: "top".into(),
                    init: Init::Zeros(4 * n),
                    state: false,
                    size_field: "L".into(),
                },
            ],
            init_ops: Vec::new(),
            total_steps: p.samples,
            untrusted: false,
        }
    }

    fn ops(p: &Params, start: u64, end: u64) -> Vec<Dispatch> {
        let [k0, k1] = key_of(p.seed);
        let thr = philox::threshold(p.p);
        let n = p.sites() as u32;
        let d = |entry, w: &[u32]| Dispatch {
            entry,
            // perc_init: one invocation per four sites (one Philox call each).
            threads: if entry == INIT { n.div_ceil(4) } else { n },
            words: words(w),
        };
        let mut ops = Vec::new();
        for s in start..end {
            let s = s as u32;
            for (entry, w) in [
                (INIT, [p.l, s, thr, k0, k1]),
                (MERGE, [p.l, 0, 0, 0, 0]),
                (COMPRESS, [p.l, 0, 0, 0, 0]),
                (SIZES, [p.l, 0, 0, 0, 0]),
                (STATS, [p.l, s, 0, 0, 0]),
            ] {
                ops.push(d(entry, &w));
            }
        }
        ops
    }

    fn cpu(p: &Params, _threads: usize, sink: &mut CheckpointSink<'_>) -> Vec<Vec<u8>> {
        let mut run = CpuRun::new(p, vec![0; 3 * p.samples as usize]);
        for s in 0..p.samples {
            run.sample(s);
            sink.step(s + 1, || run.state());
        }
        run.state()
    }

    fn resumable_on_cpu() -> bool {
        true
    }

    fn state_len(p: &Params) -> u64 {
        4 * p.sites() as u64 + 12 * p.samples
    }

    /// Samples are independent: a segment keeps the stats of the samples before `start` and
    /// computes its own; the labels in `state` (the last sample's) only have their size checked.
    fn cpu_segment(p: &Params, state: &[Vec<u8>], start: u64, end: u64) -> Option<Vec<Vec<u8>>> {
        let [labels, stats] = state else { return None };
        if labels.len() != 4 * p.sites()
            || stats.len() != 12 * p.samples as usize
            || start > end
            || end > p.samples
        {
            return None;
        }
        let stats = u32s_from_le(stats);
        // Samples not run yet have no stats: anything else is not a state of this kernel.
        if stats[3 * start as usize..].iter().any(|&x| x != 0) {
            return None;
        }
        let mut run = CpuRun::new(p, stats);
        run.labels = u32s_from_le(labels);
        for s in start..end {
            run.sample(s);
        }
        Some(run.state())
    }

    fn canonical_output(_p: &Params, state: &[Vec<u8>]) -> Vec<u8> {
        state.get(1).cloned().unwrap_or_default()
    }

    fn output_len(p: &Params) -> u64 {
        12 * p.samples
    }

    fn summarize(p: &Params, output: &[u8]) -> Value {
        let st = u32s_from_le(output);
        let n = p.sites() as f64;
        let k = (st.len() / 3).max(1) as f64;
        let spans: Vec<f64> = st.chunks_exact(3).map(|x| f64::from(x[0])).collect();
        let largest: Vec<f64> = st.chunks_exact(3).map(|x| f64::from(x[1]) / n).collect();
        let clusters: Vec<f64> = st.chunks_exact(3).map(|x| f64::from(x[2]) / n).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / k;
        let sem = |v: &[f64]| {
            let m = mean(v);
            if v.len() < 2 {
                return Value::Null;
            }
            json!((v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (k - 1.0) / k).sqrt())
        };
        json!({
            "samples": st.len() / 3,
            "spanning_fraction": mean(&spans), "spanning_fraction_err": sem(&spans),
            "largest_fraction": mean(&largest), "largest_fraction_err": sem(&largest),
            "clusters_per_site": mean(&clusters),
        })
    }

    fn view(p: &Params) -> View {
        View {
            wgsl: VIEW_WGSL.into(),
            buffer: 0,
            words: words(&[p.l]),
            vertices: 3,
            instances: 1,
        }
    }

    fn work(p: &Params) -> u64 {
        p.sites() as u64 * p.samples
    }
}

/// The CPU reference's working set: one sample at a time.
struct CpuRun<'a> {
    p: &'a Params,
    key: [u32; 2],
    thr: u32,
    /// Per sample: spans, largest cluster, clusters.
    stats: Vec<u32>,
    labels: Vec<u32>,
    parent: Vec<u32>,
    size: Vec<u32>,
    top: Vec<bool>,
}

impl<'a> CpuRun<'a> {
    fn new(p: &'a Params, stats: Vec<u32>) -> Self {
        let n = p.sites();
        Self {
            p,
            key: key_of(p.seed),
            thr: philox::threshold(p.p),
            stats,
            labels: vec![EMPTY; n],
            parent: vec![0; n],
            size: vec![0; n],
            top: vec![false; n],
        }
    }

    /// The state buffers: the last sample's labels, then the stats.
    fn state(&self) -> Vec<Vec<u8>> {
        vec![le_bytes_u32(&self.labels), le_bytes_u32(&self.stats)]
    }

    /// Sample `s`: labels its clusters and writes its stats.
    fn sample(&mut self, s: u64) {
        let p = self.p;
        let l = p.l as usize;
        let n = p.sites();
        let Self {
            key,
            thr,
            stats,
            labels,
            parent,
            size,
            top,
            ..
        } = self;
        // Union-find with the smaller index as root: the root is the cluster's minimum.
        for (q, slots) in parent.chunks_mut(4).enumerate() {
            let occupied = p.occupied4(q as u32, s as u32, *key, *thr);
            for (j, slot) in slots.iter_mut().enumerate() {
                *slot = if occupied[j] {
                    (4 * q + j) as u32
                } else {
                    EMPTY
                };
            }
        }
        for i in 0..n {
            if parent[i] == EMPTY {
                continue;
            }
            let (r, c) = (i / l, i % l);
            if c + 1 < l && parent[i + 1] != EMPTY {
                union(parent, i, i + 1);
            }
            if r + 1 < l && parent[i + l] != EMPTY {
                union(parent, i, i + l);
            }
        }
        size.fill(0);
        top.fill(false);
        for i in 0..n {
            labels[i] = if parent[i] == EMPTY {
                EMPTY
            } else {
                find(parent, i)
            };
            if labels[i] != EMPTY {
                size[labels[i] as usize] += 1;
                if i < l {
                    top[labels[i] as usize] = true;
                }
            }
        }
        let s = s as usize;
        let st = &mut stats[3 * s..3 * s + 3];
        st.fill(0);
        for i in 0..n {
            if labels[i] == i as u32 {
                st[2] += 1;
                st[1] = st[1].max(size[i]);
            }
            if i >= l * (l - 1) && labels[i] != EMPTY && top[labels[i] as usize] {
                st[0] = 1;
            }
        }
    }
}

fn find(parent: &mut [u32], mut i: usize) -> u32 {
    while parent[i] as usize != i {
        let gp = parent[parent[i] as usize];
        parent[i] = gp;
        i = gp as usize;
    }
    i as u32
}

fn union(parent: &mut [u32], a: usize, b: usize) {
    let ra = find(parent, a);
    let rb = find(parent, b);
    if ra != rb {
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Job;
    use serde_json::json;

    fn run(l: u32, p: f64, samples: u64, seed: u64) -> Vec<u32> {
        let j = Job::new(
            "percolation2d",
            json!({"L": l, "p": p, "samples": samples, "seed": seed}),
        )
        .unwrap();
        u32s_from_le(&j.run_cpu(1, &mut |_, _| {}).unwrap().output)
    }

    #[test]
    fn full_and_empty_lattices() {
        assert_eq!(run(8, 1.0, 2, 1), vec![1, 64, 1, 1, 64, 1]);
        assert_eq!(run(8, 0.0, 1, 1), vec![0, 0, 0]);
    }

    #[test]
    fn labels_are_cluster_minima() {
        let p = Params {
            l: 32,
            p: 0.55,
            samples: 1,
            seed: 5,
            checkpoint_every: 1,
        };
        let mut progress = |_, _| {};
        let mut sink = CheckpointSink::new(Percolation2d::schedule(&p), &mut progress);
        let state = Percolation2d::cpu(&p, 1, &mut sink);
        let labels = u32s_from_le(&state[0]);
        let l = 32;
        for i in 0..l * l {
            if labels[i] == EMPTY {
                continue;
            }
            assert!(labels[i] as usize <= i);
            assert_eq!(labels[labels[i] as usize], labels[i]);
            if i % l + 1 < l && labels[i + 1] != EMPTY {
                assert_eq!(labels[i], labels[i + 1]);
            }
            if i + l < l * l && labels[i + l] != EMPTY {
                assert_eq!(labels[i], labels[i + l]);
            }
        }
    }

    #[test]
    fn a_segment_recomputed_from_a_checkpoint_matches_the_next_one() {
        let j = Job::new(
            "percolation2d",
            json!({"L": 21, "p": 0.6, "samples": 10, "seed": 4, "checkpoint_every": 3}),
        )
        .unwrap();
        let (r, states) = j.run_cpu_keeping_states(1, &mut |_, _| {}).unwrap();
        assert_eq!(states.len(), r.checkpoints.len());
        assert_eq!(
            states.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [3, 6, 9, 10]
        );
        let mut from = (0, j.initial_state());
        for (b, sb) in &states {
            let next = j.cpu_segment(&from.1, from.0, *b).unwrap();
            assert_eq!(&next, sb, "segment {}..{b}", from.0);
            from = (*b, sb.clone());
        }
        assert_eq!(j.finish(&from.1, vec![]).unwrap().digest, r.digest);
        // Not a state of this kernel: wrong sizes, or stats for samples not run yet.
        assert!(j.cpu_segment(&[vec![0; 4]], 0, 1).is_none());
        let mut ahead = states[0].1.clone();
        let n = ahead[1].len();
        ahead[1][n - 1] = 1;
        assert!(j.cpu_segment(&ahead, 3, 6).is_none());
        assert!(j.cpu_segment(&states[0].1, 3, 11).is_none(), "past the end");
    }

    #[test]
    fn invalid_params_name_the_field() {
        for (field, v) in [("p", json!(1.5)), ("L", json!(2)), ("samples", json!(0))] {
            let mut base = json!({"L": 16, "p": 0.5, "samples": 4, "seed": 1});
            base[field] = v;
            let e = Job::new("percolation2d", base).unwrap_err();
            assert_eq!(e.field(), Some(field));
        }
    }
}
