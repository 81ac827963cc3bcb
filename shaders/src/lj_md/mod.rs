//! `lj_md`: a Lennard-Jones fluid in reduced units (σ = ε = m = 1): velocity Verlet, N
//! particles in a periodic cubic box of side (N/ρ)^{1/3}, potential truncated at `cutoff` and
//! shifted to zero there, minimum image, all pairs.
//!
//! Floating point differs between devices (division precision, fused multiply-adds, reduction
//! order), and MD is chaotic, so replicas are compared by tolerance, not digest:
//! * total energy per particle at every measurement within `TOL_ABS + TOL_REL·|E|`, and
//! * mean kinetic energy per particle over the run within `KE_ABS + KE_REL·|KE|`.
//!
//! Energy conservation (tested): at ρ = 0.8, T = 1, dt = 0.005 the total energy per particle
//! drifts by less than [`DRIFT_BOUND`] over 1000 steps.
//!
//! * Start: FCC lattice (first N sites of ⌈(N/4)^{1/3}⌉³ cubic cells); velocities uniform
//!   from Philox(i, 0, 4, 0; seed), centre-of-mass motion removed, scaled to `temperature`
//!   (computed in f64 on the host, identical everywhere).
//! * Steps are MD steps; measurements at step 0 and every `measure_every` steps.
//! * Output layout (little-endian f32): (kinetic, potential) total per measurement, then final
//!   positions (x, y, z per particle), then final velocities (x, y, z per particle).
//! * State buffers: positions, velocities, forces (w = per-particle energy), series (all vec4).

use crate::philox::{key_of, philox4x32_10};
use crate::program::{
    BufferSpec, CheckpointSink, Dispatch, Entry, Init, Program, Schedule, View, f32s_from_le,
    le_bytes_f32, words,
};
use crate::{
    Comparison, Kernel, KernelInfo, ParamError, check_finite, check_range,
    normalize_checkpoint_every,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::borrow::Cow;

/// The live view (see [`crate::program::View`]).
const VIEW_WGSL: &str = concat!(crate::wgsl!("view.wgsl"), crate::wgsl!("lj_md/view.wgsl"));
pub const WGSL: &str = concat!(
    crate::wgsl!("prelude.wgsl"),
    crate::wgsl!("lj_md/lj_md.wgsl")
);
const ENTRIES: &[Entry] = &[
    Entry {
        name: Cow::Borrowed("md_forces"),
        workgroup_size: 64,
    },
    Entry {
        name: Cow::Borrowed("md_kick_drift"),
        workgroup_size: 64,
    },
    Entry {
        name: Cow::Borrowed("md_kick"),
        workgroup_size: 64,
    },
    Entry {
        name: Cow::Borrowed("md_measure"),
        workgroup_size: 256,
    },
    Entry {
        name: Cow::Borrowed("md_sum"),
        workgroup_size: 64,
    },
];
const FORCES: usize = 0;
const KICK_DRIFT: usize = 1;
const KICK: usize = 2;
const MEASURE: usize = 3;
const SUM: usize = 4;
/// Positions per workgroup tile in `md_forces`.
const TILE: u32 = 64;
/// About this many invocations compute forces: each particle's pairs are split into slices
/// (at least a tile each) so that small systems still fill a large GPU.
const FORCE_INVOCATIONS: u32 = 1 << 17;
const STREAM_VELOCITY: u32 = 4;
const CHUNK: u64 = 64;

pub const TOL_ABS: f64 = 2e-3;
pub const TOL_REL: f64 = 1e-3;
pub const KE_ABS: f64 = 0.02;
pub const KE_REL: f64 = 0.05;
/// Measured 6e-4 (dt = 0.005) and 1.6e-4 (dt = 0.0025) over 5 time units: the dt² of Verlet.
pub const DRIFT_BOUND: f64 = 2e-3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Particles, 2..=16384.
    pub n: u32,
    /// Number density ρ, 0.01..=1.2.
    pub density: f64,
    /// Initial temperature, 0.01..=10.
    pub temperature: f64,
    /// Time step, 0.0001..=0.02.
    pub dt: f64,
    /// MD steps, 1..=10^7.
    pub steps: u64,
    /// Potential cutoff, at least 1 and at most half the box.
    #[serde(default = "default_cutoff")]
    pub cutoff: f64,
    /// A measurement every this many steps (0 or absent: every 10, or every step for short runs).
    #[serde(default)]
    pub measure_every: u64,
    pub seed: u64,
    #[serde(default)]
    pub checkpoint_every: u64,
}

