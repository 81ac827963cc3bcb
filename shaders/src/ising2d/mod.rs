//! `ising2d`: the 2D Ising model (J = 1, field h) on a periodic L×L lattice, Metropolis with
//! checkerboard updates. Bit-exact on every device. Version 2 (the layout below).
//!
//! * Steps are sweeps: `thermalize` unmeasured sweeps, then `sweeps` measured ones, with a
//!   measurement after every `measure_every`-th measured sweep.
//! * Layout: site (r, col) has colour c = (r + col) mod 2 and index k = col / 2 in its row of
//!   h = L/2 sites of that colour. Each colour is an array of L rows of W = ⌈h/4⌉ little-endian
//!   u32 words, four spins a word (byte j of word w of row r is k = 4w + j; 0 down, 1 up; bytes
//!   past h are padding, always 0); colour 1 follows colour 0. A half-sweep updates one colour
//!   reading only the other, one word (four sites) per invocation.
//! * Randomness: word i = r·W + w of colour c in sweep t draws Philox(i, t, 1, c; seed) and
//!   site j of the word uses output word j. A hot start sets site j of word i of colour c up iff
//!   bit 31 of Philox(i, 0, 2, c; seed)[j] is set; a cold start sets every site up. The initial
//!   state is built on the device (`ising_init`), so nothing lattice-sized is uploaded.
//! * Acceptance of a flip of spin s (±1) with neighbour sum n: `u < threshold[s', k]` where
//!   s' = (s+1)/2, k = number of up neighbours, threshold = floor(min(1, e^{-βΔE})·2³²),
//!   ΔE = 2s(n + h), computed once here in Rust.
//! * Output layout (little-endian): for each measurement the i32 bond sum Σ⟨ij⟩ s_i s_j and the
//!   i32 magnetization Σ s_i; then the final lattice, one bit per spin in row-major order (bit
//!   i%8 of byte i/8, 1 = up). Energy per spin is −(bonds + h·M)/L².
//! * State buffers (checkpoints): the spin words as above, then the series so far.

use crate::philox::{self, accept, key_of, philox4x32_10};
use crate::program::{
    BufferSpec, CheckpointSink, Dispatch, Entry, Init, Program, Schedule, View, i32s_from_le,
    le_bytes_i32, le_bytes_u32, words,
};
use crate::{
    Comparison, Kernel, KernelInfo, ParamError, binned_mean, check_finite, check_range,
    normalize_checkpoint_every,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::borrow::Cow;

/// The live view (see [`crate::program::View`]).
pub(crate) const VIEW_WGSL: &str = concat!(
    crate::wgsl!("view.wgsl"),
    crate::wgsl!("lattice_view.wgsl"),
    crate::wgsl!("ising2d/view.wgsl")
);
pub const WGSL: &str = concat!(
    crate::wgsl!("prelude.wgsl"),
    crate::wgsl!("ising2d/ising2d.wgsl")
);
const ENTRIES: &[Entry] = &[
    Entry {
        name: Cow::Borrowed("ising_sweep"),
        workgroup_size: 256,
    },
    Entry {
        name: Cow::Borrowed("ising_measure"),
        workgroup_size: 256,
    },
    Entry {
        name: Cow::Borrowed("ising_init"),
        workgroup_size: 256,
    },
];
const SWEEP: usize = 0;
const MEASURE: usize = 1;
const INIT: usize = 2;
const STREAM_SWEEP: u32 = 1;
const STREAM_INIT: u32 = 2;
/// Sweeps encoded into one submission (a progress report after each).
const CHUNK: u64 = 128;
/// At most this many invocations measure (each takes every that-many-th word), so a
/// measurement adds at most 2 × 256 atomics to its slot, whatever L.
const MEASURE_THREADS: u32 = 256 * 256;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// All spins up.
    #[default]
    Cold,
    /// Each spin up with probability 1/2 (see the module docs).
    Hot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Lattice side, even, 16..=4096.
    #[serde(rename = "L")]
    pub l: u32,
    /// Inverse temperature, 0..=10.
    pub beta: f64,
    /// External field, |h| <= 10.
    #[serde(default)]
    pub h: f64,
    /// Measured sweeps (>= 1).
    pub sweeps: u64,
    /// Unmeasured sweeps before them.
    #[serde(default)]
    pub thermalize: u64,
    /// A measurement after every this many measured sweeps.
    #[serde(default = "one")]
    pub measure_every: u64,
    pub seed: u64,
    #[serde(default)]
    pub start: Start,
    /// Sweeps between checkpoint digests (0 or absent: at most 16 checkpoints).
    #[serde(default)]
    pub checkpoint_every: u64,
}

