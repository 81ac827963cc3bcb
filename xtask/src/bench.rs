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
            "usage: cargo xtask bench kernels [--bandwidth-gbs N] [--ising-l N] [--sweeps N] [--repeat N] | coordinator [--sizes 10000,100000,1000000] | browser | sabotage [--units N] [--volunteers N] [--population a,b] [--strategy a,b] [--target-error 1e-3,1e-4] [--seed N] (got {other:?})"
        ),
    }
}

/// The value after `flag` in `args`, parsed.
fn flag<T: std::str::FromStr>(args: &[&str], flag: &str) -> Result<Option<T>> {
    match args.iter().position(|a| *a == flag) {
        None => Ok(None),
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) => Ok(Some(v)),
            None => bail!("{flag} needs a number"),
        },
    }
}

/// The fastest of `n` native GPU runs.
fn fastest(kernel: &str, params: &Value, n: usize) -> Result<Value> {
    let mut best: Option<Value> = None;
    for _ in 0..n {
        let v = crate::qg_run(kernel, params, "gpu", None)?;
        let t = |v: &Value| v["elapsed_s"].as_f64().unwrap_or(f64::INFINITY);
        if best.as_ref().is_none_or(|b| t(&v) < t(b)) {
            best = Some(v);
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no run"))
}

/// Per kernel: the CPU reference on 1 thread and on all cores, and the native GPU end to end
/// (setup excluded; checkpoint digests, final readback and output included) and kernel-only
/// (the marginal cost of a run twice as long, with as many checkpoints and measurements:
/// what the device does per step, without the fixed costs).
fn kernels(args: &[&str]) -> Result<()> {
    crate::deps::ensure(&crate::deps::GPU)?;
    // Peak memory bandwidth of the GPU, if known, for the ising2d bound: one byte per spin, so
    // about 3 bytes moved per flip (the spin read and written, its share of neighbour reads).
    let bandwidth_gbs: Option<f64> = flag(args, "--bandwidth-gbs")?;
    let l: u32 = flag(args, "--ising-l")?.unwrap_or(1024);
    let sweeps: u64 = flag(args, "--sweeps")?.unwrap_or(100);
    let repeat: usize = flag(args, "--repeat")?.unwrap_or(3).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // (kernel, params, the field that scales the run, rate unit). ising2d at default
    // checkpoints (16) and one measurement.
    let cases = [
        (
            "ising2d",
            json!({"L": l, "beta": 0.44, "sweeps": sweeps, "measure_every": sweeps, "seed": 1}),
            "sweeps",
            "spin_updates_per_s",
        ),
        (
            "percolation2d",
            json!({"L": 1024, "p": 0.5927, "samples": 16, "seed": 1}),
            "samples",
            "site_visits_per_s",
        ),
        (
            "lj_md",
            json!({"n": 2048, "density": 0.8, "temperature": 1.0, "dt": 0.005, "steps": 20, "seed": 1}),
            "steps",
            "pair_interactions_per_s",
        ),
    ];
    for (kernel, params, scale, unit) in cases {
        let cpu1 = crate::qg_run(kernel, &params, "cpu", Some(1))?;
        let cpun = crate::qg_run(kernel, &params, "cpu", Some(cores))?;
        // A first run warms the driver's shader cache, so the timed runs compile alike; each
        // figure is the fastest of `repeat` runs (the marginal cost is a small difference of
        // two noisy times).
        crate::qg_run(kernel, &params, "gpu", None)?;
        let gpu = fastest(kernel, &params, repeat)?;
        let mut longer = params.clone();
        longer[scale] = json!(2 * params[scale].as_u64().unwrap_or(1));
        if kernel == "ising2d" {
            longer["measure_every"] = longer["sweeps"].clone();
        }
        let gpu2 = fastest(kernel, &longer, repeat)?;
        let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let rate = |v: &Value| num(v, "rate_per_s");
        let (r1, rn, rg) = (rate(&cpu1), rate(&cpun), rate(&gpu));
        let kernel_only = (num(&gpu2, "work") - num(&gpu, "work"))
            / (num(&gpu2, "elapsed_s") - num(&gpu, "elapsed_s"));
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
            "kernel_only": {unit: kernel_only, "method": "marginal cost of a run twice as long"},
            "end_to_end_vs_kernel_only": rg / kernel_only,
            "adapter": gpu["adapter"]["name"], "elapsed_s": gpu["elapsed_s"], "params": params,
            "checkpoints": gpu["checkpoints"].as_array().map_or(0, Vec::len),
            "gpu_vs_cpu_1_thread": rg / r1, "gpu_vs_cpu_all_threads": rg / rn,
        });
        if kernel == "lj_md" {
            // A float kernel: compared within its declared tolerance (tests/gpu_vs_cpu.rs),
            // never by digest.
            line["comparison"] = json!("tolerance");
        } else {
            line["same_digest_as_cpu"] = json!(gpu["digest"] == cpu1["digest"]);
            line["same_checkpoints_as_cpu"] = json!(gpu["checkpoints"] == cpu1["checkpoints"]);
        }
        if kernel == "ising2d" {
            line["spin_flips_per_ns"] = json!(rg / 1e9);
            line["kernel_only"]["spin_flips_per_ns"] = json!(kernel_only / 1e9);
            if let Some(bw) = bandwidth_gbs {
                let bound = bw / 3.0;
                line["bandwidth_bound_flips_per_ns"] = json!(bound);
                line["fraction_of_bound"] = json!(rg / 1e9 / bound);
                line["kernel_only"]["fraction_of_bound"] = json!(kernel_only / 1e9 / bound);
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