fn default_cutoff() -> f64 {
    2.5
}

/// The f32 constants every device uses.
#[derive(Clone, Copy, Debug)]
struct Consts {
    n: usize,
    dt: f32,
    box_l: f32,
    rc2: f32,
    shift: f32,
}

impl Params {
    pub fn box_side(&self) -> f64 {
        (f64::from(self.n) / self.density).cbrt()
    }
    pub fn measurements(&self) -> u64 {
        self.steps / self.measure_every + 1
    }
    fn consts(&self) -> Consts {
        let rc = self.cutoff;
        Consts {
            n: self.n as usize,
            dt: self.dt as f32,
            box_l: self.box_side() as f32,
            rc2: (rc * rc) as f32,
            shift: (4.0 * (rc.powi(-12) - rc.powi(-6))) as f32,
        }
    }
    fn words(&self, slot: u64) -> [u32; crate::program::WORDS] {
        let c = self.consts();
        let (slices, span) = self.slices();
        words(&[
            self.n,
            c.dt.to_bits(),
            c.box_l.to_bits(),
            c.rc2.to_bits(),
            c.shift.to_bits(),
            slot as u32,
            slices,
            span,
        ])
    }
    /// (slices of each particle's pairs, particles per slice): set by `n` alone, so every
    /// device sums the same partial forces in the same order.
    fn slices(&self) -> (u32, u32) {
        let tiles = self.n.div_ceil(TILE);
        let wanted = FORCE_INVOCATIONS.div_ceil(self.n).clamp(1, 32).min(tiles);
        let span = tiles.div_ceil(wanted) * TILE;
        (self.n.div_ceil(span), span)
    }
    /// Initial positions and velocities as vec4 (w = 0).
    fn initial(&self) -> (Vec<[f32; 4]>, Vec<[f32; 4]>) {
        let n = self.n as usize;
        // FCC: m³ cubic cells of 4 sites each, filled in order; the first N sites are used.
        let m = (1..).find(|k: &usize| 4 * k * k * k >= n).unwrap_or(1);
        let a = self.box_side() / m as f64;
        const BASIS: [[f64; 3]; 4] = [
            [0.0, 0.0, 0.0],
            [0.5, 0.5, 0.0],
            [0.5, 0.0, 0.5],
            [0.0, 0.5, 0.5],
        ];
        let pos = (0..n)
            .map(|i| {
                let (cell, b) = (i / 4, BASIS[i % 4]);
                let c = [cell % m, (cell / m) % m, cell / (m * m)];
                let x = |k: usize| ((c[k] as f64 + b[k] + 0.25) * a) as f32;
                [x(0), x(1), x(2), 0.0]
            })
            .collect();
        let key = key_of(self.seed);
        let mut v: Vec<[f64; 3]> = (0..n as u32)
            .map(|i| {
                let r = philox4x32_10([i, 0, STREAM_VELOCITY, 0], key);
                [0, 1, 2].map(|k| f64::from(r[k]) / 4_294_967_296.0 - 0.5)
            })
            .collect();
        let mut com = [0.0f64; 3];
        for vi in &v {
            for k in 0..3 {
                com[k] += vi[k] / n as f64;
            }
        }
        let mut ke = 0.0;
        for vi in &mut v {
            for k in 0..3 {
                vi[k] -= com[k];
                ke += 0.5 * vi[k] * vi[k];
            }
        }
        let dof = 3.0 * (n as f64 - 1.0).max(1.0);
        let scale = if ke > 0.0 {
            (0.5 * dof * self.temperature / ke).sqrt()
        } else {
            0.0
        };
        let vel = v
            .iter()
            .map(|vi| {
                [
                    (vi[0] * scale) as f32,
                    (vi[1] * scale) as f32,
                    (vi[2] * scale) as f32,
                    0.0,
                ]
            })
            .collect();
        (pos, vel)
    }
}

fn flat(v: &[[f32; 4]]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| x.iter().flat_map(|c| c.to_le_bytes()))
        .collect()
}

pub struct LjMd;

impl Kernel for LjMd {
    type Params = Params;
    const INFO: KernelInfo = KernelInfo {
        name: "lj_md",
        version: 2,
        description: "Lennard-Jones fluid, velocity Verlet, periodic box, all pairs; tolerance comparison",
        plain: "Lennard-Jones fluid: atoms of a simple liquid like argon jostling and pulling on each other",
        observables: &[
            crate::obs("e_total", "total energy per particle", None),
            crate::obs("e_potential", "potential energy per particle", None),
            crate::obs("e_kinetic", "kinetic energy per particle", None),
            crate::obs("temperature", "temperature", None),
            crate::obs("energy_drift", "energy drift per particle", None),
        ],
        step_unit: "step",
        work_unit: "pair interactions",
        comparison: Comparison::Tolerance {
            observable: "total energy per particle at every measurement (and mean kinetic energy per particle)",
            rel: TOL_REL,
            abs: TOL_ABS,
        },
    };