fn one() -> u64 {
    1
}

/// The lattice's shape in the colour-separated layout.
#[derive(Clone, Copy, Debug)]
struct Shape {
    l: usize,
    /// Sites of one colour per row.
    h: usize,
    /// Words per row of one colour.
    w: usize,
}

impl Shape {
    fn new(l: u32) -> Self {
        let l = l as usize;
        let h = l / 2;
        Self {
            l,
            h,
            w: h.div_ceil(4),
        }
    }
    /// Bytes of one row of one colour.
    fn row(&self) -> usize {
        4 * self.w
    }
    /// Bytes of one colour.
    fn colour(&self) -> usize {
        self.l * self.row()
    }
    /// Byte of site (r, col) in the spin bytes.
    fn at(&self, r: usize, col: usize) -> usize {
        ((r + col) & 1) * self.colour() + r * self.row() + col / 2
    }
}

impl Params {
    pub fn total_sweeps(&self) -> u64 {
        self.thermalize + self.sweeps
    }
    pub fn measurements(&self) -> u64 {
        self.sweeps / self.measure_every
    }
    pub fn sites(&self) -> usize {
        (self.l as usize) * (self.l as usize)
    }
    fn shape(&self) -> Shape {
        Shape::new(self.l)
    }
    /// The measurement slot taken after (1-based) sweep `t`, if any.
    fn slot_after(&self, t: u64) -> Option<u64> {
        if t <= self.thermalize {
            return None;
        }
        let k = t - self.thermalize;
        (k.is_multiple_of(self.measure_every) && k / self.measure_every <= self.measurements())
            .then(|| k / self.measure_every - 1)
    }
    /// Thresholds indexed by spin*5 + up-neighbour count.
    pub fn thresholds(&self) -> [u32; 10] {
        let mut t = [0u32; 10];
        for s_up in 0..2 {
            let s = if s_up == 1 { 1.0 } else { -1.0 };
            for k in 0..5 {
                let n = 2.0 * k as f64 - 4.0;
                let de = 2.0 * s * (n + self.h);
                t[s_up * 5 + k] = philox::threshold((-self.beta * de).exp());
            }
        }
        t
    }
    /// The spin bytes before the first sweep (what `ising_init` writes).
    fn initial_spins(&self) -> Vec<u8> {
        let sh = self.shape();
        let key = key_of(self.seed);
        let mut spins = vec![0u8; 2 * sh.colour()];
        for (c, colour) in spins.chunks_exact_mut(sh.colour()).enumerate() {
            for (i, word) in colour.chunks_exact_mut(4).enumerate() {
                let u = match self.start {
                    Start::Cold => [u32::MAX; 4],
                    Start::Hot => philox4x32_10([i as u32, 0, STREAM_INIT, c as u32], key),
                };
                let lanes = 4.min(sh.h - 4 * (i % sh.w));
                for j in 0..lanes {
                    word[j] = (u[j] >> 31) as u8;
                }
            }
        }
        spins
    }
}

pub struct Ising2d;

impl Kernel for Ising2d {
    type Params = Params;
    const INFO: KernelInfo = KernelInfo {
        name: "ising2d",
        version: 2,
        description: "2D Ising model, Metropolis checkerboard, periodic LxL; bit-exact",
        plain: "2D Ising model: how a magnet loses its order as it heats",
        observables: &[
            crate::obs("binder", "Binder cumulant U₄", None),
            crate::obs("abs_m", "|magnetization| per spin", Some("abs_m_err")),
            crate::obs("e", "energy per spin", Some("e_err")),
        ],
        step_unit: "sweep",
        work_unit: "spin updates",
        comparison: Comparison::Digest,
    };

    fn normalize(mut p: Params) -> Result<Params, ParamError> {
        check_range("L", p.l, 16, 4096)?;
        if !p.l.is_multiple_of(2) {
            return Err(ParamError::invalid(
                "L",
                format!("must be even for checkerboard updates, got {}", p.l),
            ));
        }
        check_finite("beta", p.beta, 0.0, 10.0)?;
        check_finite("h", p.h, -10.0, 10.0)?;
        check_range("sweeps", p.sweeps, 1, 100_000_000)?;
        check_range("thermalize", p.thermalize, 0, 100_000_000)?;
        check_range("measure_every", p.measure_every, 1, p.sweeps)?;
        p.checkpoint_every = normalize_checkpoint_every(p.total_sweeps(), p.checkpoint_every)?;
        Ok(p)
    }

