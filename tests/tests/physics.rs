//! The kernels compute the right physics, not just the same bytes: `ising2d` against Onsager's
//! exact solution, `percolation2d` against the known threshold. (The `lj_md` energy
//! conservation test lives beside the kernel, and on the GPU in `gpu_vs_cpu.rs`.)

use serde_json::json;
use shaders::Job;
use std::f64::consts::PI;

/// Complete elliptic integral of the first kind K(k), by the arithmetic-geometric mean.
fn elliptic_k(k: f64) -> f64 {
    let (mut a, mut b) = (1.0f64, (1.0 - k * k).max(0.0).sqrt());
    for _ in 0..60 {
        let (na, nb) = ((a + b) / 2.0, (a * b).sqrt());
        a = na;
        b = nb;
    }
    PI / (2.0 * a)
}

/// Onsager: internal energy per spin of the infinite 2D Ising model (J = 1, h = 0).
fn onsager_energy(beta: f64) -> f64 {
    let t = (2.0 * beta).tanh();
    let k = 2.0 * (2.0 * beta).sinh() / (2.0 * beta).cosh().powi(2);
    -(1.0 / t) * (1.0 + (2.0 / PI) * (2.0 * t * t - 1.0) * elliptic_k(k))
}

/// Onsager–Yang spontaneous magnetization (zero above the critical temperature).
fn onsager_magnetization(beta: f64) -> f64 {
    let s = (2.0 * beta).sinh();
    if s <= 1.0 {
        0.0
    } else {
        (1.0 - s.powi(-4)).powf(0.125)
    }
}

/// Mean and standard error over independent seeds.
fn over_seeds(seeds: u64, f: impl Fn(u64) -> f64) -> (f64, f64) {
    let xs: Vec<f64> = (0..seeds).map(f).collect();
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

#[test]
fn onsager_formulas_match_known_values() {
    // At criticality the energy per spin is -√2 (approached with a logarithmic slope); in the
    // ground state it is -2.
    let bc = (1.0 + 2f64.sqrt()).ln() / 2.0;
    for b in [bc - 1e-4, bc + 1e-4] {
        assert!(
            (onsager_energy(b) + 2f64.sqrt()).abs() < 5e-3,
            "{}",
            onsager_energy(b)
        );
    }
    assert!((onsager_energy(4.0) + 2.0).abs() < 1e-9);
    assert_eq!(onsager_magnetization(0.3), 0.0);
    assert!((onsager_magnetization(1.0) - 0.99933).abs() < 1e-4);
}

#[test]
fn ising2d_matches_onsager_away_from_criticality() {
    // Far from βc ≈ 0.4407 finite-size corrections at L = 48 are far below the error bars.
    for (beta, check_m) in [(0.25, false), (0.33, false), (0.55, true), (0.7, true)] {
        let run = |seed: u64| {
            let job = Job::new(
                "ising2d",
                json!({"L": 48, "beta": beta, "sweeps": 1500, "thermalize": 500, "seed": seed}),
            )
            .unwrap();
            job.run_cpu(2, &mut |_, _| {}).unwrap().summary
        };
        let summaries: Vec<_> = (0..6).map(run).collect();
        let (e, e_err) = over_seeds(6, |s| summaries[s as usize]["e"].as_f64().unwrap());
        let exact = onsager_energy(beta);
        // Five standard errors, plus 1e-3 for what finite L and runs leave.
        let tol = 5.0 * e_err + 1e-3;
        assert!(
            (e - exact).abs() < tol,
            "β={beta}: e = {e} ± {e_err}, Onsager {exact}"
        );
        if check_m {
            let (m, m_err) = over_seeds(6, |s| summaries[s as usize]["abs_m"].as_f64().unwrap());
            let exact = onsager_magnetization(beta);
            assert!(
                (m - exact).abs() < 5.0 * m_err + 2e-3,
                "β={beta}: |m| = {m} ± {m_err}, exact {exact}"
            );
        }
    }
}

#[test]
fn percolation_spanning_rises_through_the_threshold() {
    // Site percolation on the square lattice: p_c = 0.592746 (Newman & Ziff 2000).
    let fraction = |p: f64| {
        let job = Job::new(
            "percolation2d",
            json!({"L": 96, "p": p, "samples": 150, "seed": 42}),
        )
        .unwrap();
        job.run_cpu(1, &mut |_, _| {}).unwrap().summary["spanning_fraction"]
            .as_f64()
            .unwrap()
    };
    let (lo, mid, hi) = (fraction(0.55), fraction(0.5927), fraction(0.65));
    assert!(lo < 0.15, "p=0.55 spans {lo}");
    assert!(hi > 0.85, "p=0.65 spans {hi}");
    assert!(lo < mid && mid < hi, "{lo} {mid} {hi}");
    assert!((0.25..0.75).contains(&mid), "at p_c {mid}");
}