    fn normalize(mut p: Params) -> Result<Params, ParamError> {
        check_range("n", p.n, 2, 16384)?;
        check_finite("density", p.density, 0.01, 1.2)?;
        check_finite("temperature", p.temperature, 0.01, 10.0)?;
        check_finite("dt", p.dt, 1e-4, 0.02)?;
        check_range("steps", p.steps, 1, 10_000_000)?;
        check_finite("cutoff", p.cutoff, 1.0, p.box_side() / 2.0)?;
        if p.measure_every == 0 {
            p.measure_every = p.steps.min(10);
        }
        check_range("measure_every", p.measure_every, 1, p.steps)?;
        p.checkpoint_every = normalize_checkpoint_every(p.steps, p.checkpoint_every)?;
        Ok(p)
    }

    fn schedule(p: &Params) -> Schedule {
        Schedule::new(p.steps, p.checkpoint_every, CHUNK)
    }

    fn program(p: &Params) -> Program {
        let (pos, vel) = p.initial();
        let n = p.n as usize;
        Program {
            wgsl: WGSL.into(),
            entries: ENTRIES.into(),
            buffers: vec![
                BufferSpec {
                    label: "positions".into(),
                    init: Init::Bytes(flat(&pos)),
                    state: true,
                    size_field: "n".into(),
                },
                BufferSpec {
                    label: "velocities".into(),
                    init: Init::Bytes(flat(&vel)),
                    state: true,
                    size_field: "n".into(),
                },
                BufferSpec {
                    label: "forces".into(),
                    init: Init::Zeros(16 * n),
                    state: true,
                    size_field: "n".into(),
                },
                BufferSpec {
                    label: "series".into(),
                    init: Init::Zeros(8 * p.measurements() as usize),
                    state: true,
                    size_field: "steps".into(),
                },
                BufferSpec {
                    label: "partial forces".into(),
                    init: Init::Zeros(16 * n * p.slices().0 as usize),
                    state: false,
                    size_field: "n".into(),
                },
            ],
            init_ops: Vec::new(),
            total_steps: p.steps,
            untrusted: false,
        }
    }

    fn ops(p: &Params, start: u64, end: u64) -> Vec<Dispatch> {
        let d = |entry, threads, slot| Dispatch {
            entry,
            threads,
            words: p.words(slot),
        };
        let force_threads = p.n.div_ceil(TILE) * TILE * p.slices().0;
        let forces = [d(FORCES, force_threads, 0), d(SUM, p.n, 0)];
        let mut ops = Vec::new();
        if start == 0 {
            ops.extend(forces);
            ops.push(d(MEASURE, 256, 0));
        }
        for t in start..end {
            ops.push(d(KICK_DRIFT, p.n, 0));
            ops.extend(forces);
            ops.push(d(KICK, p.n, 0));
            if (t + 1) % p.measure_every == 0 {
                ops.push(d(MEASURE, 256, (t + 1) / p.measure_every));
            }
        }
        ops
    }

    fn cpu(p: &Params, threads: usize, sink: &mut CheckpointSink<'_>) -> Vec<Vec<u8>> {
        let c = p.consts();
        let (mut pos, mut vel) = p.initial();
        let mut force = vec![[0f32; 4]; c.n];
        let mut series = vec![0f32; 2 * p.measurements() as usize];
        forces(&c, &pos, &mut force, threads);
        measure(&vel, &force, &mut series, 0);
        let half = 0.5 * c.dt;
        for t in 0..p.steps {
            for i in 0..c.n {
                for k in 0..3 {
                    vel[i][k] += half * force[i][k];
                    let x = pos[i][k] + c.dt * vel[i][k];
                    pos[i][k] = x - c.box_l * (x / c.box_l).floor();
                }
            }
            forces(&c, &pos, &mut force, threads);
            for i in 0..c.n {
                for k in 0..3 {
                    vel[i][k] += half * force[i][k];
                }
            }
            if (t + 1) % p.measure_every == 0 {
                measure(
                    &vel,
                    &force,
                    &mut series,
                    ((t + 1) / p.measure_every) as usize,
                );
            }
            sink.step(t + 1, || state(&pos, &vel, &force, &series));
        }
        state(&pos, &vel, &force, &series)
    }

