//! `cargo xtask bench kernels`: one JSON line per kernel and backend, all measured in the same
//! run by the release `qg-run`: the CPU reference on 1 thread and on all cores, and the native
//! GPU runner, with the ratios.

use anyhow::{Result, bail};
use serde_json::{Value, json};

pub fn run(args: &[&str]) -> Result<()> {
    match args.first().copied() {
        Some("kernels") => kernels(&args[1..]),
        Some("coordinator") => coordinator(&args[1..]),
        Some("browser") => browser(),
        Some("sabotage") => sabotage(&args[1..]),
        other => bail!(
            "usage: cargo xtask bench kernels [--bandwidth-gbs N] | coordinator [--sizes 10000,100000,1000000] | browser | sabotage [--units N] [--volunteers N] [--population a,b] [--strategy a,b] [--target-error 1e-3,1e-4] [--seed N] (got {other:?})"
        ),
    }
}

fn kernels(args: &[&str]) -> Result<()> {
    crate::deps::ensure(&crate::deps::GPU)?;
    // Peak memory bandwidth of the GPU, if known, for the ising2d bound (one u32 per spin:
    // about 12 bytes moved per flip: the spin, and its share of four neighbour reads and a write).
    let bandwidth_gbs: Option<f64> = args
        .iter()
        .position(|a| *a == "--bandwidth-gbs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cases = [
        (
            "ising2d",
            json!({"L": 512, "beta": 0.44, "sweeps": 100, "seed": 1}),
            "spin_updates_per_s",
        ),
        (
            "percolation2d",
            json!({"L": 512, "p": 0.5927, "samples": 4, "seed": 1}),
            "site_visits_per_s",
        ),
        (
            "lj_md",
            json!({"n": 2048, "density": 0.8, "temperature": 1.0, "dt": 0.005, "steps": 20, "seed": 1}),
            "pair_interactions_per_s",
        ),
    ];
    for (kernel, params, unit) in cases {
        let cpu1 = crate::qg_run(kernel, &params, "cpu", Some(1))?;
        let cpun = crate::qg_run(kernel, &params, "cpu", Some(cores))?;
        let gpu = crate::qg_run(kernel, &params, "gpu", None)?;
        let rate = |v: &Value| v["rate_per_s"].as_f64().unwrap_or(f64::NAN);
        let (r1, rn, rg) = (rate(&cpu1), rate(&cpun), rate(&gpu));
        for (backend, v, r) in [
            ("cpu-1-thread", &cpu1, r1),
            (&*format!("cpu-{cores}-threads"), &cpun, rn),
        ] {
            println!(
                "{}",
                json!({"bench": "kernels", "kernel": kernel, "backend": backend, unit: r,
                       "elapsed_s": v["elapsed_s"], "params": params})
            );
        }
        let mut line = json!({
            "bench": "kernels", "kernel": kernel, "backend": "gpu", unit: rg,
            "adapter": gpu["adapter"]["name"], "elapsed_s": gpu["elapsed_s"], "params": params,
            "gpu_vs_cpu_1_thread": rg / r1, "gpu_vs_cpu_all_threads": rg / rn,
            "same_digest_as_cpu": gpu["digest"] == cpu1["digest"],
        });
        if kernel == "ising2d" {
            let flips_per_ns = rg / 1e9;
            line["spin_flips_per_ns"] = json!(flips_per_ns);
            if let Some(bw) = bandwidth_gbs {
                let bound = bw / 12.0;
                line["bandwidth_bound_flips_per_ns"] = json!(bound);
                line["fraction_of_bound"] = json!(flips_per_ns / bound);
            }
        }
        println!("{line}");
    }
    Ok(())
}

/// Replicas dispatched and validated per second against the release coordinator with the
/// embedded store, with 10⁴, 10⁵ and 10⁶ units already in the database.
fn coordinator(args: &[&str]) -> Result<()> {
    let sizes: Vec<String> = args
        .iter()
        .position(|a| *a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|| vec!["10000".into(), "100000".into(), "1000000".into()]);
    crate::run(
        "cargo build --release -p coordinator",
        crate::cargo().args(["build", "--release", "-q", "-p", "coordinator"]),
    )?;
    let bin_dir = crate::root().join("target").join("release");
    for units in sizes {
        let status = std::process::Command::new(bin_dir.join("qg-loadgen"))
            .args(["--units", &units, "--coordinator"])
            .arg(bin_dir.join("coordinator"))
            .status()?;
        if !status.success() {
            bail!("qg-loadgen --units {units} failed ({status})");
        }
    }
    Ok(())
}

/// Populations of simulated volunteers under fixed quorum 2, BOINC adaptive replication and
/// credibility-based replication (`coordinator/src/sim.rs`): one JSON line per run.
fn sabotage(args: &[&str]) -> Result<()> {
    crate::run(
        "cargo build --release -p coordinator --bin qg-sabotage",
        crate::cargo().args([
            "build",
            "--release",
            "-q",
            "-p",
            "coordinator",
            "--bin",
            "qg-sabotage",
        ]),
    )?;
    let bin = crate::root()
        .join("target")
        .join("release")
        .join("qg-sabotage");
    let status = std::process::Command::new(bin).args(args).status()?;
    if !status.success() {
        bail!("qg-sabotage failed ({status})");
    }
    Ok(())
}

/// The same ising2d unit in headless Chromium (WebGPU), native wgpu and the CPU reference,
/// and page open → first unit computing.
fn browser() -> Result<()> {
    let needs: Vec<&crate::deps::Need> = crate::deps::GPU
        .iter()
        .chain(&crate::deps::BROWSER)
        .collect();
    crate::deps::ensure_all(&needs)?;
    crate::web::build()?;
    let mut c = crate::cargo();
    c.args([
        "run",
        "-q",
        "--release",
        "-p",
        "qg-tests",
        "--bin",
        "qg-browser-bench",
    ]);
    crate::run("qg-browser-bench", crate::gpu_env(&mut c))
}