    fn schedule(p: &Params) -> Schedule {
        Schedule::new(p.total_sweeps(), p.checkpoint_every, CHUNK)
    }

    fn program(p: &Params) -> Program {
        let mut thr = p.thresholds().to_vec();
        thr.resize(12, 0);
        let sh = p.shape();
        let [k0, k1] = key_of(p.seed);
        Program {
            wgsl: WGSL.into(),
            entries: ENTRIES.into(),
            buffers: vec![
                BufferSpec {
                    label: "spins".into(),
                    init: Init::Zeros(2 * sh.colour()),
                    state: true,
                    size_field: "L".into(),
                },
                BufferSpec {
                    label: "series".into(),
                    init: Init::Zeros(8 * p.measurements() as usize),
                    state: true,
                    size_field: "sweeps".into(),
                },
                BufferSpec {
                    label: "thresholds".into(),
                    init: Init::Bytes(le_bytes_u32(&thr)),
                    state: false,
                    size_field: "beta".into(),
                },
            ],
            init_ops: vec![Dispatch {
                entry: INIT,
                threads: (2 * sh.l * sh.w) as u32,
                words: words(&[p.l, u32::from(p.start == Start::Hot), k0, k1]),
            }],
            total_steps: p.total_sweeps(),
            untrusted: false,
        }
    }

    fn ops(p: &Params, start: u64, end: u64) -> Vec<Dispatch> {
        let [k0, k1] = key_of(p.seed);
        let sh = p.shape();
        let words_per_colour = (sh.l * sh.w) as u32;
        let measurers = words_per_colour.min(MEASURE_THREADS);
        let mut ops = Vec::with_capacity(((end - start) * 2) as usize + 8);
        for t in start..end {
            for colour in 0..2 {
                ops.push(Dispatch {
                    entry: SWEEP,
                    threads: words_per_colour,
                    words: words(&[p.l, t as u32, colour, k0, k1]),
                });
            }
            if let Some(slot) = p.slot_after(t + 1) {
                ops.push(Dispatch {
                    entry: MEASURE,
                    threads: measurers,
                    words: words(&[p.l, slot as u32, measurers]),
                });
            }
        }
        ops
    }

    fn cpu(p: &Params, threads: usize, sink: &mut CheckpointSink<'_>) -> Vec<Vec<u8>> {
        let mut spins = p.initial_spins();
        let mut series = vec![0i32; 2 * p.measurements() as usize];
        sweeps(
            p,
            &mut spins,
            &mut series,
            0,
            p.total_sweeps(),
            threads,
            Some(sink),
        );
        vec![spins, le_bytes_i32(&series)]
    }

    fn initial_state(p: &Params) -> Vec<Vec<u8>> {
        vec![p.initial_spins(), vec![0; 8 * p.measurements() as usize]]
    }

    fn resumable_on_cpu() -> bool {
        true
    }

    fn state_len(p: &Params) -> u64 {
        2 * p.shape().colour() as u64 + 8 * p.measurements()
    }

    fn cpu_segment(p: &Params, state: &[Vec<u8>], start: u64, end: u64) -> Option<Vec<Vec<u8>>> {
        let sh = p.shape();
        let [spins, series] = state else { return None };
        if spins.len() != 2 * sh.colour()
            || series.len() != 8 * p.measurements() as usize
            || start > end
            || end > p.total_sweeps()
        {
            return None;
        }
        // Spins are 0 or 1 and padding is 0; anything else is not a state this kernel makes.
        for row in spins.chunks_exact(sh.row()) {
            let (sites, padding) = row.split_at(sh.h);
            if sites.iter().any(|&b| b > 1) || padding.iter().any(|&b| b != 0) {
                return None;
            }
        }
        let mut spins = spins.clone();
        let mut series = i32s_from_le(series);
        sweeps(p, &mut spins, &mut series, start, end, 1, None);
        Some(vec![spins, le_bytes_i32(&series)])
    }