    fn canonical_output(_p: &Params, state: &[Vec<u8>]) -> Vec<u8> {
        let mut out = state.get(3).cloned().unwrap_or_default();
        for buf in state.iter().take(2) {
            for v in buf.chunks_exact(16) {
                out.extend_from_slice(&v[..12]);
            }
        }
        out
    }

    fn output_len(p: &Params) -> u64 {
        8 * p.measurements() + 24 * u64::from(p.n)
    }

    fn summarize(p: &Params, output: &[u8]) -> Value {
        let n = f64::from(p.n);
        let s = energies(p, output);
        let e: Vec<f64> = s.iter().map(|(k, u)| (k + u) / n).collect();
        let ke: Vec<f64> = s.iter().map(|(k, _)| k / n).collect();
        let pe: Vec<f64> = s.iter().map(|(_, u)| u / n).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let e0 = e.first().copied().unwrap_or(0.0);
        let drift = e.iter().map(|x| (x - e0).abs()).fold(0.0, f64::max);
        json!({
            "measurements": e.len(),
            "e_total": mean(&e),
            "e_kinetic": mean(&ke),
            "e_potential": mean(&pe),
            "temperature": 2.0 * mean(&ke) / 3.0,
            "energy_drift": drift,
        })
    }

    fn view(p: &Params) -> View {
        View {
            wgsl: VIEW_WGSL.into(),
            buffer: 0,
            words: words(&[p.n, (p.box_side() as f32).to_bits()]),
            vertices: 6,
            instances: p.n,
        }
    }

    fn work(p: &Params) -> u64 {
        let n = u64::from(p.n);
        n * (n - 1) * (p.steps + 1)
    }

    fn equivalent(p: &Params, a: &[u8], b: &[u8]) -> bool {
        let n = f64::from(p.n);
        let (sa, sb) = (energies(p, a), energies(p, b));
        let close = |x: f64, y: f64, abs: f64, rel: f64| {
            x.is_finite() && y.is_finite() && (x - y).abs() <= abs + rel * y.abs()
        };
        let totals = sa
            .iter()
            .zip(&sb)
            .all(|(x, y)| close((x.0 + x.1) / n, (y.0 + y.1) / n, TOL_ABS, TOL_REL));
        let mean_ke = |s: &[(f64, f64)]| s.iter().map(|x| x.0).sum::<f64>() / n / s.len() as f64;
        totals && close(mean_ke(&sa), mean_ke(&sb), KE_ABS, KE_REL)
    }
}

/// (kinetic, potential) per measurement from an output.
fn energies(p: &Params, output: &[u8]) -> Vec<(f64, f64)> {
    f32s_from_le(&output[..(8 * p.measurements()) as usize])
        .chunks_exact(2)
        .map(|x| (f64::from(x[0]), f64::from(x[1])))
        .collect()
}

fn state(pos: &[[f32; 4]], vel: &[[f32; 4]], force: &[[f32; 4]], series: &[f32]) -> Vec<Vec<u8>> {
    vec![flat(pos), flat(vel), flat(force), le_bytes_f32(series)]
}

fn forces(c: &Consts, pos: &[[f32; 4]], force: &mut [[f32; 4]], threads: usize) {
    let per = c.n.div_ceil(threads.max(1)).max(1);
    let body = |first: usize, out: &mut [[f32; 4]]| {
        for (di, fo) in out.iter_mut().enumerate() {
            let i = first + di;
            let pi = pos[i];
            let (mut f, mut pe) = ([0f32; 3], 0f32);
            for (j, pj) in pos.iter().enumerate() {
                if j == i {
                    continue;
                }
                let mut d = [pi[0] - pj[0], pi[1] - pj[1], pi[2] - pj[2]];
                for dk in &mut d {
                    *dk -= c.box_l * (*dk / c.box_l).round_ties_even();
                }
                let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                if r2 < c.rc2 {
                    let inv2 = 1.0 / r2;
                    let inv6 = inv2 * inv2 * inv2;
                    let s = 24.0 * inv2 * inv6 * (2.0 * inv6 - 1.0);
                    for k in 0..3 {
                        f[k] += d[k] * s;
                    }
                    pe += 4.0 * inv6 * (inv6 - 1.0) - c.shift;
                }
            }
            *fo = [f[0], f[1], f[2], 0.5 * pe];
        }
    };
    // The browser client has no threads (std's thread code would be 5% of its download).
    if threads <= 1 || cfg!(target_arch = "wasm32") {
        body(0, force);
        return;
    }
    std::thread::scope(|s| {
        for (k, chunk) in force.chunks_mut(per).enumerate() {
            let body = &body;
            s.spawn(move || body(k * per, chunk));
        }
    });
}