    fn canonical_output(p: &Params, state: &[Vec<u8>]) -> Vec<u8> {
        let mut out = state.get(1).cloned().unwrap_or_default();
        let sh = p.shape();
        let mut packed = vec![0u8; p.sites().div_ceil(8)];
        if let Some(spins) = state.first().filter(|s| s.len() == 2 * sh.colour()) {
            for r in 0..sh.l {
                for col in 0..sh.l {
                    let i = r * sh.l + col;
                    packed[i / 8] |= (spins[sh.at(r, col)] & 1) << (i % 8);
                }
            }
        }
        out.extend_from_slice(&packed);
        out
    }

    fn output_len(p: &Params) -> u64 {
        8 * p.measurements() + p.sites().div_ceil(8) as u64
    }

    fn summarize(p: &Params, output: &[u8]) -> Value {
        let n = p.sites() as f64;
        let series = i32s_from_le(&output[..8 * p.measurements() as usize]);
        let e: Vec<f64> = series
            .chunks_exact(2)
            .map(|bm| -(f64::from(bm[0]) + p.h * f64::from(bm[1])) / n)
            .collect();
        let m: Vec<f64> = series
            .chunks_exact(2)
            .map(|bm| f64::from(bm[1]) / n)
            .collect();
        let abs_m: Vec<f64> = m.iter().map(|x| x.abs()).collect();
        let m2: Vec<f64> = m.iter().map(|x| x * x).collect();
        let m4: Vec<f64> = m2.iter().map(|x| x * x).collect();
        let (e_mean, e_err) = binned_mean(&e, 10);
        let (am, am_err) = binned_mean(&abs_m, 10);
        let (m2_mean, _) = binned_mean(&m2, 10);
        let (m4_mean, _) = binned_mean(&m4, 10);
        let binder = if m2_mean > 0.0 {
            1.0 - m4_mean / (3.0 * m2_mean * m2_mean)
        } else {
            0.0
        };
        json!({
            "measurements": e.len(),
            "e": e_mean, "e_err": finite_or_null(e_err),
            "abs_m": am, "abs_m_err": finite_or_null(am_err),
            "m2": m2_mean, "m4": m4_mean, "binder": binder,
        })
    }

    fn view(p: &Params) -> View {
        let s = p.shape();
        View {
            wgsl: VIEW_WGSL.into(),
            buffer: 0,
            words: words(&[p.l, s.w as u32]),
            vertices: 3,
            instances: 1,
        }
    }

    fn work(p: &Params) -> u64 {
        p.sites() as u64 * p.total_sweeps()
    }
}