fn measure(vel: &[[f32; 4]], force: &[[f32; 4]], series: &mut [f32], slot: usize) {
    let ke: f64 = vel
        .iter()
        .map(|v| 0.5 * f64::from(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))
        .sum();
    let pe: f64 = force.iter().map(|f| f64::from(f[3])).sum();
    series[2 * slot] = ke as f32;
    series[2 * slot + 1] = pe as f32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Job;
    use serde_json::json;

    fn params(steps: u64, dt: f64) -> Value {
        json!({"n": 256, "density": 0.8, "temperature": 1.0, "dt": dt, "steps": steps, "seed": 3})
    }

    /// Every pair is in exactly one slice, each slice a whole number of tiles but the last.
    #[test]
    fn force_slices_cover_every_pair_once() {
        for n in [2u32, 63, 64, 65, 500, 2048, 4097, 16384] {
            let Ok(Job::LjMd(base)) = Job::new("lj_md", params(1, 0.005)) else {
                unreachable!()
            };
            let p = Params { n, ..base };
            let (slices, span) = p.slices();
            assert!(span.is_multiple_of(TILE) && slices >= 1, "{n}");
            assert!(
                slices * span >= n && (slices - 1) * span < n,
                "{n}: {slices} × {span}"
            );
            assert!(slices <= 32);
            if n >= 16384 {
                assert!(
                    p.n.div_ceil(TILE) * TILE * slices >= 1 << 16,
                    "{n}: enough invocations"
                );
            }
        }
    }

    #[test]
    fn initial_state_has_the_requested_temperature_and_no_drift() {
        let j = Job::new("lj_md", params(10, 0.005)).unwrap();
        let Job::LjMd(p) = &j else { unreachable!() };
        let (_, vel) = p.initial();
        let ke: f64 = vel
            .iter()
            .map(|v| 0.5 * (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) as f64)
            .sum();
        let t = 2.0 * ke / (3.0 * 255.0);
        assert!((t - 1.0).abs() < 1e-4, "T = {t}");
        for k in 0..3 {
            let m: f64 = vel.iter().map(|v| v[k] as f64).sum();
            assert!(m.abs() < 1e-3, "momentum {k}: {m}");
        }
    }

    #[test]
    fn energy_is_conserved() {
        let j = Job::new("lj_md", params(1000, 0.005)).unwrap();
        let r = j.run_cpu(2, &mut |_, _| {}).unwrap();
        let drift = r.summary["energy_drift"].as_f64().unwrap();
        assert!(drift < DRIFT_BOUND, "drift {drift} per particle");
        // Dense LJ matter at ρ = 0.8: potential energy per particle around -5.
        let pe = r.summary["e_potential"].as_f64().unwrap();
        assert!((-6.0..-4.0).contains(&pe), "potential energy {pe}");
        // A much larger step must visibly break conservation, or the test proves nothing.
        let bad = Job::new("lj_md", params(100, 0.02)).unwrap();
        let rb = bad.run_cpu(2, &mut |_, _| {}).unwrap();
        assert!(rb.summary["energy_drift"].as_f64().unwrap() > drift);
    }

    #[test]
    fn tolerance_accepts_own_output_and_rejects_perturbed() {
        let j = Job::new("lj_md", params(50, 0.005)).unwrap();
        let r = j.run_cpu(1, &mut |_, _| {}).unwrap();
        assert!(j.equivalent(&r.output, &r.output));
        let mut bad = r.output.clone();
        // Shift the last measurement's potential energy by 0.1 per particle.
        let Job::LjMd(p) = &j else { unreachable!() };
        let at = (8 * p.measurements() - 4) as usize;
        let v = f32::from_le_bytes(bad[at..at + 4].try_into().unwrap()) + 25.6;
        bad[at..at + 4].copy_from_slice(&v.to_le_bytes());
        assert!(!j.equivalent(&r.output, &bad));
        assert!(!j.equivalent(&r.output, &r.output[1..]));
    }

    #[test]
    fn cutoff_beyond_half_box_is_rejected() {
        let mut v = params(10, 0.005);
        v["n"] = json!(8);
        let e = Job::new("lj_md", v).unwrap_err();
        assert_eq!(e.field(), Some("cutoff"));
    }
}