fn finite_or_null(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// Up-neighbour count of site k of row `r` of colour `c`, reading the other colour's bytes
/// (`other`, rows of `sh.row()` bytes).
fn up_neighbours(sh: &Shape, c: usize, r: usize, k: usize, other: &[u8]) -> usize {
    let row = |r: usize| &other[r * sh.row()..][..sh.h];
    let same = row(r);
    // Site k sits at column 2k + ((r + c) & 1); its side neighbours in the other colour are
    // k and k - 1 (even column) or k and k + 1 (odd column), around the periodic row.
    let side = if (r + c) & 1 == 0 {
        same[(k + sh.h - 1) % sh.h]
    } else {
        same[(k + 1) % sh.h]
    };
    usize::from(row((r + sh.l - 1) % sh.l)[k] + row((r + 1) % sh.l)[k] + same[k] + side)
}

/// Updates every site of colour `c` (`mine`), reading neighbours from `other`.
#[allow(clippy::too_many_arguments)]
fn half_sweep(
    sh: &Shape,
    c: usize,
    sweep: u32,
    key: [u32; 2],
    thr: &[u32; 10],
    mine: &mut [u8],
    other: &[u8],
    threads: usize,
) {
    let rows_per = sh.l.div_ceil(threads.max(1));
    let do_rows = |first_row: usize, rows: &mut [u8]| {
        for (dr, row) in rows.chunks_exact_mut(sh.row()).enumerate() {
            let r = first_row + dr;
            for (w, word) in row.chunks_exact_mut(4).enumerate() {
                let i = (r * sh.w + w) as u32;
                let u = philox4x32_10([i, sweep, STREAM_SWEEP, c as u32], key);
                for (j, s) in word.iter_mut().enumerate().take(4.min(sh.h - 4 * w)) {
                    let ups = up_neighbours(sh, c, r, 4 * w + j, other);
                    if accept(u[j], thr[*s as usize * 5 + ups]) {
                        *s ^= 1;
                    }
                }
            }
        }
    };
    // The browser client has no threads (std's thread code would be 5% of its download).
    if threads <= 1 || cfg!(target_arch = "wasm32") {
        do_rows(0, mine);
        return;
    }
    std::thread::scope(|scope| {
        for (i, chunk) in mine.chunks_mut(rows_per * sh.row()).enumerate() {
            let do_rows = &do_rows;
            scope.spawn(move || do_rows(i * rows_per, chunk));
        }
    });
}

/// (bond sum, magnetization): every bond joins a colour-0 site to a colour-1 site.
fn measure(sh: &Shape, spins: &[u8]) -> (i32, i32) {
    let (zero, one) = spins.split_at(sh.colour());
    let (mut b, mut m) = (0i32, 0i32);
    for r in 0..sh.l {
        for k in 0..sh.h {
            let at = r * sh.row() + k;
            let s = 2 * i32::from(zero[at]) - 1;
            b += s * (2 * up_neighbours(sh, 0, r, k, one) as i32 - 4);
            m += s + 2 * i32::from(one[at]) - 1;
        }
    }
    (b, m)
}

/// Sweeps `[start, end)` of the reference, in place.
fn sweeps(
    p: &Params,
    spins: &mut [u8],
    series: &mut [i32],
    start: u64,
    end: u64,
    threads: usize,
    mut sink: Option<&mut CheckpointSink<'_>>,
) {
    let sh = p.shape();
    let thr = p.thresholds();
    let key = key_of(p.seed);
    for t in start..end {
        for c in 0..2 {
            let (zero, one) = spins.split_at_mut(sh.colour());
            let (mine, other) = if c == 0 { (zero, &*one) } else { (one, &*zero) };
            half_sweep(&sh, c, t as u32, key, &thr, mine, other, threads);
        }
        if let Some(slot) = p.slot_after(t + 1) {
            let (b, m) = measure(&sh, spins);
            series[2 * slot as usize] = b;
            series[2 * slot as usize + 1] = m;
        }
        if let Some(sink) = sink.as_deref_mut() {
            sink.step(t + 1, || vec![spins.to_vec(), le_bytes_i32(series)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Job;
    use serde_json::json;

    fn job(v: Value) -> Result<Job, ParamError> {
        Job::new("ising2d", v)
    }

    #[test]
    fn a_segment_recomputed_from_a_checkpoint_matches_the_next_one() {
        let j = job(
            json!({"L": 18, "beta": 0.44, "sweeps": 40, "thermalize": 8, "seed": 3,
                           "checkpoint_every": 12}),
        )
        .unwrap();
        let (r, states) = j.run_cpu_keeping_states(1, &mut |_, _| {}).unwrap();
        assert_eq!(states.len(), r.checkpoints.len());
        assert!(states.len() >= 3);
        for w in states.windows(2) {
            let ((a, sa), (b, sb)) = (&w[0], &w[1]);
            let next = j.cpu_segment(sa, *a, *b).unwrap();
            assert_eq!(&next, sb, "segment {a}..{b}");
        }
        // The last state is the output's.
        let (last, s) = states.last().unwrap();
        assert_eq!(j.finish(s, vec![]).unwrap().digest, r.digest, "at {last}");
        // Not a state of this kernel.
        assert!(j.cpu_segment(&[vec![7; 4]], 0, 1).is_none());
        let mut bad = states[0].1.clone();
        bad[0][0] = 2;
        assert!(j.cpu_segment(&bad, states[0].0, states[1].0).is_none());
    }

    /// The colour-separated layout's neighbours and measurement are the periodic lattice's,
    /// for every padding case (h mod 4 = 0, 1, 2, 3).
    #[test]
    fn layout_neighbours_are_the_lattices() {
        for l in [16u32, 18, 20, 22, 34] {
            let sh = Shape::new(l);
            let n = sh.l;
            let p = Params {
                l,
                beta: 0.4,
                h: 0.0,
                sweeps: 1,
                thermalize: 0,
                measure_every: 1,
                seed: u64::from(l),
                start: Start::Hot,
                checkpoint_every: 1,
            };
            let spins = p.initial_spins();
            let up = |r: usize, col: usize| usize::from(spins[sh.at(r % n, col % n)]);
            let (mut bonds, mut mag) = (0i32, 0i32);
            for r in 0..n {
                for col in 0..n {
                    let c = (r + col) & 1;
                    let other = &spins[(1 - c) * sh.colour()..][..sh.colour()];
                    let naive =
                        up(r + n - 1, col) + up(r + 1, col) + up(r, col + n - 1) + up(r, col + 1);
                    assert_eq!(
                        up_neighbours(&sh, c, r, col / 2, other),
                        naive,
                        "L={l} ({r},{col})"
                    );
                    let s = 2 * up(r, col) as i32 - 1;
                    bonds += s * (2 * up(r, col + 1) as i32 - 1 + 2 * up(r + 1, col) as i32 - 1);
                    mag += s;
                }
            }
            assert_eq!(measure(&sh, &spins), (bonds, mag), "L={l}");
            // Padding stays zero, and a hot start is about half up.
            for row in spins.chunks_exact(sh.row()) {
                assert!(row[sh.h..].iter().all(|&b| b == 0));
            }
            assert!(mag.unsigned_abs() < (n * n / 4) as u32, "L={l}: M={mag}");
        }
    }

    #[test]
    fn invalid_params_name_the_field() {
        let base = json!({"L": 32, "beta": 0.4, "sweeps": 10, "seed": 1});
        let cases = [
            ("L", json!(33)),
            ("L", json!(8)),
            ("beta", json!(-0.1)),
            ("sweeps", json!(0)),
            ("measure_every", json!(11)),
            ("h", json!(100.0)),
        ];
        for (field, value) in cases {
            let mut v = base.clone();
            v[field] = value;
            let e = job(v).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
        }
        assert!(job(base).is_ok());
    }

    #[test]
    fn defaults_are_made_explicit() {
        let j = job(json!({"L": 16, "beta": 0.4, "sweeps": 100, "seed": 1})).unwrap();
        let p = j.params_json();
        assert_eq!(p["checkpoint_every"], 7);
        assert_eq!(p["measure_every"], 1);
        assert_eq!(p["start"], "cold");
        // Normalizing again is a no-op.
        assert_eq!(job(p.clone()).unwrap().params_json(), p);
    }

    #[test]
    fn thresholds_follow_metropolis() {
        let p = Params {
            l: 16,
            beta: 0.5,
            h: 0.0,
            sweeps: 1,
            thermalize: 0,
            measure_every: 1,
            seed: 0,
            start: Start::Cold,
            checkpoint_every: 1,
        };
        let t = p.thresholds();
        // Up spin with 4 up neighbours: ΔE = 8 → e^{-4}.
        assert_eq!(t[9], philox::threshold((-4.0f64).exp()));
        // Up spin with 2 up neighbours: ΔE = 0 → always.
        assert_eq!(t[7], philox::ALWAYS);
        // Down spin with 4 up neighbours: flipping lowers the energy.
        assert_eq!(t[4], philox::ALWAYS);
    }

    #[test]
    fn infinite_temperature_and_frozen_limits() {
        // beta = 0 accepts every flip: each sweep flips every spin, so after an even number
        // of sweeps the cold lattice is all up again and M alternates.
        let j = job(json!({"L": 16, "beta": 0.0, "sweeps": 4, "seed": 3})).unwrap();
        let r = j.run_cpu(1, &mut |_, _| {}).unwrap();
        let series = i32s_from_le(&r.output[..32]);
        assert_eq!(series, vec![512, -256, 512, 256, 512, -256, 512, 256]);
        assert!(r.output[32..].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn thread_count_does_not_change_bytes() {
        let j =
            job(json!({"L": 64, "beta": 0.44, "sweeps": 20, "seed": 9, "start": "hot"})).unwrap();
        let a = j.run_cpu(1, &mut |_, _| {}).unwrap();
        let b = j.run_cpu(3, &mut |_, _| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.output.len() as u64, j.output_len());
        // 20 sweeps, a checkpoint every ceil(20/16) = 2.
        assert_eq!(a.checkpoints.len(), 10);
    }

    #[test]
    fn seeds_change_the_digest() {
        let mk = |seed| {
            job(json!({"L": 16, "beta": 0.3, "sweeps": 5, "seed": seed, "start": "hot"}))
                .unwrap()
                .run_cpu(1, &mut |_, _| {})
                .unwrap()
                .digest
        };
        assert_ne!(mk(1), mk(2));
        assert_eq!(mk(1), mk(1));
    }
}
